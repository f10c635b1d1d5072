"""``SimVQ``: a frozen codebook times one learned linear map (Zhu et al., "Addressing Representation Collapse in
Vector Quantized Models with One Linear Layer", arXiv 2411.02038).

The stored codebook ``C`` ``[K, D]`` is drawn once from N(0, 1/D) (``codebook_init="gaussian"``: std
``D ** -0.5``, the authors' choice) and frozen; the effective codebook is ``C W^T + b`` with ``W``, ``b`` a learned
``nn.Linear(D, D)`` (with bias, as the authors' code). Every code moves whenever ``W`` moves, so no code is left
behind by gradient sparsity, the paper's explanation of why utilization stays near 100% at 262k codes.
``train_codebook=True`` also trains ``C`` (the paper's Remark 4.1 ablation). ``codebook_init="uniform"`` draws
``C`` from U(-sqrt(3/D), sqrt(3/D)) instead, the paper's Table 3 row "Uniform" (the paper gives no range; this
one has the Gaussian's variance ``1/D``, so the two differ only in the distribution's shape).

Losses as the authors' ``legacy=False``: ``codebook = |sg[z] - q|^2`` (it reaches ``W``, and ``C`` when trained),
``commitment = |z - sg[q]|^2`` weighted by ``beta``. Matching is squared L2 against the effective codebook.
The paper's "commitment coefficient" (Table 5: 1.0 for images, 1000 for audio) is the authors' ``commit_weight``,
which multiplies *both* terms: coefficient ``c`` is ``codebook_weight=c, beta=0.25 * c`` here.

Deviation from the authors' code: their ``get_codebook_entry`` decodes with the raw ``C``; ``decode`` here uses
the effective codebook, as the contract requires.

Metrics for the paper's Fig. 4 (how much of the space the codebook spans), from the singular values ``s`` of ``W``:

* ``w_rank``: how many ``s_i`` exceed ``RANK_RTOL = 1e-2`` of the largest (a relative threshold, so it can fall
  when directions shrink; the numerical rank at machine precision, reported before, stayed at ``D`` in every run);
* ``w_effective_rank``: ``exp(H(s / sum(s)))``, the entropy effective rank (Roy & Vetterli, "The effective rank:
  a measure of effective dimensionality", EUSIPCO 2007): ``D`` for equal singular values, falling smoothly as
  the spectrum concentrates;
* ``w_frobenius``: ``|W|_F``.

``w_frobenius`` is one ``D x D`` reduction and comes fresh with every forward. The two ranks need an SVD (and on
CUDA ``svdvals`` synchronizes with the host), so the forward computes them lazily: on the first training forward
and every ``stats_every``-th after it (every 50th by default, the trainer's default ``log_every``: without
pretraining steps each logged row then holds its own step's ranks, otherwise ranks at most 49 steps old), and on
an eval forward when a training forward ran since the last SVD (an evaluation loop takes one); other forwards
return the last values. The metrics are present on every eager forward, so logs and averages see no gaps.
``transform_stats()`` computes all three now.
Compiled graphs (``torch.compile``) return ``w_frobenius`` only: the lazy rule is Python state, which a graph
would guard on and recompile for.
"""

from __future__ import annotations

from typing import Any, Literal

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

CodebookInit = Literal["gaussian", "uniform"]
CODEBOOK_INITS = ("gaussian", "uniform")

RANK_RTOL = 1e-2
"""``w_rank`` counts the singular values of ``W`` above this share of the largest."""


def transform_ranks(singular: torch.Tensor) -> dict[str, torch.Tensor]:
    """``w_rank`` (singular values above ``RANK_RTOL`` of the largest) and ``w_effective_rank`` (Roy & Vetterli's
    ``exp`` of the entropy of ``s / sum(s)``) of the singular values ``s`` ``[D]`` (both 0 for ``s = 0``); no
    host sync."""
    singular = singular.float()
    total = singular.sum()
    p = singular / total.clamp(min=torch.finfo(singular.dtype).tiny)
    entropy = -(p * torch.log(p.clamp(min=torch.finfo(p.dtype).tiny))).sum()
    return {
        "w_rank": (singular > RANK_RTOL * singular.max()).sum().float(),
        "w_effective_rank": torch.exp(entropy) * (total > 0),
    }


@register_quantizer("simvq")
class SimVQ(SingleCodebookQuantizer):
    """SimVQ: ``[..., D]`` -> codes ``[..., 1]`` in ``[0, K)`` against the effective codebook ``C W^T + b``.

    Args:
        dim: D.
        codebook_size: K (the paper runs up to 262,144; the search is chunked, so memory stays bounded).
        beta: weight of ``commitment``.
        gradient: ``"ste"`` or ``"rotation"`` (the rotation trick); the value is the same.
        codebook_weight: weight of ``codebook`` (the loss that trains ``W``).
        train_codebook: also train ``C`` (Remark 4.1); by default ``C`` is a frozen buffer.
        codebook_init: how ``C`` is drawn: ``"gaussian"`` N(0, 1/D) or ``"uniform"`` U(±sqrt(3/D)) (Table 3).
        stats_every: the SVD behind ``w_rank`` / ``w_effective_rank`` runs on every ``stats_every``-th training
            forward (and the first); see the module docstring. 1 computes them on every forward.
        layout, allow_nonfinite: see ``Quantizer``.
    """

    codebook: torch.Tensor

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        *,
        beta: float = 0.25,
        codebook_weight: float = 1.0,
        gradient: Gradient = "ste",
        train_codebook: bool = False,
        codebook_init: CodebookInit = "gaussian",
        stats_every: int = 50,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.codebook_size = check_positive_int("codebook_size", codebook_size)
        self.beta = check_range("beta", beta, 0.0, float("inf"))
        self.codebook_weight = check_range("codebook_weight", codebook_weight, 0.0, float("inf"))
        self.train_codebook = bool(train_codebook)
        self.gradient: Gradient = check_choice("gradient", gradient, GRADIENTS)  # type: ignore[assignment]
        self.codebook_init: CodebookInit = check_choice("codebook_init", codebook_init, CODEBOOK_INITS)  # type: ignore[assignment]
        if self.codebook_init == "gaussian":
            initial = torch.randn(codebook_size, dim) * dim**-0.5
        else:  # the Gaussian's variance 1/D: U(-a, a) has variance a^2 / 3
            initial = (torch.rand(codebook_size, dim) * 2 - 1) * (3 / dim) ** 0.5
        if self.train_codebook:
            self.codebook = nn.Parameter(initial)
        else:
            self.register_buffer("codebook", initial)
        self.transform = nn.Linear(dim, dim)
        self.stats_every = check_positive_int("stats_every", stats_every)
        # The lazy ranks (see the module docstring): host-side state, not in the state dict.
        self._ranks: dict[str, torch.Tensor] | None = None
        self._training_forwards = 0
        self._ranks_stale = True

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.beta, "codebook": self.codebook_weight}

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
        """``w_rank``, ``w_effective_rank`` and ``w_frobenius`` of ``W`` now (detached; one SVD, which on CUDA
        synchronizes): how much of the space the codebook spans."""
        w = self.transform.weight.detach().float()
        return {**transform_ranks(torch.linalg.svdvals(w)), "w_frobenius": torch.linalg.norm(w)}

    def _diagnostics(self) -> dict[str, torch.Tensor]:
        """The forward's metrics: ``w_frobenius`` fresh, the ranks by the lazy rule of the module docstring."""
        w = self.transform.weight.detach().float()
        frobenius = torch.linalg.norm(w)
        if torch.compiler.is_compiling():
            return {"w_frobenius": frobenius}
        if self.training:
            self._training_forwards += 1
            due = self._training_forwards % self.stats_every == 0
        else:
            due = self._ranks_stale
        if due or self._ranks is None or self._ranks["w_rank"].device != w.device:
            self._ranks = transform_ranks(torch.linalg.svdvals(w))
            self._ranks_stale = False
        if self.training:  # the optimizer may move W after this forward
            self._ranks_stale = True
        return {**self._ranks, "w_frobenius": frobenius}

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ranks, self._ranks_stale = None, True

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        effective = self.effective_codebook
        codes = nearest_code(z.detach(), effective.detach()).codes
        q = F.embedding(codes, effective)
        losses = vq_losses(z, q)
        return QuantizerOutput(
            quantized=estimate(q, z, self.gradient),
            codes=codes[:, None],
            losses=losses,
            metrics=self._diagnostics(),
        )

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return nearest_code(z, self.effective_codebook).codes[:, None]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes[:, 0], self.effective_codebook)
