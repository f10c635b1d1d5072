"""Named configurations of existing quantizers (each a paper's setting), registered next to the classes.

Two kinds. *Methods* that papers present as their own (``ema_vq``, ``cvq``, ``factorized_vq``) are compared in
``methods: all`` benches like any class. *Paper recipes* (``PAPER_RECIPES``: ``ivq_paper``, ``simvq_paper``,
``looc_paper``, ``collapse_baseline``) pin a paper's own settings of a class already in that sweep, so that a
bench can put the paper's variant beside vqkit's defaults by name (``fixed:`` entries); they are not new methods.

* ``ivq_paper``: the IVQ authors' audio recipe (seed-impls.md §5a; the paper's Table 1 audio models): yin-yang
  4 x 2 of six lines, raw dot-product logits without temperature, no codebook term (the codebooks learn only
  through the structure terms), the zong flip of their code, the structure terms on level 0. Their quantizer
  returns ``mean([4 level commitments, gua, cuozong])``; vqkit averages the commitments over the levels, so the
  same weights are ``beta = 4/6`` and ``1/6`` on ``hierarchy`` and on each relation term (the issue's "weights
  1, beta 1", rescaled by the authors' mean over the six penalties).
* ``simvq_paper``: SimVQ's image recipe: a frozen Gaussian ``C`` (Table 3, best row: Gaussian, not trainable),
  commitment coefficient 1.0 (Table 5, image), ``beta = 0.25`` inside it (the authors' ``legacy=False``),
  1,024 codes (the released config). The audio coefficient of Table 5 (1000) is ``codebook_weight=1000,
  beta=250`` against the authors' mel/GAN loss scale; it is not a preset, since vqkit's reconstruction losses
  have another scale.
* ``looc_paper``: LooC's full method (Tables 1-2, 6): ``K x d* = 256 x 4``, extrapolation-by-interpolation at
  ``β = 2`` on image maps, cosine matching, CVQ anchor update, ``μ = 0.25``; the paper's reading of the split
  (``split="unshuffle"`` is the authors' code). At ``β = 2`` a vector costs 4x the codes of ``β = 1``.
* ``collapse_baseline``: the collapse study's baseline VQ-VAE (section 4, implementation details; the paper has
  no tables): one codebook of 128 tokens k-means-initialized on the first training batch, i.e. on the
  *untrained* encoder's outputs, then an EMA codebook (decay 0.9, the synthetic setting; CIFAR-10 uses 0.99),
  ``beta = 0.25``. Run it without ``train.pretrain_epochs`` (with them the trainer re-initializes the codebook
  from the pretrained encoder: the paper's fix, not its baseline). The paper's "token size" is the dimension of a
  token (1 for its 2-D data, 4 for 8-D, 32 on CIFAR-10): here one code per latent vector with codes of the
  latent's full dimension, so token size 1 is the model's ``latent_dim=1``, which a quantizer cannot set.
"""

from __future__ import annotations

from vqkit.quantizers.ivq import IVQ
from vqkit.quantizers.looc import LooC
from vqkit.quantizers.simvq import SimVQ
from vqkit.quantizers.vq import VQ
from vqkit.registry import register_preset

PAPER_RECIPES = ("ivq_paper", "simvq_paper", "looc_paper", "collapse_baseline")
"""The presets that pin a paper's own settings of a class (module docstring)."""

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
register_preset(
    "ivq_paper",
    IVQ,
    "IVQ authors' audio recipe (IVQ paper Table 1 audio models; their core_vq_yi.py): yin-yang 4x2, dot-product "
    "logits at temperature 1, no codebook term, the six penalties averaged (beta 4/6, structure 1/6)",
    levels="yin-yang",
    lines=6,
    codebooks="shared",
    beta=4 / 6,
    codebook_weight=0.0,
    hierarchy_weight=1 / 6,
    relation_weight=1 / 6,
    relation_terms=("zong", "cuo", "cuozong"),
    relation_levels=(0,),
    similarity="dot",
    temperature=1.0,
    zong_flip="features",
    init="kmeans",
    kmeans_iters=5,
)
register_preset(
    "simvq_paper",
    SimVQ,
    "SimVQ image recipe (SimVQ paper Table 3 best row: frozen Gaussian codebook; Table 5: commitment "
    "coefficient 1.0 with beta 0.25)",
    codebook_size=1024,
    beta=0.25,
    codebook_weight=1.0,
    codebook_init="gaussian",
    train_codebook=False,
)
register_preset(
    "looc_paper",
    LooC,
    "LooC full method (LooC paper Tables 1-2 and 6): 256x4 shared codebook, extrapolation-by-interpolation "
    "beta=2 on image maps, cosine matching, CVQ anchors, U(-1/K, 1/K) init, mu=0.25",
    codebook_size=256,
    codebook_dim=4,
    beta=0.25,
    scale=2,
    spatial_dims=2,
    split="channels",
    distance="cosine",
    restart="anchor",
    init="uniform",
)
register_preset(
    "collapse_baseline",
    VQ,
    "Collapse study baseline (Representation Collapsing Problems in VQ, section 4 implementation details; no "
    "tables): 128 tokens, k-means on the untrained encoder's first batch, EMA decay 0.9, beta 0.25",
    codebook_size=128,
    beta=0.25,
    init="kmeans",
    update="ema",
    decay=0.9,
)
