"""Shared types: the one result every quantizer returns, and the layout vocabulary.

Axis legend used across vqkit docstrings:
    B batch, N vectors (flattened positions), D vector dimension (``dim``), K codes in a codebook,
    C codes per vector (``codes_per_vector``), T time, H/W height/width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

Layout = Literal["channels_last", "channels_first"]
"""``channels_last``: ``(..., D)``. ``channels_first``: ``(B, D, *spatial)``, e.g. ``(B, D, T)``, ``(B, D, H, W)``."""

Distance = Literal["l2", "cosine"]
"""Nearest-code matching: squared Euclidean, or cosine similarity (both sides l2-normalized for the lookup)."""

LAYOUTS: tuple[str, ...] = ("channels_last", "channels_first")


@dataclass
class QuantizerOutput:
    """What ``Quantizer.forward`` returns, for every quantizer.

    Attributes:
        quantized: same shape and dtype as the input; the value equals ``decode(codes)`` and the gradient
            reaches the input by a straight-through (or the quantizer's own) estimator.
        codes: integer codes, ``[..., C]`` where ``...`` are the input's vector positions (for
            ``channels_first`` input ``(B, D, *S)`` that is ``(B, *S, C)``).
        losses: named, **unweighted** scalar terms (e.g. ``commitment``, ``codebook``, ``entropy``).
        metrics: detached 0-dim scalars for logging, about the whole quantizer: at least ``utilization`` and
            ``perplexity`` of this batch (the means over code positions), plus the quantizer's own diagnostics.
        position_metrics: detached 1-D tensors, one value per code position ``j < C`` (``utilization``,
            ``perplexity``), and per stage for composites (``stage/<name>``, one value per stage); empty when
            ``C = 1`` and there are no stages. Kept apart from ``metrics`` so consumers never parse names.
        loss_weights: the quantizer's configured weight for each loss name (e.g. ``beta`` for ``commitment``);
            ``loss`` uses them. Weights live in configuration, the terms stay unweighted.

    ``metrics`` and ``position_metrics`` (and, in a forward without a gradient, ``losses``) may be
    ``LazyScalars``: mappings whose values are computed on first read, so a call whose diagnostics nobody reads
    does not pay for them. They behave as dicts of tensors (``dict(out.metrics)`` or ``.copy()`` reads them all,
    ``|`` merges into a dict, pickling stores a dict), but ``isinstance(out.metrics, dict)`` is False. Until read
    they hold the forward's codes (a copy) and its small projected channels.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    losses: MutableMapping[str, torch.Tensor] = field(default_factory=dict)
    metrics: MutableMapping[str, torch.Tensor] = field(default_factory=dict)
    loss_weights: dict[str, float] = field(default_factory=dict)
    position_metrics: MutableMapping[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        """The weighted sum of ``losses`` with ``loss_weights`` (weight 1 for an unnamed term)."""
        return self.weighted_loss(self.loss_weights)

    def weighted_loss(self, weights: Mapping[str, float]) -> torch.Tensor:
        """Sum of ``weights[name] * losses[name]``; names missing from ``weights`` get weight 1."""
        return weighted_sum(self.losses, weights, like=self.quantized)


def weighted_sum(
    losses: Mapping[str, torch.Tensor], weights: Mapping[str, float], *, like: torch.Tensor
) -> torch.Tensor:
    """``sum(weights[name] * losses[name])`` as a float32 scalar on ``like``'s device; a name without a weight
    gets weight 1. The one place unweighted named terms meet their configured weights."""
    total = like.new_zeros((), dtype=torch.float32)
    for name, value in losses.items():
        total = total + float(weights.get(name, 1.0)) * value
    return total


class Deferred:
    """A computation of named tensors run at most once, on first demand, without autograd: the values behind
    one or more ``LazyScalars`` entries (one pass over the codes can serve the scalar and the per-position
    usage metrics). ``compute`` must only read tensors that nothing changes in place afterwards (a forward's
    codes and detached intermediates)."""

    __slots__ = ("_compute", "_values")

    def __init__(self, compute: Callable[[], Mapping[str, torch.Tensor]]) -> None:
        self._compute: Callable[[], Mapping[str, torch.Tensor]] | None = compute
        self._values: Mapping[str, torch.Tensor] | None = None

    def get(self, key: str) -> torch.Tensor:
        """The value ``key`` of the computation (run now if it has not run)."""
        if self._values is None:
            assert self._compute is not None
            with torch.no_grad():
                self._values = self._compute()
            self._compute = None  # drop what the closure held
        return self._values[key]


class _Pending(NamedTuple):
    """A deferred entry: the value ``key`` of ``source``."""

    source: Deferred
    key: str


class LazyScalars(MutableMapping[str, torch.Tensor]):
    """A ``name -> tensor`` mapping whose values may be computed on first read (``defer``).

    Why: a forward's usage metrics cost several passes over the codes (a count table, its entropy), and without
    a gradient its loss terms are reports only; a trainer reads them on logging steps, an inference loop never
    (they were a third of FSQ's eval forward at D = 64). Names, ``len``, ``in`` and iteration order (insertion,
    deferred names included) never compute; reading a value computes its ``Deferred`` once, under
    ``torch.no_grad()``. Setting or deleting a deferred name drops it uncomputed. Equal to a dict with the same
    items. ``merge`` takes another mapping's entries, a ``LazyScalars``' deferred ones without computing them.
    """

    def __init__(self, values: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]] = ()) -> None:
        # One dict in insertion order: a computed value, or where a deferred one will come from.
        self._entries: dict[str, torch.Tensor | _Pending] = {}
        self.update(values)  # the inherited update: one __setitem__ per item

    def defer(self, source: Deferred, names: Mapping[str, str] | Iterable[str]) -> None:
        """Add entries read from ``source``: ``names`` maps each entry's name to its key in ``source``'s
        values (an iterable: the same names). A name already present is replaced."""
        pairs = names.items() if isinstance(names, Mapping) else ((name, name) for name in names)
        for name, key in pairs:
            self._entries[name] = _Pending(source, key)

    def resolve(self) -> dict[str, torch.Tensor]:
        """Every value, computed now: a plain dict in this mapping's order."""
        return {name: self[name] for name in self._entries}

    def __getitem__(self, name: str) -> torch.Tensor:
        entry = self._entries[name]  # KeyError for an unknown name, as a dict
        if isinstance(entry, _Pending):
            # Stored only once computed: a compute that raises leaves the entry as it was.
            entry = self._entries[name] = entry.source.get(entry.key)
        return entry

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self._entries[name] = value

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def merge(self, other: Mapping[str, torch.Tensor]) -> None:
        """``update`` that carries another ``LazyScalars``' deferred entries over without computing them."""
        if isinstance(other, LazyScalars):
            self._entries.update(other._entries)
        else:
            self.update(other)

    def copy(self) -> dict[str, torch.Tensor]:
        """A plain dict of every value (computed now), as ``dict.copy`` gives a dict."""
        return self.resolve()

    def __or__(self, other: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**self.resolve(), **other}

    def __ror__(self, other: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**other, **self.resolve()}

    def __reduce__(self) -> tuple[type, tuple[dict[str, torch.Tensor]]]:
        # Pickled (``torch.save``, ``copy.deepcopy``) as the plain dict of its values: closures do not pickle.
        return dict, (self.resolve(),)

    def __repr__(self) -> str:
        values = {n: v for n, v in self._entries.items() if not isinstance(v, _Pending)}
        pending = [n for n, v in self._entries.items() if isinstance(v, _Pending)]
        return f"LazyScalars({values!r}, deferred={pending!r})"


def merge_into(into: MutableMapping[str, torch.Tensor], extra: Mapping[str, torch.Tensor]) -> None:
    """``into.update(extra)``; into a ``LazyScalars``, ``extra``'s deferred entries stay deferred."""
    if isinstance(into, LazyScalars):
        into.merge(extra)
    else:
        into.update(extra)


def tracing() -> bool:
    """Whether ``torch.compile``, ``torch.jit.trace`` or the ONNX exporter is recording this call: values must be
    computed now, inside the graph, not on a later read."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def terms_unless_grad(
    needs_grad: bool, compute: Callable[[], Mapping[str, torch.Tensor]], names: Iterable[str]
) -> MutableMapping[str, torch.Tensor]:
    """Loss terms ``compute()`` (named ``names``): computed now when a gradient will flow through them
    (``needs_grad``) or a graph is being traced, else deferred to the first read (``LazyScalars``). Without a
    gradient the terms are reports only: an eval forward whose losses nobody reads skips their passes over the
    vectors. ``compute`` holds the tensors it reads until then (a forward's own intermediates)."""
    if needs_grad or tracing():
        return dict(compute())
    terms = LazyScalars()
    terms.defer(Deferred(compute), names)
    return terms
