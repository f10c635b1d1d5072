"""``VQ``: the single-codebook vector quantizer and its classic variants.

* VQ-VAE (van den Oord et al., arXiv 1711.00937): learnable codebook, ``codebook`` + ``beta * commitment``.
* EMA-VQ (same paper, appendix; Razavi et al., VQ-VAE-2, arXiv 1906.00446): ``update="ema"``; the codebook
  follows EMA statistics and only ``commitment`` is returned.
* k-means init on the first batch (SoundStream, arXiv 2107.03312; Encodec): ``init="kmeans"``.
* Dead-code restart (Jukebox / Encodec): ``restart="dead"``. CVQ anchors (Zheng & Vedaldi 2023): ``restart="anchor"``
  (the registry's ``cvq`` preset uses cosine matching with it, as the authors' experiments do).
* Factorized, l2-normalized low-dimensional codes (VQGAN-FC of ViT-VQGAN, Yu et al., arXiv 2110.04627):
  ``codebook_dim < dim`` with ``l2_normalize=True``; in and out projections are learned linear maps and
  decoding applies the out projection (the effective codebook is ``out_proj(codes)``).

Shapes: input ``[..., D]``; codes ``[..., 1]`` in ``[0, K)``.

Loss convention (VQ-VAE): ``codebook = |sg[z] - e|^2`` and ``commitment = |z - sg[e]|^2``, both means over
elements; ``beta`` weights ``commitment`` (``loss_weights``). With ``distance="cosine"`` the lookup compares
directions but the returned code is the raw (unnormalized) vector, as in CVQ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import check_positive_int, check_range
from vqkit.quantizers.base import SingleCodebookQuantizer, straight_through
from vqkit.quantizers.codebook import Codebook, CodebookOptions, Init, Restart, Update
from vqkit.registry import register_quantizer
from vqkit.types import Distance, Layout, QuantizerOutput


@register_quantizer("vq")
class VQ(SingleCodebookQuantizer):
    """Vector quantizer with one codebook of ``codebook_size`` codes.

    Args:
        dim: D.
        codebook_size: K.
        codebook_dim: dimension of the codes; ``None`` = ``dim``. Smaller values add learned in/out projections.
        update: ``"grad"`` (codebook loss, optimizer) or ``"ema"`` (moving averages).
        beta: weight of the commitment loss.
        decay, eps: EMA decay and Laplace smoothing (EMA statistics and usage tracking).
        init: ``"uniform"``, ``"gaussian"`` or ``"kmeans"`` (first training batch, k-means++ seeding).
        kmeans_iters, kmeans_seed: Lloyd iterations and seeding generator for ``init="kmeans"``.
        distance: ``"l2"`` or ``"cosine"`` matching.
        l2_normalize: normalize inputs and codes (VQGAN-FC); matching is then l2 on the unit sphere.
        restart: ``"none"``, ``"dead"`` (restart codes whose EMA count < ``restart_threshold``) or ``"anchor"`` (CVQ).
        restart_threshold: see ``restart``.
        layout, allow_nonfinite: see ``Quantizer``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        *,
        codebook_dim: int | None = None,
        update: Update = "grad",
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        init: Init = "uniform",
        kmeans_iters: int = 10,
        kmeans_seed: int = 0,
        distance: Distance = "l2",
        l2_normalize: bool = False,
        restart: Restart = "none",
        restart_threshold: float = 1.0,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.num_codes = check_positive_int("codebook_size", codebook_size)
        code_dim = dim if codebook_dim is None else check_positive_int("codebook_dim", codebook_dim)
        self.beta = check_range("beta", beta, 0.0, float("inf"))
        self.l2_normalize = bool(l2_normalize)
        self.project_in: nn.Module = nn.Identity() if code_dim == dim else nn.Linear(dim, code_dim)
        self.project_out: nn.Module = nn.Identity() if code_dim == dim else nn.Linear(code_dim, dim)
        options = CodebookOptions.from_arguments(locals())  # this signature's Codebook arguments, by name
        self.codebook = Codebook.from_options(codebook_size, code_dim, options, normalize=self.l2_normalize)

    @property
    def num_codebook_parameters(self) -> int:
        projections = sum(p.numel() for m in (self.project_in, self.project_out) for p in m.parameters())
        return self.codebook.weight.numel() + projections

    @property
    def effective_codebook(self) -> torch.Tensor:
        """``[K, D]``: what each code decodes to (after the out projection)."""
        return self.project_out(self.codebook.vectors)

    def _to_code_space(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project_in(z)
        return F.normalize(h, dim=-1) if self.l2_normalize else h

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        h = self._to_code_space(z)
        codes, q, losses = self.codebook.quantize(h)
        return QuantizerOutput(
            quantized=self.project_out(straight_through(q, h)), codes=codes[:, None], losses=losses
        )

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """k-means (this codebook's ``kmeans_iters``, ``kmeans_seed``, distance) on ``vectors`` ``[N, D]`` mapped
        to code space; marks the codebook initialized. Gathers over ranks like the first-batch init."""
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors: expected [N, {self.dim}], got {tuple(vectors.shape)}")
        self.codebook.initialize_from(self._to_code_space(vectors.to(self.compute_dtype)), force=True)

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return self.codebook.search(self._to_code_space(z))[:, None]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.codebook.lookup(codes[:, 0]))
