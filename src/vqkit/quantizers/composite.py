"""Composite quantizers built from stages that follow the same contract.

* ``ResidualQuantizer``: stage ``i`` quantizes what the previous stages left, ``r_i = r_{i-1} - q_{i-1}``
  (residual VQ, Juang & Gray 1982; SoundStream, arXiv 2107.03312). The composite owns the projections
  (``dim -> stage_dim -> dim``) and the search: ``search`` returns every stage's codes (greedy by default; IVQ
  overrides it with its joint binary search). Stage outputs are detached when forming the next residual and
  the straight-through estimator is applied once, to the sum (the fix to Encodec issue #25 that IVQ and
  vector-quantize-pytorch use): every stage's commitment loss reaches the encoder, and the out projection,
  applied after the estimator, trains from the decoder's gradient. An optional per-stage input scale lets
  bounded quantizers (FSQ, LFQ) resolve ever finer residuals (Residual FSQ).
* ``ProductQuantizer``: the vector is split into ``G`` contiguous sub-vectors, each with its own quantizer
  (Jégou et al., "Product quantization for nearest neighbor search", TPAMI 2011).

Codes are ``[..., num_stages]`` / ``[..., num_groups]``; losses are the means of the stages' terms; each stage's
own diagnostics are reported per stage (``position_metrics["stage/<name>"]``) and as their mean.

Both are registered (``residual``, ``product``), so any composition of registered quantizers saves as a config:
``stages`` are quantizer modules or their configs (``{"name": ..., "kwargs": ...}``), and ``to_config`` writes
each stage's own config in place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar, Literal, cast

import torch
from torch import nn

from vqkit._validate import check_choice, check_positive_int, check_range
from vqkit.functional.estimators import estimate, straight_through
from vqkit.quantizers.base import Quantizer
from vqkit.quantizers.beam import beam_search
from vqkit.quantizers.dropout import draw_levels, on_rows
from vqkit.registry import quantizer_from_config, register_quantizer
from vqkit.types import Layout, LazyScalars, QuantizerOutput, terms_unless_grad

StageSpec = Quantizer | Mapping[str, Any]
"""A stage: a quantizer module, or its config (``Quantizer.to_config()``) to build it from."""

Estimator = Literal["ste", "rotation", "stages"]
"""``ste`` / ``rotation``: one estimator from the summed output to the input (``functional.estimators``);
``stages``: the sum of the stages' own estimators."""


def mean_losses(outputs: Sequence[QuantizerOutput]) -> MutableMapping[str, torch.Tensor]:
    """Each named loss term averaged over the stages that return it; deferred to the first read when every
    stage deferred its own or has none (no gradient: ``terms_unless_grad``). Holds the stages' loss mappings,
    not their outputs."""
    stage_losses = [out.losses for out in outputs]

    def means() -> dict[str, torch.Tensor]:
        names: dict[str, list[torch.Tensor]] = {}
        for losses in stage_losses:
            for name, value in losses.items():
                names.setdefault(name, []).append(value)
        return {name: torch.stack(values).mean() for name, values in names.items()}

    deferred = all(isinstance(losses, LazyScalars) or not losses for losses in stage_losses)
    return terms_unless_grad(not deferred, means, dict.fromkeys(n for losses in stage_losses for n in losses))


def combine(
    quantized: torch.Tensor, outputs: Sequence[QuantizerOutput], codes: torch.Tensor | None = None
) -> QuantizerOutput:
    """The composite's flat output: its ``quantized``, the stages' codes side by side (or ``codes``, the
    composite's own order of them), their mean losses, and each stage diagnostic as a mean (``metrics``) and
    per stage (``position_metrics["stage/<name>"]``)."""
    names = dict.fromkeys(name for out in outputs for name in out.metrics)
    per_stage = {
        name: torch.stack([out.metrics[name] for out in outputs if name in out.metrics]) for name in names
    }
    return QuantizerOutput(
        quantized=quantized,
        codes=torch.cat([out.codes for out in outputs], dim=1) if codes is None else codes,
        losses=mean_losses(outputs),
        metrics={name: values.mean() for name, values in per_stage.items()},
        position_metrics={f"stage/{name}": values for name, values in per_stage.items()},
    )


class _Composite(Quantizer):
    """Shared bookkeeping of composites: stages, alphabets, loss weights, parameter counts."""

    stages: nn.ModuleList

    def _set_stages(self, stages: Sequence[StageSpec]) -> None:
        if isinstance(stages, (str, Mapping)) or not isinstance(stages, Sequence) or not stages:
            raise ValueError(
                f"stages: expected a non-empty list of quantizers or their configs, got {stages!r}"
            )
        built = [stage if isinstance(stage, Quantizer) else quantizer_from_config(stage) for stage in stages]
        self.stages = nn.ModuleList(built)

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

    @property
    def needs_warm_start(self) -> bool:
        return any(stage.needs_warm_start for stage in self.stage_list)

    def search_cost(self) -> tuple[int, int] | None:
        """The stages' costs summed; ``None`` when a stage has no search (an implicit codebook)."""
        parts = [stage.search_cost() for stage in self.stage_list]
        if any(part is None for part in parts):
            return None
        return sum(p[0] for p in parts if p), sum(p[1] for p in parts if p)

    def _code_slices(self) -> list[slice]:
        slices, start = [], 0
        for stage in self.stage_list:
            slices.append(slice(start, start + stage.codes_per_vector))
            start += stage.codes_per_vector
        return slices


@register_quantizer("residual")
class ResidualQuantizer(_Composite):
    """Residual composition of ``stages`` (each of dimension ``stage_dim``).

    Args:
        dim: D.
        stages: the stage quantizers (modules or configs), channels-last, all of dimension ``stage_dim``.
        stage_scales: optional ``[S, stage_dim]`` (or ``[S]``) factors (a tensor or nested lists): stage ``i``
            quantizes ``r_i / s_i`` and contributes ``q_i * s_i``.
        project: learned linear maps ``dim -> stage_dim -> dim`` owned by the composite (needed when they
            differ): the factorized codes of DAC and ViT-VQGAN, one projection pair for all stages.
        gradient: ``"ste"`` (default): identity from the summed output to the (projected) input, applied once;
            ``"rotation"``: the rotation trick (arXiv 2410.06424) from the projected input onto the sum;
            ``"stages"``: the sum of each stage's own estimator (``q_i`` as the stage returns it, times
            ``s_i``): for bounded stages (FSQ) whose estimator passes through ``tanh``; with the
            identity, inputs beyond the bound keep being pushed outwards (FSQ has no commitment loss) and grow
            without limit (``docs/quantizers.md``, residual_fsq, has the measurement).
        dropout: quantizer dropout (``vqkit.quantizers.dropout``): in training, with this probability per item,
            use only the first ``k ~ U{1..L}`` levels, so that ``encode(x, num_quantizers=k)`` serves any rate.

    A stage with its own gradient path (``Quantizer.own_gradient_paths``: its own out projection, a Gumbel
    relaxation, synchronized commitment) is refused under one estimator (``"ste"``, ``"rotation"``): its output
    is detached into the sum, so the path would never train (the composite's ``project`` is the way to factorize).
    """

    stage_scales: torch.Tensor
    joint_search: ClassVar[bool] = False
    """Whether ``forward`` takes its codes from ``search`` (IVQ's joint search) before the stages' losses;
    otherwise each stage searches inside its own training forward (one pass, no recomputation)."""

    def __init__(
        self,
        dim: int,
        stages: Sequence[StageSpec],
        *,
        stage_scales: torch.Tensor | Sequence[Any] | None = None,
        project: bool = False,
        gradient: Estimator = "ste",
        dropout: float = 0.0,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self._set_stages(stages)
        self.dropout = check_range("dropout", dropout, 0.0, 1.0)
        stage_dim = self.stage_list[0].dim
        if any(s.dim != stage_dim for s in self.stage_list):
            raise ValueError(f"stages: expected equal dims, got {[s.dim for s in self.stage_list]}")
        if not project and stage_dim != dim:
            raise ValueError(f"stages: stage dim {stage_dim} differs from dim={dim}; pass project=True")
        self.gradient: Estimator = check_choice("gradient", gradient, ("ste", "rotation", "stages"))  # type: ignore[assignment]
        for i, stage in enumerate(self.stage_list):
            paths = stage.own_gradient_paths
            if self.gradient != "stages" and paths:
                raise ValueError(
                    f"stages[{i}]: a {type(stage).__name__} with {' and '.join(paths)} would never train under "
                    f"gradient={self.gradient!r} (its output is detached into the sum)"
                    + (
                        "; build the stages at the projected width with project=True"
                        if "projection" in paths[0]
                        else ""
                    )
                )
        self.project = bool(project)
        self.project_in: nn.Module = nn.Linear(dim, stage_dim) if project else nn.Identity()
        self.project_out: nn.Module = nn.Linear(stage_dim, dim) if project else nn.Identity()
        scales = torch.ones(len(self.stage_list), 1)
        if stage_scales is not None:
            given = torch.as_tensor(stage_scales, dtype=torch.float32)
            if given.numel() % len(self.stage_list) or given.numel() // len(self.stage_list) not in (
                1,
                stage_dim,
            ):
                raise ValueError(
                    f"stage_scales: expected [{len(self.stage_list)}] or [{len(self.stage_list)}, {stage_dim}] "
                    f"factors, got shape {tuple(given.shape)}"
                )
            scales = given.reshape(len(self.stage_list), -1)
        # The config reads the factors back from this buffer (as lists).
        self.register_buffer("stage_scales", scales, persistent=False)
        # Unit scales skip the divide and multiply: two full passes over [N, D] per stage, for nothing.
        self.unit_scales = bool((scales == 1).all())

    def _stage_in(self, residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return residual if self.unit_scales else residual / scale

    def _stage_out(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return q if self.unit_scales else q * scale

    # ------------------------------------------------------------------ levels
    @property
    def num_levels(self) -> int:
        return len(self.stage_list)

    def level_widths(self) -> tuple[int, ...]:
        return tuple(cols.stop for cols in self._code_slices())

    # ------------------------------------------------------------------ search
    @torch.no_grad()
    def search(self, h: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        """The first ``num_levels`` (default all) stages' codes ``[N, C_i]`` for ``h`` ``[N, stage_dim]`` (after
        ``project_in``): greedy, each stage's nearest codes for what the earlier stages left. Subclasses may
        search jointly."""
        codes: list[torch.Tensor] = []

        def visit(stage: Quantizer, x: torch.Tensor) -> torch.Tensor:
            codes.append(stage._encode(x))
            return codes[-1]

        self._walk(h, visit, num_levels)
        return codes

    def _walk(
        self,
        h: torch.Tensor,
        visit: Callable[[Quantizer, torch.Tensor], torch.Tensor | None],
        num_levels: int | None = None,
    ) -> None:
        """Run ``visit(stage, stage input)`` down the first ``num_levels`` stages; ``visit`` returns the stage's
        codes (``None``: its own nearest codes), subtracted to form the next residual (the last is never read)."""
        residual = h
        stages = self.stage_list[: num_levels or len(self.stage_list)]
        last = len(stages) - 1
        for i, (stage, scale) in enumerate(zip(stages, self.stage_scales, strict=False)):
            x = self._stage_in(residual, scale)
            codes = visit(stage, x)
            if i < last:
                codes = stage._encode(x) if codes is None else codes
                residual = residual - self._stage_out(stage._decode(codes), scale)

    # ------------------------------------------------------------------ contract
    def _quantize_items(
        self, z: torch.Tensor, lead: torch.Size, rows: torch.Tensor | None = None
    ) -> QuantizerOutput:
        if not (self.training and self.dropout > 0):
            return self._quantize(z)
        return self._quantize_levels(z, draw_levels(lead, rows, self.num_levels, self.dropout, z.device))

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        return self._quantize_levels(z, None)

    def _quantize_levels(self, z: torch.Tensor, levels: torch.Tensor | None) -> QuantizerOutput:
        """The training forward; ``levels`` ``[N]``: how many stages each vector uses (quantizer dropout)."""
        h = self.project_in(z)
        found: list[torch.Tensor] | None = None
        if self.training and (self.joint_search or levels is not None) and self.needs_warm_start:
            # First training batch: data-dependent init (k-means) stage by stage on the residuals of all rows.
            self._walk(h.detach(), lambda stage, x: stage.warm_start(x))
        if self.joint_search:
            found = self.search(h.detach())
        residual = h
        total: torch.Tensor | None = None
        surrogate: torch.Tensor | None = None
        outputs = []
        last = len(self.stage_list) - 1
        for i, (stage, scale) in enumerate(zip(self.stage_list, self.stage_scales, strict=True)):
            x = self._stage_in(residual, scale)
            given = None if found is None else found[i]
            rows = None if levels is None or i == 0 else (levels > i).nonzero().squeeze(1)
            if rows is None or rows.numel() == x.shape[0]:
                out = stage.quantize_codes(x, given)
            else:  # some items dropped this level: it sees only the others' vectors
                out = on_rows(stage.quantize_codes, x, given, rows)
            q = self._stage_out(out.quantized.detach(), scale)  # its value is exactly the decoded codes
            if i < last:  # the last residual is never read
                residual = residual - q
            total = q if total is None else total + q  # no zero-filled accumulators: a pass each saved
            if self.gradient == "stages":
                part = self._stage_out(out.quantized, scale)
                surrogate = part if surrogate is None else surrogate + part
            outputs.append(out)
        assert total is not None  # a composite has at least one stage
        if self.gradient == "stages":
            assert surrogate is not None
            quantized = straight_through(total, surrogate)
        else:
            quantized = estimate(total, h, self.gradient)
        return combine(self.project_out(quantized), outputs)

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """Residual k-means: level ``i`` is fitted to what levels ``< i`` leave of ``vectors`` ``[N, D]``."""
        h = self.project_in(vectors.reshape(-1, self.dim).to(self.compute_dtype))
        self._walk(h, lambda stage, x: stage.init_codebook(x))

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.search(self.project_in(z)), dim=1)

    def _encode_levels(self, z: torch.Tensor, num_quantizers: int) -> torch.Tensor:
        return torch.cat(self.search(self.project_in(z), num_quantizers), dim=1)

    def _encode_beam(self, z: torch.Tensor, num_quantizers: int, beam_size: int) -> torch.Tensor:
        check_positive_int("beam_size", beam_size)
        h = self.project_in(z)
        beam = beam_search(self.stage_list[:num_quantizers], self.stage_scales, h, beam_size)
        greedy = torch.cat(self.search(h, num_quantizers), dim=1)
        # A beam can prune the greedy path at a level and end worse for a vector; keeping the better of the
        # two per vector makes the error never above greedy (the promise of the option).
        worse = self._stage_error(h, beam) > self._stage_error(h, greedy)
        return torch.where(worse[:, None], greedy, beam)

    def _stage_error(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``[N]`` squared error in the stages' space of the first levels' ``codes``."""
        return (h - self._stage_sum(codes)).square().sum(-1)

    def _stage_sum(self, codes: torch.Tensor) -> torch.Tensor:
        """The stages' decoded sum in their space, for all stages' codes or the first ones (a prefix)."""
        total = None
        for stage, scale, cols in zip(self.stage_list, self.stage_scales, self._code_slices(), strict=True):
            if cols.start >= codes.shape[1]:
                break
            q = self._stage_out(stage._decode(codes[:, cols]), scale)
            total = q if total is None else total + q
        assert total is not None
        return total

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes of all stages, or of the first ones (a prefix from ``encode(x, num_quantizers=k)``)."""
        return self.project_out(self._stage_sum(codes))


class _SplitComposite(_Composite):
    """A composite whose stages quantize contiguous channel groups side by side (product and grouped forms)."""

    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(z, [s.dim for s in self.stage_list], dim=-1)

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """Each stage's own init (k-means) on its channels of ``vectors`` ``[N, D]``."""
        parts = self._split(vectors.reshape(-1, self.dim).to(self.compute_dtype))
        for stage, part in zip(self.stage_list, parts, strict=True):
            stage.init_codebook(part)


@register_quantizer("product")
class ProductQuantizer(_SplitComposite):
    """Product composition: ``dim`` split into contiguous sub-vectors of the stages' dims (modules or configs)."""

    def __init__(
        self,
        dim: int,
        stages: Sequence[StageSpec],
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

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        outputs = [stage._quantize(part) for stage, part in zip(self.stage_list, self._split(z), strict=True)]
        return combine(torch.cat([out.quantized for out in outputs], dim=-1), outputs)

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
