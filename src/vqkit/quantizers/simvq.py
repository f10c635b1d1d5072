"""``SimVQ``: a frozen codebook times one learned linear map (Zhu et al., "Addressing Representation Collapse in
Vector Quantized Models with One Linear Layer", arXiv 2411.02038).

The stored codebook ``C`` ``[K, D]`` is drawn once from N(0, 1/D) (std ``D ** -0.5``, the authors' choice) and
frozen; the effective codebook is ``C W^T + b`` with ``W``, ``b`` a learned ``nn.Linear(D, D)`` (with bias, as
the authors' code). Every code moves whenever ``W`` moves, so no code is left behind by gradient sparsity, the
paper's explanation of why utilization stays near 100% at 262k codes. ``train_codebook=True`` also trains ``C``
(the paper's Remark 4.1 ablation).

Losses as the authors' ``legacy=False``: ``codebook = |sg[z] - q|^2`` (it reaches ``W``, and ``C`` when trained),
``commitment = |z - sg[q]|^2`` weighted by ``beta``. Matching is squared L2 against the effective codebook.

Deviation from the authors' code: their ``get_codebook_entry`` decodes with the raw ``C``; ``decode`` here uses
the effective codebook, as the contract requires.

Metrics for the paper's Fig. 4: ``w_rank`` (numerical rank of ``W``) and ``w_frobenius`` (``|W|_F``), each step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import check_choice, check_positive_int, check_range
from vqkit.functional.estimators import GRADIENTS, Gradient, estimate
from vqkit.functional.search import nearest_code
from vqkit.quantizers.base import SingleCodebookQuantizer
from vqkit.quantizers.codebook import vq_losses
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput


@register_quantizer("simvq")
class SimVQ(SingleCodebookQuantizer):
    """SimVQ: ``[..., D]`` -> codes ``[..., 1]`` in ``[0, K)`` against the effective codebook ``C W^T + b``.

    Args:
        dim: D.
        codebook_size: K (the paper runs up to 262,144; the search is chunked, so memory stays bounded).
        beta: weight of ``commitment``.
        gradient: ``"ste"`` or ``"rotation"`` (the rotation trick); the value is the same.
        train_codebook: also train ``C`` (Remark 4.1); by default ``C`` is a frozen buffer.
        layout, allow_nonfinite: see ``Quantizer``.
    """

    codebook: torch.Tensor

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        *,
        beta: float = 0.25,
        gradient: Gradient = "ste",
        train_codebook: bool = False,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.codebook_size = check_positive_int("codebook_size", codebook_size)
        self.beta = check_range("beta", beta, 0.0, float("inf"))
        self.train_codebook = bool(train_codebook)
        self.gradient: Gradient = check_choice("gradient", gradient, GRADIENTS)  # type: ignore[assignment]
        initial = torch.randn(codebook_size, dim) * dim**-0.5
        if self.train_codebook:
            self.codebook = nn.Parameter(initial)
        else:
            self.register_buffer("codebook", initial)
        self.transform = nn.Linear(dim, dim)

    @property
    def num_codebook_parameters(self) -> int:
        return self.codebook.numel() + sum(p.numel() for p in self.transform.parameters())

    def search_cost(self) -> tuple[int, int] | None:
        return self.codebook_size * self.dim, self.codebook_size

    @property
    def effective_codebook(self) -> torch.Tensor:
        """``[K, D]``: ``C W^T + b``, what each code decodes to."""
        return self.transform(self.codebook)

    def transform_stats(self) -> dict[str, torch.Tensor]:
        """Rank and Frobenius norm of ``W`` (detached): how much of the space the codebook spans."""
        w = self.transform.weight.detach().float()
        singular = torch.linalg.svdvals(w)
        tol = singular.max() * max(w.shape) * torch.finfo(w.dtype).eps
        return {"w_rank": (singular > tol).sum().float(), "w_frobenius": torch.linalg.norm(w)}

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        effective = self.effective_codebook
        codes = nearest_code(z.detach(), effective.detach()).codes
        q = F.embedding(codes, effective)
        losses = vq_losses(z, q)
        return QuantizerOutput(
            quantized=estimate(q, z, self.gradient),
            codes=codes[:, None],
            losses=losses,
            metrics=self.transform_stats(),
        )

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return nearest_code(z, self.effective_codebook).codes[:, None]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes[:, 0], self.effective_codebook)
