"""Affine re-parameterization of a codebook's codes (Huh, Cheung, Agrawal, Isola, "Straightening Out the
Straight-Through Estimator: Overcoming Optimization Challenges in Vector Quantized Networks", ICML 2023,
arXiv 2305.08842; the authors' ``vqtorch``, ``affine_lr`` / ``AffineTransform``).

The codes a ``VQ`` decodes to are ``c = a * c' + b``, the stored codes ``c'`` ``[K, d]`` scaled and shifted per
dimension by ``a``, ``b`` ``[d]`` that every code shares. A code that no vector chose still moves when ``a`` and
``b`` do, which is how the paper counters the drift of the embedding away from the codebook ("index collapse").

* ``"learned"`` (the authors' library default): ``a = 1 + lr * s``, ``b = lr * t`` with parameters ``s``, ``t``
  initialized at 0 (the identity), trained by the ``codebook`` loss; ``lr`` (``affine_lr``) scales their step
  as the authors' ``lr_scale`` does.
* ``"running"`` (the paper's alternative, vector-quantize-pytorch's ``affine_param``): ``a = sd_z / sd_c'``,
  ``b = mean_z - a * mean_c'``, which gives the codes the per-dimension mean and spread of the inputs.
  ``mean_z``, ``sd_z`` are moving averages of the training batches' statistics (all-reduced over ranks, one
  collective per training step), bias-corrected like Adam's moments so the first batch counts fully without
  a host-side "initialized" check; before any batch ``a = 1``, ``b = 0``.

Deviations: one affine group (``vqtorch`` has ``affine_groups``); in ``"running"`` mode the codebook's moments
are those of the current codes, not a moving average of them (the codes change only by the update this module
follows anyway, and fresh moments keep ``a c' + b`` consistent right after a k-means init or a restart).

The codebook's statistics, k-means and restart rules work on the stored codes ``c'``: ``to_stored`` maps input
vectors there, ``(z - b) / a``, so an EMA or restarted code decodes to the vectors it follows.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vqkit import distributed
from vqkit.distributed import ProcessGroup

AffineMode = Literal["none", "learned", "running"]
AFFINE_MODES: tuple[str, ...] = ("none", "learned", "running")

_MIN_VARIANCE = 1e-5
"""Variances are clamped here before a square root (vector-quantize-pytorch's floor), and ``|a|`` at its root."""


class CodeAffine(nn.Module):
    """The shared per-dimension scale and shift of ``d``-dimensional codes (see the module docstring).

    Args:
        dim: d.
        mode: ``"learned"`` or ``"running"``.
        lr: ``"learned"``: the factor on the parameters (the authors' ``affine_lr``).
        decay: ``"running"``: the moving averages' decay.
    """

    step: torch.Tensor
    input_mean: torch.Tensor
    input_variance: torch.Tensor

    def __init__(self, dim: int, mode: AffineMode, lr: float = 1.0, decay: float = 0.9) -> None:
        super().__init__()
        if mode not in ("learned", "running"):
            raise ValueError(f"mode: expected 'learned' or 'running', got {mode!r}")
        self.mode = mode
        self.lr = float(lr)
        self.decay = float(decay)
        self.process_group: ProcessGroup | None = None
        if mode == "learned":
            self.scale = nn.Parameter(torch.zeros(dim))
            self.shift = nn.Parameter(torch.zeros(dim))
        else:
            self.register_buffer("step", torch.zeros((), dtype=torch.long))
            self.register_buffer("input_mean", torch.zeros(dim))
            self.register_buffer("input_variance", torch.zeros(dim))

    def parameters_ab(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` ``[d]`` each for the stored codes ``vectors`` ``[K, d]`` (differentiable in ``"learned"``)."""
        if self.mode == "learned":
            return 1.0 + self.lr * self.scale, self.lr * self.shift
        codes = vectors.detach()
        code_mean = codes.mean(0)
        code_sd = codes.var(0, unbiased=False).clamp(min=_MIN_VARIANCE).sqrt()
        # Bias-corrected moving averages (1 - decay^t): no host read, exact after the first batch.
        seen = self.step > 0
        correction = 1.0 - self.decay ** self.step.clamp(min=1).to(codes.dtype)
        mean = self.input_mean / correction
        sd = (self.input_variance / correction).clamp(min=_MIN_VARIANCE).sqrt()
        a = torch.where(seen, sd / code_sd, torch.ones_like(sd))
        b = torch.where(seen, mean - a * code_mean, torch.zeros_like(mean))
        return a, b

    def table(self, vectors: torch.Tensor) -> torch.Tensor:
        """What the stored codes ``[K, d]`` decode to: ``a * vectors + b``."""
        a, b = self.parameters_ab(vectors)
        return vectors * a + b

    @torch.no_grad()
    def to_stored(self, z: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Input vectors ``z`` ``[N, d]`` in the stored codes' space, ``(z - b) / a`` (``|a|`` kept off 0)."""
        a, b = self.parameters_ab(vectors)
        floor = torch.full_like(a, _MIN_VARIANCE**0.5)
        a = torch.where(a.abs() < floor, torch.where(a < 0, -floor, floor), a)
        return (z.detach() - b) / a

    @torch.no_grad()
    def observe(self, z: torch.Tensor) -> None:
        """Fold a training batch ``z`` ``[N, d]`` into the input statistics (``"running"``; all-reduced over
        ranks: a rank without vectors joins with zeros). Nothing in ``"learned"`` mode."""
        if self.mode != "running":
            return
        z = z.detach().to(self.input_mean.dtype)
        count = z.new_full((1,), float(z.shape[0]))
        packed = torch.cat([count, z.sum(0), z.square().sum(0)])
        distributed.all_reduce_sum_(packed, self.process_group)
        n, d = packed[0], self.input_mean.shape[0]
        mean = packed[1 : 1 + d] / n.clamp(min=1.0)
        variance = (packed[1 + d :] / n.clamp(min=1.0) - mean.square()).clamp(min=0.0)
        weight = (1.0 - self.decay) * (n > 0).to(z.dtype)  # no vector on any rank: the averages stay
        self.input_mean.mul_(1.0 - weight).add_(weight * mean)
        self.input_variance.mul_(1.0 - weight).add_(weight * variance)
        self.step.add_((n > 0).long())

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode}, lr={self.lr}"
            if self.mode == "learned"
            else f"mode={self.mode}, decay={self.decay}"
        )
