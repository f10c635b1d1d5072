"""``bench_overhead.py``'s per-call section: the fixed cost of a small batch's call, before and after the change
that keeps ``compute_dtype`` (``vqkit.quantizers.precision.Float32State``), leaves autocast alone when it is off
(``fp32_compute``) and reads the finiteness check's two extremes as floats (``all_finite``).

``previous_per_call()`` puts the removed work back on the same modules (the references below are the replaced
code in substance): ``compute_dtype`` walks every parameter and buffer on each read, ``fp32_compute`` builds an
``autocast(enabled=False)`` on each call, ``all_finite`` runs ``isfinite`` and ``all`` on the two extremes. Both
variants of a quantizer race round-robin (``bench_common.race``) on one module; each call enters its context
(the ``now`` context sets the same attributes to their current values, so both pay the switch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from bench_common import race
from quantizer_cases import build_case, make_input

import vqkit
from vqkit.quantizers import base
from vqkit.quantizers.precision import Float32State

NAMES = (
    "vq",
    "ema_vq",
    "simvq",
    "fsq",
    "lfq",
    "bsq",
    "residual_vq",
    "residual_lfq",
    "product_vq",
    "ivq",
    "looc",
)


def _walked_compute_dtype(self: torch.nn.Module) -> torch.dtype:
    tensor = next((t for t in (*self.parameters(), *self.buffers()) if t.is_floating_point()), None)
    return torch.float64 if tensor is not None and tensor.dtype == torch.float64 else torch.float32


@contextmanager
def _autocast_off_always(device: torch.device) -> Iterator[None]:
    try:
        ctx = torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:
        yield
        return
    with ctx:
        yield


def _tensor_all_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(torch.stack(torch.aminmax(x))).all())


PREVIOUS = {"fp32_compute": _autocast_off_always, "all_finite": _tensor_all_finite}
NOW = {"fp32_compute": base.fp32_compute, "all_finite": base.all_finite}
KEPT_DTYPE = Float32State.__dict__["compute_dtype"]


@contextmanager
def previous_per_call(previous: bool = True) -> Iterator[None]:
    """The removed per-call work put back (``previous``), or the same switch to what is there now."""
    Float32State.compute_dtype = property(_walked_compute_dtype) if previous else KEPT_DTYPE  # type: ignore[method-assign,assignment]
    for name, fn in (PREVIOUS if previous else NOW).items():
        setattr(base, name, fn)
    try:
        yield
    finally:
        Float32State.compute_dtype = KEPT_DTYPE  # type: ignore[method-assign]
        for name, fn in NOW.items():
            setattr(base, name, fn)


def _call(q: vqkit.Quantizer, x: torch.Tensor, train: bool, previous: bool) -> Callable[[], object]:
    def run() -> object:
        with previous_per_call(previous):
            if not train:
                with torch.no_grad():
                    return q(x)
            q.zero_grad(set_to_none=True)
            out = q(x)
            (out.quantized.square().mean() + out.loss).backward()
            return out.codes

    return run


def bench_per_call(
    n: int, dim: int, bits: int, repeats: int, names: tuple[str, ...] = NAMES
) -> dict[str, Any]:
    """Eval forward and training step of each quantizer on ``n`` vectors, previous per-call work against now:
    ``{"rows": {name: {..._us: {"before", "now"}, "eval: before / now", "train: before / now"}}}``."""
    x = make_input(n, dim)
    rows: dict[str, Any] = {}
    for name in names:
        case = build_case(
            name, dim, bits, torch.randn(max(n, 256), dim, generator=torch.Generator().manual_seed(1))
        )
        if isinstance(case, str):
            continue
        q = case.quantizer
        row: dict[str, Any] = {}
        for label, train in (("eval", False), ("train", True)):
            q.train(train)
            inp = x.clone().requires_grad_(train)
            t = race({v: _call(q, inp, train, v == "before") for v in ("before", "now")}, repeats * 10, 5)
            row[f"{label}_us"] = {v: t[v].best * 1e6 for v in t}
            row[f"{label}: before / now"] = t["before"].best / t["now"].best
        rows[name] = row
    return {"n": n, "dim": dim, "bits": bits, "rows": rows}
