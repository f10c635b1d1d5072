"""Named configurations of existing quantizers (each a paper's setting), registered next to the classes."""

from __future__ import annotations

from vqkit.quantizers.vq import VQ
from vqkit.registry import register_preset

register_preset(
    "ema_vq",
    VQ,
    "EMA codebook (VQ-VAE appendix, VQ-VAE-2): decay 0.99, Laplace smoothing, commitment only",
    update="ema",
)
register_preset(
    "cvq",
    VQ,
    "CVQ-VAE online clustered codebook (Zheng & Vedaldi 2023): cosine lookup, closest anchors",
    distance="cosine",
    restart="anchor",
)
register_preset(
    "factorized_vq",
    VQ,
    "VQGAN-FC (ViT-VQGAN): 8-dim l2-normalized codes with learned projections",
    codebook_dim=8,
    l2_normalize=True,
)
