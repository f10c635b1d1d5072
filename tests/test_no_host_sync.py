"""No host sync in the hot path: after a warm-up step, a training forward + backward and an eval ``encode`` of
every registered quantizer (over the option grid) call nothing that reads a device value back to the host.

On CPU nothing waits, so the audit counts calls instead: every Python-level conversion of a tensor to a host
value (``item``, ``tolist``, ``cpu``, ``numpy``, ``bool`` / ``int`` / ``float`` / ``index`` of a tensor) and every op
whose CUDA kernel reads a value back to size its output or to check its input (``nonzero``, boolean-mask
indexing, ``unique``, ``bincount``, ``multinomial``, ``masked_select``, ``repeat_interleave`` with tensor
repeats, ``one_hot`` without ``num_classes``, ``equal`` / ``allclose``, the ``linalg`` decompositions) is
counted, with the vqkit function that made the call. What it cannot see: ``.to("cpu")`` (on CPU it is the same
call as a move to the tensor's own device) and syncs inside other C++ kernels; ``test_gpu_audit_in_sync_debug_mode``
runs the same steps under CUDA's own sync detector where a GPU is present.

``EXCEPTIONS`` lists the syncs that stay in the audited steps, each with its reason (none at present).
Quantizers are built with ``allow_nonfinite=True``: the NaN/Inf input check is one documented sync per call.
``DOCUMENTED_SYNCS`` lists the paths outside the audit that do sync (that check, decode's range check, quantizer
dropout, padding masks, SimVQ's rank refresh), and a test holds each to exactly its listed syncs.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vqkit
from tests.conftest import DIM, small_kwargs
from vqkit.functional.kmeans import kmeans, kmeans_plusplus
from vqkit.quantizers.simvq import RANK_RTOL

CONVERSIONS = ("item", "tolist", "cpu", "numpy", "__array__", "__bool__", "__int__", "__float__", "__index__")
SIZED = ("nonzero", "unique", "unique_consecutive", "bincount", "multinomial", "masked_select", "is_nonzero")
TENSOR_METHODS = CONVERSIONS + SIZED
"""``torch.Tensor`` methods that read a value back whenever they run (on a CUDA tensor)."""

TORCH_FUNCTIONS = (*SIZED, "argwhere", "equal", "allclose")
LINALG_FUNCTIONS = (
    "svd",
    "svdvals",
    "eig",
    "eigvals",
    "eigh",
    "eigvalsh",
    "inv",
    "cholesky",
    "solve",
    "lstsq",
)
"""``torch.linalg`` calls that check their result on the host on CUDA ("synchronizes that device with the CPU")."""

EXCEPTIONS: dict[str, str] = {}
"""``"<op> in <vqkit file>:<function>"`` -> why the sync stays. Empty: every registered quantizer's training step
and encode are sync-free after warm-up."""


PACKAGE = str(Path(vqkit.__file__).resolve().parent) + os.sep


def _call_site() -> str:
    """The innermost vqkit frame above the counting wrapper: ``"quantizers/vq.py:_quantize"``."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(PACKAGE):
            return f"{Path(path[len(PACKAGE) :]).as_posix()}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "outside vqkit"


class SyncCounter:
    """``Counter`` of ``"<op> in <call site>"`` for the sync operations called while ``active``."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.active = False

    def wrap(self, name: str, original: Callable[..., Any], syncs: Callable[..., bool] | None = None) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.active and (syncs is None or syncs(*args, **kwargs)):
                self.active = False  # the original may call other counted ops: count the outermost only
                try:
                    self.calls[f"{name} in {_call_site()}"] += 1
                    return original(*args, **kwargs)
                finally:
                    self.active = True
            return original(*args, **kwargs)

        return counted

    @contextmanager
    def counting(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False


def _masks(_self: torch.Tensor, index: object, *_value: object) -> bool:
    """Indexing (``__getitem__`` / ``__setitem__``) with a boolean mask: a ``nonzero`` inside."""
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in items)


def _condition_only(*args: object, **kwargs: object) -> bool:
    """``torch.where(condition)``: ``nonzero`` (the three-argument form is elementwise)."""
    return len(args) + len(kwargs) == 1


def _tensor_repeats(*args: object, **kwargs: object) -> bool:
    """``repeat_interleave`` with tensor repeats and no ``output_size``: it reads the output size back."""
    return "output_size" not in kwargs and any(isinstance(a, torch.Tensor) for a in args[1:] or args)


def _no_num_classes(*args: object, **kwargs: object) -> bool:
    """``one_hot`` without ``num_classes``: it reads the largest class back."""
    return (args[1] if len(args) > 1 else kwargs.get("num_classes", -1)) == -1


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> SyncCounter:
    counter = SyncCounter()
    for name in TENSOR_METHODS:
        monkeypatch.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
    for name in TORCH_FUNCTIONS:
        monkeypatch.setattr(torch, name, counter.wrap(name, getattr(torch, name)))
    for name in LINALG_FUNCTIONS:
        monkeypatch.setattr(torch.linalg, name, counter.wrap(f"linalg.{name}", getattr(torch.linalg, name)))
    for name in ("__getitem__", "__setitem__"):
        wrapped = counter.wrap(f"bool-mask {name}", getattr(torch.Tensor, name), _masks)
        monkeypatch.setattr(torch.Tensor, name, wrapped)
    monkeypatch.setattr(torch, "where", counter.wrap("where(condition)", torch.where, _condition_only))
    for owner in (torch, torch.Tensor):
        wrapped = counter.wrap("repeat_interleave", owner.repeat_interleave, _tensor_repeats)
        monkeypatch.setattr(owner, "repeat_interleave", wrapped)
    monkeypatch.setattr(F, "one_hot", counter.wrap("one_hot without num_classes", F.one_hot, _no_num_classes))
    return counter


def _training_step(q: vqkit.Quantizer, x: torch.Tensor) -> None:
    q.train()
    out = q(x.clone().requires_grad_(True))
    (out.quantized.square().mean() + out.loss).backward()


def test_training_step_and_encode_do_not_sync(
    quantizer_case: tuple[str, dict[str, object]], syncs: SyncCounter
) -> None:
    name, kwargs = quantizer_case
    q = vqkit.create_quantizer(name, **{**kwargs, "allow_nonfinite": True})
    x = torch.randn(4, 20, DIM)
    _training_step(q, x)  # warm-up: first-batch k-means and data init, SimVQ's first SVD
    with syncs.counting():
        _training_step(q, x)
        q.eval()
        q.encode(x)
    unexpected = {call: n for call, n in syncs.calls.items() if call not in EXCEPTIONS}
    assert not unexpected, f"{name}: host syncs {unexpected}"


DOCUMENTED_SYNCS: dict[str, tuple[set[str], str]] = {
    "the NaN/Inf input check (allow_nonfinite=False)": (
        {"tolist in functional/numerics.py:all_finite"},
        "one sync per forward or encode, documented on Quantizer; allow_nonfinite=True (or torch.compile) skips it",
    ),
    "decode's range check of the codes": (
        {"__bool__ in _validate.py:check_codes_in_range"},
        "decode rejects out-of-range codes (the contract); compiled code skips the check",
    ),
    "quantizer dropout": (
        {"nonzero in quantizers/composite.py:_quantize_levels"},
        "a level an item dropped sees only the other items' vectors: the row subset has a data-dependent size",
    ),
    "a padding mask": (
        {"nonzero in quantizers/masking.py:real_rows"},
        "the real rows alone go through the training forward: their number depends on the mask",
    ),
    "SimVQ's rank refresh": (
        {"linalg.svdvals in quantizers/simvq.py:_diagnostics"},
        "the SVD behind w_rank: first and every stats_every-th training forward, first eval forward after training",
    ),
}
"""The syncs outside the audit above, each with its reason; ``test_documented_syncs_are_the_only_ones`` checks that
each of these paths makes exactly the listed syncs (so the list stays true)."""


def _documented_paths(syncs: SyncCounter) -> dict[str, Counter[str]]:
    x = torch.randn(4, 20, DIM)
    found: dict[str, Counter[str]] = {}

    def run(label: str, fn: Callable[[], object]) -> None:
        syncs.calls.clear()
        with syncs.counting():
            fn()
        found[label] = Counter(syncs.calls)

    vq = vqkit.create_quantizer("vq", **small_kwargs("vq"))
    run("the NaN/Inf input check (allow_nonfinite=False)", lambda: vq.eval().encode(x))
    codes = vq.encode(x)
    run("decode's range check of the codes", lambda: vq.decode(codes))
    rvq = vqkit.create_quantizer(
        "residual_vq", **small_kwargs("residual_vq"), dropout=1.0, allow_nonfinite=True
    )
    _training_step(rvq, x)
    run("quantizer dropout", lambda: _training_step(rvq, x))
    vq.allow_nonfinite = True
    mask = torch.arange(20).expand(4, 20) < torch.tensor([[20], [15], [9], [3]])
    run("a padding mask", lambda: vq.train()(x, mask=mask))
    simvq = vqkit.create_quantizer("simvq", **small_kwargs("simvq"), allow_nonfinite=True)
    run("SimVQ's rank refresh", lambda: simvq.train()(x))
    return found


def test_documented_syncs_are_the_only_ones(syncs: SyncCounter) -> None:
    found = _documented_paths(syncs)
    assert set(found) == set(DOCUMENTED_SYNCS)
    for label, (expected, _reason) in DOCUMENTED_SYNCS.items():
        assert set(found[label]) == expected, (label, dict(found[label]))


def test_the_counter_sees_each_kind_of_sync(syncs: SyncCounter) -> None:
    t = torch.tensor([0.0, 2.0, 0.0, 3.0])
    with syncs.counting():
        t.sum().item()
        bool(t.any())
        float(t[1])
        t.tolist()
        t[t > 0]
        t.nonzero()
        torch.where(t > 0)
        torch.unique(t)
        F.one_hot(t.long())
        torch.linalg.svdvals(t.reshape(2, 2))
    assert sum(syncs.calls.values()) == 10, dict(syncs.calls)
    assert all(call.endswith("outside vqkit") for call in syncs.calls)
    syncs.calls.clear()
    with syncs.counting():  # their sync-free relatives
        t[torch.tensor([1, 3])]
        torch.where(t > 0, t, 0.0)
        F.one_hot(t.long(), 4)
        t.index_select(0, torch.tensor([0]))
        torch.nonzero_static(t, size=2)
    assert not syncs.calls, dict(syncs.calls)


def test_kmeans_seeding_and_lloyd_do_not_sync(syncs: SyncCounter) -> None:
    x = torch.randn(500, 8)
    with syncs.counting():
        kmeans_plusplus(x, 32, generator=torch.Generator().manual_seed(0))
        kmeans_plusplus(torch.zeros(10, 3), 4)  # every point on a centre: the uniform fallback
        kmeans(x, 32, iters=3, distance="cosine", generator=torch.Generator().manual_seed(0))
    assert not syncs.calls, dict(syncs.calls)


def test_large_alphabet_usage_counts_without_unique() -> None:
    """Alphabets beyond ``DENSE_COUNT_LIMIT`` count the runs of the sorted codes; the result equals numpy's
    counting of the same codes (``NOT_CODED`` entries skipped)."""
    from vqkit.functional.stats import DENSE_COUNT_LIMIT, batch_usage

    size = 4 * DENSE_COUNT_LIMIT
    codes = torch.randint(0, 40, (300,)) * 1_000_003 % size
    codes[::7] = -1
    utilization, perplexity = batch_usage(codes, size)
    kept = codes.numpy()[codes.numpy() >= 0]
    _, counts = np.unique(kept, return_counts=True)
    p = counts / counts.sum()
    assert float(utilization) == pytest.approx(len(counts) / size, rel=1e-6)
    assert float(perplexity) == pytest.approx(2 ** -(p * np.log2(p)).sum(), rel=1e-5)
    assert batch_usage(torch.full((5,), -1), size)[0] == 0


def _numpy_ranks(w: np.ndarray) -> tuple[float, float, float]:
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    p = s[s > 0] / s.sum()
    return (
        float((s > RANK_RTOL * s.max()).sum()),
        float(np.exp(-(p * np.log(p)).sum())),
        float(np.linalg.norm(w)),
    )


def test_simvq_ranks_are_lazy_and_match_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    svds: list[int] = []
    original = torch.linalg.svdvals

    def counted(a: torch.Tensor) -> torch.Tensor:
        svds.append(1)
        return original(a)

    monkeypatch.setattr(torch.linalg, "svdvals", counted)
    q = vqkit.SimVQ(8, 32, stats_every=3)
    opt = torch.optim.SGD(q.parameters(), lr=0.5)
    x = torch.randn(64, 8)
    seen: list[tuple[float, float]] = []
    for step in range(1, 8):
        weight = q.transform.weight.detach().numpy().copy()
        out = q.train()(x)
        metrics = out.metrics
        rank, effective, frobenius = _numpy_ranks(weight)
        assert float(metrics["w_frobenius"]) == pytest.approx(frobenius, rel=1e-5)  # fresh every forward
        if step in (1, 3, 6):  # refreshed: the first and every 3rd training forward
            assert float(metrics["w_rank"]) == rank
            assert float(metrics["w_effective_rank"]) == pytest.approx(effective, rel=1e-5)
        else:  # the last refresh's values
            assert (float(metrics["w_rank"]), float(metrics["w_effective_rank"])) == seen[-1]
        seen.append((float(metrics["w_rank"]), float(metrics["w_effective_rank"])))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert len(svds) == 3
    q.eval()
    for _ in range(3):  # an evaluation loop: one SVD, of the trained W
        metrics = q(x).metrics
    assert len(svds) == 4
    _, effective, _ = _numpy_ranks(q.transform.weight.detach().numpy())
    assert float(metrics["w_effective_rank"]) == pytest.approx(effective, rel=1e-5)
    q.load_state_dict(vqkit.SimVQ(8, 32).state_dict())  # new weights: the next forward recomputes
    q(x)
    assert len(svds) == 5
    assert set(q.transform_stats()) == {"w_rank", "w_effective_rank", "w_frobenius"} and len(svds) == 6


def test_simvq_ranks_show_a_decline() -> None:
    q = vqkit.SimVQ(6, 16)
    with torch.no_grad():
        q.transform.weight.copy_(torch.eye(6))
    full = q.transform_stats()
    assert float(full["w_rank"]) == 6 and float(full["w_effective_rank"]) == pytest.approx(6.0)
    with torch.no_grad():  # two directions shrink to 1e-3: not lost numerically, lost to the codebook
        q.transform.weight.copy_(torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, 1e-3, 1e-3])))
    shrunk = q.transform_stats()
    assert float(shrunk["w_rank"]) == 4 and 4.0 < float(shrunk["w_effective_rank"]) < 4.05
    with torch.no_grad():
        q.transform.weight.copy_(torch.diag(torch.tensor([2.0, 1.0, 1.0, 0.0, 0.0, 0.0])))
    stats = q.transform_stats()
    assert float(stats["w_rank"]) == 3 and float(stats["w_effective_rank"]) == pytest.approx(2**1.5)
    with torch.no_grad():
        q.transform.weight.zero_()
    assert {k: float(v) for k, v in q.transform_stats().items()} == {
        "w_rank": 0.0,
        "w_effective_rank": 0.0,
        "w_frobenius": 0.0,
    }
    with pytest.raises(ValueError, match="stats_every"):
        vqkit.SimVQ(6, 16, stats_every=0)


@pytest.mark.gpu
def test_gpu_audit_in_sync_debug_mode(quantizer_name: str) -> None:
    """The audit's steps on CUDA under ``torch.cuda.set_sync_debug_mode("warn")``, which warns at every
    synchronizing CUDA call, C++ kernels included; no warning may come from vqkit."""
    import warnings

    q = vqkit.create_quantizer(quantizer_name, **small_kwargs(quantizer_name), allow_nonfinite=True).cuda()
    x = torch.randn(4, 20, DIM, device="cuda")
    _training_step(q, x)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _training_step(q, x)
            q.eval()
            q.encode(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
    assert not found, found
