"""``bench_gpu.py``'s measurements on a device: the timer (CUDA events, or the wall clock on CPU), the steps under
autocast, every ``bench_quantizers.py`` case against the same-shape matmul and vector-quantize-pytorch in one
precision, and the small-batch target with the step under CUDA graphs (that script's docstring has the method).

The cases, the matmul width and the vector-quantize-pytorch adapters are ``bench_quantizers.py``'s own
(``quantizer_cases``, ``quantizer_references``): built on the CPU as there, then moved to the device.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, cast

import torch
from bench_common import SEED, Timing, agreement, no_grad_call
from quantizer_cases import Case, matmul_weight
from quantizer_references import Reference, build_reference

import vqkit

Calls = dict[str, Callable[[], object]]
Graphs = Literal["cuda", "compile", "none"]
Dtype = torch.dtype | None  # torch.bfloat16: under bf16 autocast; None: plain fp32
TARGET_RATIO = 2.0  # small-batch target: vqkit time <= 2x the bare matmul x @ C^T of the same shapes


@dataclass(frozen=True)
class Device:
    """The device the measurements run on and how they are timed there."""

    name: str  # "cuda", "cuda:1", "cpu"

    @property
    def is_cuda(self) -> bool:
        return torch.device(self.name).type == "cuda"

    def sync(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.name)

    def autocast(self, dtype: Dtype) -> torch.autocast:
        """bf16 autocast for ``dtype=torch.bfloat16``, a disabled one (plain fp32) for ``None``."""
        kind = torch.device(self.name).type
        return torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def time_call(self, fn: Callable[[], object]) -> float:
        """Seconds of one call of ``fn``, from an idle device to its last kernel: CUDA events around it and a
        sync after it on CUDA, the wall clock on CPU."""
        if not self.is_cuda:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3


def race_on(device: Device, fns: Calls, repeats: int, warmup: int) -> dict[str, Timing]:
    """``bench_common.race`` on ``device``: round-robin calls in a rotated order after ``warmup`` rounds, each
    call timed alone by ``device.time_call`` (the device idle before it, so launch latency counts)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    device.sync()
    timings = {name: Timing() for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            timings[name].times.append(device.time_call(fns[name]))
    return timings


def medians(timings: dict[str, Timing]) -> dict[str, float]:
    return {name: t.median for name, t in timings.items()}


def under(device: Device, dtype: Dtype, fn: Callable[..., object], *args: Any) -> object:
    """``fn(*args)`` under ``device.autocast(dtype)`` (bind it with ``functools.partial``)."""
    with device.autocast(dtype):
        return fn(*args)


def cpu_codes(case: Case, x: torch.Tensor) -> torch.Tensor:
    """The eval codes of ``case``'s built state on the CPU in fp32: what the device's codes are compared with."""
    with torch.no_grad():
        return copy.deepcopy(case.quantizer).eval().encode(x)


def attempt(errors: dict[str, str], key: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, or ``None`` with the error recorded under ``key``: one unsupported op (a dtype, an OOM) costs one
    entry, not the run."""
    try:
        return fn()
    except Exception as err:  # recorded in the report; the run goes on
        errors[key] = f"{type(err).__name__}: {err}"[:500]
        return None


# --------------------------------------------------------------------------- steps (forward under autocast)
def ours_step(q: vqkit.Quantizer, inp: torch.Tensor, device: Device, dtype: Dtype) -> torch.Tensor:
    """``quantizer_timing.vqkit_step`` with the forward and loss under autocast and the backward outside it."""
    inp.grad = None
    q.zero_grad(set_to_none=True)
    with device.autocast(dtype):
        out = q(inp)
        loss = out.quantized.float().square().mean() + out.loss
    loss.backward()
    return out.codes


def theirs_step(ref: Reference, inp: torch.Tensor, device: Device, dtype: Dtype) -> torch.Tensor:
    """``quantizer_timing.vqp_step`` likewise."""
    inp.grad = None
    ref.module.zero_grad(set_to_none=True)
    with device.autocast(dtype):
        out = ref.forward(inp)
        loss = out[0].float().square().mean() + ref.loss(out).float()
    loss.backward()
    return ref.codes(out)


def matmul_step(x: torch.Tensor, w: torch.Tensor, device: Device, dtype: Dtype) -> object:
    """The same-shape matmul's training step: ``mean((x W)^2)`` and the backward to ``x`` (``W`` fixed)."""
    x.grad = None
    with device.autocast(dtype):
        loss = (x @ w).float().square().mean()
    loss.backward()
    return x.grad


# --------------------------------------------------------------------------- every quantizer, one precision
def _encode_on(
    q: vqkit.Quantizer, ref: Reference | None, x: torch.Tensor, k: int, ctx: dict[str, Any]
) -> dict[str, Any]:
    """Eval encode raced with the matmul and both eval forwards; ``ctx``: device, dtype, repeats, errors, the
    CPU codes."""
    device, dtype, errors = ctx["device"], ctx["dtype"], ctx["errors"]
    q.eval()
    n, dim = x.shape[0] * x.shape[1], x.shape[2]
    flat, w = x.reshape(n, dim), matmul_weight(dim, k).to(device.name)
    fns: Calls = {
        "matmul": partial(under, device, dtype, torch.matmul, flat, w),
        "vqkit_encode": partial(under, device, dtype, q.encode, x),
        "vqkit_eval_forward": partial(under, device, dtype, no_grad_call, q, x),
    }
    codes = fns["vqkit_encode"]()
    assert isinstance(codes, torch.Tensor)
    agree: dict[str, float | None] = {"cpu_pct": None, "vqp_eval_pct": None}
    if ctx["cpu_codes"] is not None:
        agree["cpu_pct"] = agreement(codes.cpu(), ctx["cpu_codes"])
    if ref is not None:
        ref.module.eval()
        theirs = partial(under, device, dtype, no_grad_call, ref.forward, x)
        out = attempt(errors, "vqp_eval_forward", theirs)
        if out is not None:
            agree["vqp_eval_pct"] = agreement(codes, ref.codes(out))
            fns["vqp_eval_forward"] = theirs
    repeats, _, warmup = ctx["repeats"]
    timing = race_on(device, fns, repeats, warmup)
    t = medians(timing)
    section: dict[str, Any] = {
        "timings": {name: timing[name].as_dict() for name in fns},
        "vectors_per_s": n / t["vqkit_encode"],
        "ratio_to_matmul": t["vqkit_encode"] / t["matmul"],
        "eval_forward_ratio_to_matmul": t["vqkit_eval_forward"] / t["matmul"],
        "agreement": agree,
    }
    if "vqp_eval_forward" in t:
        section["encode_speedup"] = t["vqp_eval_forward"] / t["vqkit_encode"]
        section["eval_forward_speedup"] = t["vqp_eval_forward"] / t["vqkit_eval_forward"]
    return section


def _train_on(
    q: vqkit.Quantizer, ref: Reference | None, x: torch.Tensor, k: int, ctx: dict[str, Any]
) -> dict[str, Any]:
    """Training step from the built state (fresh copies), raced with the matmul's and the reference's; the
    first step of both, from the same state, gives the step-1 code agreement."""
    device, dtype, errors = ctx["device"], ctx["dtype"], ctx["errors"]
    q.train()
    n, dim = x.shape[0] * x.shape[1], x.shape[2]
    w = matmul_weight(dim, k).to(device.name)
    x_ours, x_mm = x.clone().requires_grad_(True), x.reshape(n, dim).clone().requires_grad_(True)
    fns: Calls = {
        "matmul_step": partial(matmul_step, x_mm, w, device, dtype),
        "vqkit_step": partial(ours_step, q, x_ours, device, dtype),
    }
    agree: dict[str, float | None] = {"vqp_step1_pct": None}
    if ref is not None:
        ref.module.train()
        theirs = partial(theirs_step, ref, x.clone().requires_grad_(True), device, dtype)
        ours = fns["vqkit_step"]()
        codes = attempt(errors, "vqp_step", theirs)
        if codes is not None:
            assert isinstance(ours, torch.Tensor)
            agree["vqp_step1_pct"] = agreement(ours, codes)
            fns["vqp_step"] = theirs
    _, repeats, warmup = ctx["repeats"]
    timing = race_on(device, fns, repeats, warmup)
    t = medians(timing)
    section: dict[str, Any] = {
        "timings": {name: timing[name].as_dict() for name in fns},
        "vectors_per_s": n / t["vqkit_step"],
        "ratio_to_matmul_step": t["vqkit_step"] / t["matmul_step"],
        "agreement": agree,
    }
    if "vqp_step" in t:
        section["train_speedup"] = t["vqp_step"] / t["vqkit_step"]
    q.eval()
    return section


def bench_precision(
    case: Case,
    x: torch.Tensor,
    device: Device,
    dtype: Dtype,
    repeats: tuple[int, int, int],
    cpu_codes: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Encode and training-step races of a fresh copy of ``case``'s quantizer (and of its vector-quantize-pytorch
    equivalent, built from that copy) on ``device`` in one precision; ``x`` ``[B, L, D]`` on the CPU, ``repeats``
    as in ``bench_quantizers.py``; ``cpu_codes``: the CPU fp32 codes of the built state, for ``agreement.cpu_pct``.
    A failing call is an entry of ``errors``, and what does not need it still runs."""
    errors: dict[str, str] = {}
    ctx = {"device": device, "dtype": dtype, "repeats": repeats, "errors": errors, "cpu_codes": cpu_codes}
    q = copy.deepcopy(case.quantizer).eval()
    built = build_reference(q)  # from the CPU state, as bench_quantizers.py builds it
    ref = built if isinstance(built, Reference) else None
    q.to(device.name)
    if ref is not None:
        ref.module.to(device.name)
    xd = x.to(device.name)
    result: dict[str, Any] = {"dtype": "bf16 autocast" if dtype is not None else "fp32", "errors": errors}
    result["encode"] = attempt(errors, "encode", partial(_encode_on, q, ref, xd, case.k, ctx))
    result["train"] = attempt(errors, "train", partial(_train_on, q, ref, xd, case.k, ctx))
    del q, ref, xd
    if device.is_cuda:
        torch.cuda.empty_cache()
    return result


# --------------------------------------------------------------------------- CUDA graphs
@dataclass
class Graphed:
    """A call replayed from a graph (or compiled), and the output of its latest call."""

    call: Callable[[], object]
    last: Callable[[], object]


@contextlib.contextmanager
def _side_stream(device: Device) -> Iterator[None]:
    """Warm-up calls before a capture run on a side stream (``torch.cuda.graphs``' recipe)."""
    stream = torch.cuda.Stream(device.name)
    stream.wait_stream(torch.cuda.current_stream(device.name))
    with torch.cuda.stream(stream):
        yield
    torch.cuda.current_stream(device.name).wait_stream(stream)


def cuda_graph(device: Device, fn: Callable[[], object], warmup: int = 3) -> Graphed:
    """``fn`` captured into a ``torch.cuda.CUDAGraph`` after ``warmup`` calls; a replay reruns its kernels on the
    captured tensors (the same input, the state updated in place) and refills the captured output."""
    with _side_stream(device):
        for _ in range(warmup):
            fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    device.sync()
    return Graphed(graph.replay, lambda: out)


def compiled_call(fn: Callable[[], object], warmup: int = 3) -> Graphed:
    """``fn`` (calling a ``torch.compile(mode="reduce-overhead")`` module), warmed up: cudagraph trees record it
    on the first calls and replay it after."""
    box: list[object] = []

    def call() -> None:
        torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the previous outputs may be overwritten
        box[:] = [fn()]

    for _ in range(warmup):
        call()
    return Graphed(call, lambda: box[0])


def unchecked(q: vqkit.VQ) -> vqkit.VQ:
    """A copy of ``q`` without the NaN/Inf input check: its host read (one sync per call) cannot be captured."""
    copied = copy.deepcopy(q)
    copied.allow_nonfinite = True
    return copied


def graph_calls(device: Device, graphs: Graphs, q: vqkit.VQ, x: torch.Tensor) -> dict[str, Any]:
    """The eval encode and the fp32 training step of copies of ``unchecked(q)`` on ``x`` under ``graphs``
    (``"cuda"``: captured with ``torch.cuda.graph``; ``"compile"``: ``torch.compile(mode="reduce-overhead")``),
    and whether a call of each gives what the eager call gives from the same state (equal codes, close state)."""
    encoder, stepper = unchecked(q).eval(), unchecked(q).train()
    x_step = x.clone().requires_grad_(True)
    if graphs == "cuda":
        encode = cuda_graph(device, partial(no_grad_call, encoder.encode, x))
        step = cuda_graph(device, partial(ours_step, stepper, x_step, device, None))
    else:
        module: Any = torch.compile(stepper, mode="reduce-overhead", fullgraph=True)
        compiled = torch.compile(encoder.encode, mode="reduce-overhead", fullgraph=True)
        encode = compiled_call(partial(no_grad_call, compiled, x))
        step = compiled_call(partial(ours_step, module, x_step, device, None))
    encode.call()
    device.sync()
    matches = {"encode": torch.equal(cast(torch.Tensor, encode.last()), encoder.encode(x))}
    before = copy.deepcopy(stepper)
    step.call()
    eager = ours_step(before, x.clone().requires_grad_(True), device, None)
    ours, theirs = stepper.state_dict(), before.state_dict()
    matches["step"] = torch.equal(cast(torch.Tensor, step.last()), eager) and all(
        torch.allclose(value.float(), theirs[key].float(), atol=1e-5)
        for key, value in ours.items()
        if isinstance(value, torch.Tensor)
    )
    return {"encode": encode, "step": step, "matches_eager": matches}


# --------------------------------------------------------------------------- the small-batch target
def _target_calls(q: vqkit.VQ, x: torch.Tensor, device: Device) -> tuple[Calls, Calls]:
    """The eager encode and step calls of the target, as built (the NaN/Inf input check on) and ``unchecked``,
    each step on its own copy and input; the bare ``x @ C^T`` and the matmul's step."""
    codebook_t = q.codebook.weight.detach().t()
    bare = partial(torch.matmul, x, codebook_t)
    encode: Calls = {
        "matmul": bare,
        "vqkit_encode": partial(no_grad_call, q.encode, x),
        "vqkit_encode_unchecked": partial(no_grad_call, unchecked(q).encode, x),
    }
    step: Calls = {"matmul": bare}
    step["matmul_step"] = partial(matmul_step, x.clone().requires_grad_(True), codebook_t, device, None)
    for name, model in (("vqkit_step", copy.deepcopy(q)), ("vqkit_step_unchecked", unchecked(q))):
        step[name] = partial(ours_step, model.train(), x.clone().requires_grad_(True), device, None)
    return encode, step


def _ratios(t: dict[str, float], base: str) -> dict[str, float]:
    return {name: value / t[base] for name, value in t.items() if name.startswith("vqkit")}


def small_batch(
    device: Device, shape: tuple[int, int, int], graphs: Graphs, repeats: tuple[int, int, int]
) -> dict[str, Any]:
    """The small-batch target: ``VQ(update="ema")`` eval encode and training step, fp32, ``shape = (N, D, K)``,
    against the bare ``x @ C^T`` (``TARGET_RATIO``): eager (the input check on and off) and under ``graphs``."""
    n, dim, k = shape
    errors: dict[str, str] = {}
    torch.manual_seed(SEED)
    q = vqkit.VQ(dim, k, update="ema", init="gaussian").to(device.name)
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(SEED)).to(device.name)
    encode, step = _target_calls(q, x, device)
    graphed, notes = None, []
    if graphs == "cuda" and not device.is_cuda:
        notes.append(f"--graphs cuda: CUDA graphs need a CUDA device ({device.name}); not run")
    elif graphs != "none":
        graphed = attempt(errors, f"graphs={graphs}", partial(graph_calls, device, graphs, q, x))
    if graphed is not None:
        encode["vqkit_encode_graphed"] = graphed["encode"].call
        step["vqkit_step_graphed"] = graphed["step"].call
    repeats_encode, repeats_train, warmup = repeats
    t_encode = medians(race_on(device, encode, repeats_encode, warmup))
    t_step = medians(race_on(device, step, repeats_train, warmup))
    ratios = {**_ratios(t_encode, "matmul"), **_ratios(t_step, "matmul")}
    result = {
        "n": n,
        "dim": dim,
        "k": k,
        "dtype": "fp32",
        "graphs": graphs,
        "target_max_ratio_to_matmul": TARGET_RATIO,
        "encode_median_s": t_encode,
        "step_median_s": t_step,
        "ratio_to_matmul": ratios,
        "step_ratio_to_matmul_step": _ratios(t_step, "matmul_step"),
        "meets_target": {name: ratio <= TARGET_RATIO for name, ratio in ratios.items()},
        "graph_matches_eager": None if graphed is None else graphed["matches_eager"],
        "errors": errors,
        "notes": notes,
    }
    del encode, step, graphed
    if device.is_cuda:
        torch.cuda.empty_cache()
    return result
