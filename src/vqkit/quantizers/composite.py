"""Composite quantizers built from stages that follow the same contract.

* ``ResidualQuantizer``: stage ``i`` quantizes what the previous stages left, ``r_i = r_{i-1} - q_{i-1}``
  (residual VQ, Juang & Gray 1982; SoundStream, arXiv 2107.03312). Stage outputs are detached when forming the
  next residual and the straight-through estimator is applied once, to the sum (the fix to Encodec issue #25
  that IVQ and vector-quantize-pytorch use): every stage's commitment loss reaches the encoder. An optional
  per-stage input scale lets bounded quantizers (FSQ, LFQ) resolve ever finer residuals (Residual FSQ).
* ``ProductQuantizer``: the vector is split into ``G`` contiguous sub-vectors, each with its own quantizer
  (Jégou et al., "Product quantization for nearest neighbor search", TPAMI 2011).

Codes are ``[..., num_stages]`` / ``[..., num_groups]``; losses are the means of the stages' terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch
from torch import nn

from vqkit._validate import check_choice
from vqkit.quantizers.base import Quantizer, straight_through
from vqkit.types import Layout, QuantizerOutput


def _mean_losses(outputs: Sequence[QuantizerOutput]) -> dict[str, torch.Tensor]:
    names: dict[str, list[torch.Tensor]] = {}
    for out in outputs:
        for name, value in out.losses.items():
            names.setdefault(name, []).append(value)
    return {name: torch.stack(values).mean() for name, values in names.items()}


def _prefixed_metrics(outputs: Sequence[QuantizerOutput]) -> dict[str, torch.Tensor]:
    return {f"{name}/{i}": value for i, out in enumerate(outputs) for name, value in out.metrics.items()}


class _Composite(Quantizer):
    """Shared bookkeeping of composites: stages, alphabets, loss weights, parameter counts."""

    stages: nn.ModuleList

    def _set_stages(self, stages: Sequence[Quantizer]) -> None:
        if not stages:
            raise ValueError("stages: expected at least one stage, got none")
        self.stages = nn.ModuleList(stages)

    @property
    def stage_list(self) -> list[Quantizer]:
        """The stages (RVQ levels or PVQ groups), typed."""
        return cast(list[Quantizer], list(self.stages))

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return tuple(size for stage in self.stage_list for size in stage.alphabet_sizes)

    @property
    def loss_weights(self) -> dict[str, float]:
        return dict(self.stage_list[0].loss_weights)

    @property
    def num_codebook_parameters(self) -> int:
        own = sum(p.numel() for name, p in self.named_parameters() if not name.startswith("stages."))
        return own + sum(stage.num_codebook_parameters for stage in self.stage_list)

    def _code_slices(self) -> list[slice]:
        slices, start = [], 0
        for stage in self.stage_list:
            slices.append(slice(start, start + stage.codes_per_vector))
            start += stage.codes_per_vector
        return slices


class ResidualQuantizer(_Composite):
    """Residual composition of ``stages`` (each of dimension ``stage_dim``).

    Args:
        dim: D.
        stages: the stage quantizers, channels-last, all of dimension ``stage_dim``.
        stage_scales: optional ``[S, stage_dim]`` (or ``[S]``) factors: stage ``i`` quantizes ``r_i / s_i`` and
            contributes ``q_i * s_i``.
        project: add learned linear maps ``dim -> stage_dim -> dim`` (needed when they differ).
        gradient: ``"straight_through"`` (default): identity from the summed output to the input, applied once.
            ``"stages"``: the sum of each stage's own estimator (``q_i`` as the stage returns it, times ``s_i``):
            for bounded stages (FSQ) whose estimator passes through ``tanh``. With the identity, inputs beyond the
            bound keep being pushed outwards (FSQ has no commitment loss) and grow without limit; the demo measured
            the projected input's std going from 0.8 to 54-84 in 1,500 steps.
    """

    stage_scales: torch.Tensor

    def __init__(
        self,
        dim: int,
        stages: Sequence[Quantizer],
        *,
        stage_scales: torch.Tensor | None = None,
        project: bool = False,
        gradient: Literal["straight_through", "stages"] = "straight_through",
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self._set_stages(stages)
        stage_dim = self.stage_list[0].dim
        if any(s.dim != stage_dim for s in self.stage_list):
            raise ValueError(f"stages: expected equal dims, got {[s.dim for s in self.stage_list]}")
        if not project and stage_dim != dim:
            raise ValueError(f"stages: stage dim {stage_dim} differs from dim={dim}; pass project=True")
        self.project_in: nn.Module = nn.Linear(dim, stage_dim) if project else nn.Identity()
        self.project_out: nn.Module = nn.Linear(stage_dim, dim) if project else nn.Identity()
        scales = (
            torch.ones(len(self.stage_list), 1)
            if stage_scales is None
            else stage_scales.float().reshape(len(self.stage_list), -1)
        )
        self.register_buffer("stage_scales", scales, persistent=False)
        # Without scales, skip the divide and multiply: two full passes over [N, D] per stage, for nothing.
        self.unit_scales = stage_scales is None
        self.gradient = check_choice("gradient", gradient, ("straight_through", "stages"))

    def _stage_in(self, residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return residual if self.unit_scales else residual / scale

    def _stage_out(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return q if self.unit_scales else q * scale

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        h = self.project_in(z)
        residual = h
        total: torch.Tensor | None = None
        surrogate: torch.Tensor | None = None
        outputs = []
        last = len(self.stage_list) - 1
        for i, (stage, scale) in enumerate(zip(self.stage_list, self.stage_scales, strict=True)):
            out = stage._quantize(self._stage_in(residual, scale))
            q = self._stage_out(out.quantized.detach(), scale)
            if i < last:  # the last residual is never read
                residual = residual - q
            total = q if total is None else total + q
            if self.gradient == "stages":
                own = self._stage_out(out.quantized, scale)
                surrogate = own if surrogate is None else surrogate + own
            outputs.append(out)
        assert total is not None
        return QuantizerOutput(
            quantized=self.project_out(straight_through(total, surrogate if surrogate is not None else h)),
            codes=torch.cat([out.codes for out in outputs], dim=1),
            losses=_mean_losses(outputs),
            metrics=_prefixed_metrics(outputs),
        )

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """Residual k-means: level ``i`` is fitted to what levels ``< i`` leave of ``vectors`` ``[N, D]``."""
        residual = self.project_in(vectors.reshape(-1, self.dim).to(self.compute_dtype))
        for stage, scale in zip(self.stage_list, self.stage_scales, strict=True):
            stage.init_codebook(self._stage_in(residual, scale))
            residual = residual - self._stage_out(
                stage._decode(stage._encode(self._stage_in(residual, scale))), scale
            )

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        residual = self.project_in(z)
        codes = []
        last = len(self.stage_list) - 1
        for i, (stage, scale) in enumerate(zip(self.stage_list, self.stage_scales, strict=True)):
            c = stage._encode(self._stage_in(residual, scale))
            if i < last:
                residual = residual - self._stage_out(stage._decode(c), scale)
            codes.append(c)
        return torch.cat(codes, dim=1)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        total = None
        for stage, scale, cols in zip(self.stage_list, self.stage_scales, self._code_slices(), strict=True):
            q = self._stage_out(stage._decode(codes[:, cols]), scale)
            total = q if total is None else total + q
        assert total is not None
        return self.project_out(total)


class ProductQuantizer(_Composite):
    """Product composition: ``dim`` split into ``len(stages)`` equal contiguous sub-vectors, one stage each."""

    def __init__(
        self,
        dim: int,
        stages: Sequence[Quantizer],
        *,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self._set_stages(stages)
        if sum(s.dim for s in self.stage_list) != dim:
            raise ValueError(
                f"stages: sub-vector dims {[s.dim for s in self.stage_list]} must sum to dim={dim}"
            )

    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(z, [s.dim for s in self.stage_list], dim=-1)

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        outputs = [stage._quantize(part) for stage, part in zip(self.stage_list, self._split(z), strict=True)]
        return QuantizerOutput(
            quantized=torch.cat([out.quantized for out in outputs], dim=-1),
            codes=torch.cat([out.codes for out in outputs], dim=1),
            losses=_mean_losses(outputs),
            metrics=_prefixed_metrics(outputs),
        )

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """k-means per group on the matching sub-vectors of ``vectors`` ``[N, D]``."""
        parts = self._split(vectors.reshape(-1, self.dim).to(self.compute_dtype))
        for stage, part in zip(self.stage_list, parts, strict=True):
            stage.init_codebook(part)

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [stage._encode(part) for stage, part in zip(self.stage_list, self._split(z), strict=True)], 1
        )

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        parts = [
            stage._decode(codes[:, cols])
            for stage, cols in zip(self.stage_list, self._code_slices(), strict=True)
        ]
        return torch.cat(parts, dim=-1)
