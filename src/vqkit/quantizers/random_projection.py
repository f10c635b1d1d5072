"""``RandomProjectionQuantizer``: a frozen random projection and a frozen random codebook (BEST-RQ; Chiu et al.,
"Self-supervised Learning with Random-projection Quantizer for Speech Recognition", ICML 2022, arXiv 2202.01855).

A vector ``z`` ``[D]`` is projected by a frozen Xavier-initialized matrix ``P`` ``[d, D]`` and l2-normalized; its
code is the nearest of ``K`` frozen, l2-normalized standard-normal codes ``c_k`` ``[d]``. Nothing is learned and
there is no loss: the codes are fixed targets for self-supervised pre-training (BEST-RQ predicts them for masked
speech frames), and a bench row measures how much such untrained codes keep.

Deviations, each deliberate:

* BEST-RQ normalizes the input features to zero mean and unit variance first; that belongs to the model that
  feeds the quantizer (a normalization layer), not to the quantizer.
* The contract needs ``decode`` to return a vector of the input space. The paper has no decoder; here code ``k``
  decodes to ``P^+ c_k`` (``P^+`` the pseudo-inverse, computed once), the least-squares preimage of the code, and
  ``quantized`` is that value with the straight-through gradient.
* ``P`` and the codebook are drawn from a generator seeded with ``seed``, so the config rebuilds them exactly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vqkit._validate import check_int, check_positive_int
from vqkit.functional.estimators import straight_through
from vqkit.functional.search import nearest_code
from vqkit.quantizers.base import SingleCodebookQuantizer
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput


@register_quantizer("random_projection")
class RandomProjectionQuantizer(SingleCodebookQuantizer):
    """BEST-RQ's quantizer: ``[..., D]`` -> codes ``[..., 1]`` in ``[0, K)``, nothing trained.

    Args:
        dim: D.
        codebook_size: K (BEST-RQ: 8,192).
        codebook_dim: d, the projected dimension (BEST-RQ: 16).
        seed: seed of the frozen projection and codebook.
        layout, allow_nonfinite: see ``Quantizer``.
    """

    projection: torch.Tensor
    codebook: torch.Tensor
    preimages: torch.Tensor

    def __init__(
        self,
        dim: int,
        codebook_size: int = 8192,
        codebook_dim: int = 16,
        *,
        seed: int = 0,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.codebook_size = check_positive_int("codebook_size", codebook_size)
        self.codebook_dim = check_positive_int("codebook_dim", codebook_dim)
        self.seed = check_int("seed", seed, minimum=0)
        generator = torch.Generator().manual_seed(self.seed)
        bound = (6.0 / (dim + codebook_dim)) ** 0.5  # Xavier uniform
        projection = (torch.rand(codebook_dim, dim, generator=generator) * 2.0 - 1.0) * bound
        codebook = F.normalize(torch.randn(codebook_size, codebook_dim, generator=generator), dim=-1)
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", codebook)
        # Derived, so not saved: every code's least-squares preimage in the input space, [K, D].
        self.register_buffer("preimages", codebook @ torch.linalg.pinv(projection).T, persistent=False)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {}  # no loss: nothing is trained

    @property
    def num_codebook_parameters(self) -> int:
        return self.projection.numel() + self.codebook.numel()

    def search_cost(self) -> tuple[int, int] | None:
        return self.codebook_size * self.codebook_dim + self.codebook_dim * self.dim, self.codebook_size

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        with torch.no_grad():  # the preimages follow the loaded projection and codebook
            self.preimages.copy_(self.codebook @ torch.linalg.pinv(self.projection).T)

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        h = F.normalize(z @ self.projection.T, dim=-1)
        return nearest_code(h, self.codebook).codes[:, None]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes[:, 0], self.preimages)

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        codes = self._encode(z.detach())
        return QuantizerOutput(quantized=straight_through(self._decode(codes), z, fresh=True), codes=codes)
