"""Multi-process (2 CPU ranks, gloo) checks of codebook-statistics sync through ``vqkit.distributed``.

One module-scoped launch spawns two worker processes that join a gloo group through a ``file://`` store in a
temporary directory and run every case below in turn (spawning and importing torch twice costs seconds, so it
is done once): each case trains quantizers on the rank's share of the same seeded batches and ``torch.save``s
plain tensors. The tests, in the parent process, then check that

* ranks hold bit-identical codebook state (identical all-reduced / gathered inputs, identical arithmetic), and
* where the math says so, that state equals a single-process run on the concatenated batch (``allclose``: the
  all-reduced sums are added in a different order than a single ``index_add_``).

A hang (e.g. one rank skipping a collective) fails the tests: the workers' collectives time out and the
parent kills them after ``TIMEOUT_S``. A case that raises fails its own test (with the worker's traceback) and
every later case; the cases that finished before it are still checked.
"""

from __future__ import annotations

import datetime
import inspect
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vqkit import distributed
from vqkit.metrics import CodebookUsage
from vqkit.quantizers import IVQ, VQ, LooC, ProductVQ, ResidualVQ

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is unavailable",
)

WORLD = 2
DIM = 8
BATCH = 64
STEPS = 4
TIMEOUT_S = 90.0  # the whole launch (spawn, imports, every case); collectives time out before that
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=30)
TOL = {"rtol": 1e-5, "atol": 1e-6}
CODEBOOK_STATE = ("weight", "cluster_size", "ema_sum", "usage", "step")

Result = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------- data
def _batch(step: int, n: int = BATCH) -> torch.Tensor:
    """The global batch of ``step``: the same on every process (clustered, so k-means has structure)."""
    centres = torch.randn(6, DIM, generator=torch.Generator().manual_seed(123)) * 2.0
    g = torch.Generator().manual_seed(1000 + step)
    pick = torch.randint(len(centres), (n,), generator=g)
    return centres[pick] + 0.3 * torch.randn(n, DIM, generator=g)


def _share(x: torch.Tensor, rank: int, sizes: tuple[int, ...] | None = None) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of ``x`` (equal halves by default), so rank order == batch order."""
    if sizes is None:
        return x.chunk(WORLD)[rank]
    return torch.split(x, list(sizes))[rank]


def _codebook_state(module: nn.Module, prefix: str) -> Result:
    """Every codebook statistic of every ``Codebook`` inside ``module`` (cloned)."""
    out: Result = {}
    for name, sub in module.named_modules():
        if type(sub).__name__ == "Codebook":
            for field in CODEBOOK_STATE:
                if hasattr(sub, field):
                    out[f"{prefix}.{name}.{field}"] = getattr(sub, field).detach().clone()
    assert out, "no codebook found"
    return out


def _train_ema(q: nn.Module, rank: int | None, sizes: tuple[int, ...] | None = None) -> None:
    """Forward-only training (EMA updates); ``rank=None``: the single-process reference on the whole batch."""
    q.train()
    for step in range(STEPS):
        x = _batch(step)
        q(x if rank is None else _share(x, rank, sizes))


# ---------------------------------------------------------------------------------------------- DDP model
class _Net(nn.Module):
    """A linear encoder in front of a grad-mode VQ (or ``quantizer``), so DDP averages encoder and codebook
    gradients."""

    def __init__(self, quantizer: nn.Module | None = None, **vq_kwargs: Any) -> None:
        super().__init__()
        self.enc = nn.Linear(DIM, DIM)
        self.vq = quantizer if quantizer is not None else VQ(DIM, 16, update="grad", **vq_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.vq(self.enc(x))
        # Every term is a mean over elements, so with equal shares the DDP average of the per-rank gradients
        # is the gradient of the same loss on the concatenated batch.
        return out.quantized.pow(2).mean() + out.loss


# The papers' quantizers under DDP: IVQ (k-means init gathered, structure losses on the parameters) and LooC
# (every sub-vector against one codebook, CVQ anchors over all ranks).
PAPER_QUANTIZERS: dict[str, Callable[[], nn.Module]] = {
    "ivq": lambda: IVQ(DIM, "bottom-up", lines=4),
    "looc": lambda: LooC(DIM, 16, 2),
}


def _ddp(net: nn.Module) -> nn.parallel.DistributedDataParallel:
    # No buffer broadcast before each forward: DDP must not paper over unsynced codebook buffers
    # (cluster_size, usage); vqkit's own collectives have to keep them equal. (Newer torch renamed the flag.)
    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    flag = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return nn.parallel.DistributedDataParallel(net, **{flag: False})


def _train_grad(model: nn.Module, rank: int | None) -> Result:
    """SGD steps; records the codebook state and the encoder weight after every step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    history: dict[str, list[torch.Tensor]] = {}
    model.train()
    for step in range(STEPS):
        x = _batch(step)
        opt.zero_grad()
        loss = model(x if rank is None else _share(x, rank))
        loss.backward()
        opt.step()
        state = _codebook_state(inner.vq, "vq")
        state["enc.weight"] = inner.enc.weight.detach().clone()
        for key, value in state.items():
            history.setdefault(key, []).append(value)
    return {key: torch.stack(values) for key, values in history.items()}


# ---------------------------------------------------------------------------------------------- quantizers
def _ema_vq(**kwargs: Any) -> VQ:
    return VQ(DIM, 16, update="ema", init="kmeans", **kwargs)


def _rvq() -> ResidualVQ:
    return ResidualVQ(DIM, 8, num_quantizers=3, update="ema", init="kmeans")


def _pvq() -> ProductVQ:
    return ProductVQ(DIM, 8, num_groups=2, update="ema", init="kmeans")


UNEVEN = (40, 24)
EMPTY_SHARE = (BATCH, 0)  # rank 1 holds no vectors at all
RESTARTS = {"dead": {"restart": "dead"}, "anchor": {"restart": "anchor", "distance": "cosine"}}


def _usage_codes(rank: int | None) -> list[torch.Tensor]:
    """Two update batches of codes ``[N, 2]`` (alphabets 8 and 16). Position 0: rank 0 only uses codes 0-3,
    rank 1 only codes 4-7, so the global figures differ from either rank's own."""
    batches = []
    for i in range(2):
        g = torch.Generator().manual_seed(7 + i)
        parts = []
        for r in range(WORLD):
            pos0 = torch.randint(4, (20 + 5 * r,), generator=g) + 4 * r
            pos1 = torch.randint(16 - 6 * r, (20 + 5 * r,), generator=g)
            parts.append(torch.stack([pos0, pos1], dim=1))
        batches.append(torch.cat(parts) if rank is None else parts[rank])
    return batches


def _usage_result(usage: CodebookUsage, prefix: str) -> Result:
    return {f"{prefix}/{k}": torch.tensor(v, dtype=torch.float64) for k, v in usage.compute().items()}


# ---------------------------------------------------------------------------------------------- worker cases
# Each case runs on every rank, gets its rank and an ``init`` callable (idempotent) that joins the group.
def _case_late_init(rank: int, init: Callable[[], None]) -> Result:
    # Runs first, so the process group really does not exist yet when these are built.
    assert not dist.is_initialized()
    torch.manual_seed(0)
    q = _ema_vq()
    usage = CodebookUsage(q.alphabet_sizes)
    init()
    q.train()
    for step in range(STEPS):
        usage.update(q(_share(_batch(step), rank)).codes)
    return {**_codebook_state(q, "vq"), **_usage_result(usage, "usage")}


def _case_ema_kmeans(rank: int, init: Callable[[], None]) -> Result:
    init()
    torch.manual_seed(0)
    q = _ema_vq()
    _train_ema(q, rank)
    torch.manual_seed(0)
    uneven = _ema_vq()
    _train_ema(uneven, rank, UNEVEN)
    return {**_codebook_state(q, "even"), **_codebook_state(uneven, "uneven")}


def _case_ddp(restart: str) -> Callable[[int, Callable[[], None]], Result]:
    def case(rank: int, init: Callable[[], None]) -> Result:
        init()
        torch.manual_seed(0)  # the same on every rank (DDP also broadcasts rank 0's parameters at wrap time)
        ddp = _ddp(_Net(**RESTARTS[restart]))
        torch.manual_seed(100 + rank)  # restart candidates come from each rank's own RNG stream
        return _train_grad(ddp, rank)

    return case


def _case_papers(rank: int, init: Callable[[], None]) -> Result:
    init()
    out: Result = {}
    for name, build in PAPER_QUANTIZERS.items():
        torch.manual_seed(0)
        history = _train_grad(_ddp(_Net(build())), rank)
        out.update({f"{name}/{key}": value for key, value in history.items()})
    return out


def _case_composite(rank: int, init: Callable[[], None]) -> Result:
    init()
    torch.manual_seed(0)
    rvq = _rvq()
    _train_ema(rvq, rank)
    torch.manual_seed(0)
    pvq = _pvq()
    pvq.set_process_group(dist.new_group(ranks=list(range(WORLD))))  # an explicit group, not the default
    _train_ema(pvq, rank)
    return {**_codebook_state(rvq, "rvq"), **_codebook_state(pvq, "pvq")}


def _gather_part(rank: int) -> torch.Tensor:
    """Uneven rows per rank (3, then 1) for ``all_gather_cat``."""
    return torch.arange(6.0).reshape(3, 2)[: 3 - 2 * rank] + 100.0 * rank


def _case_groups(rank: int, init: Callable[[], None]) -> Result:
    init()
    singletons = [dist.new_group(ranks=[r]) for r in range(WORLD)]  # every rank creates every group, in order
    torch.manual_seed(0)
    q = _ema_vq()
    q.set_process_group(singletons[rank])  # a one-rank group: the quantizer must not sync at all
    _train_ema(q, rank)
    whole = dist.new_group(ranks=list(range(WORLD)))
    return {
        **_codebook_state(q, "alone"),
        "gathered": distributed.all_gather_cat(_gather_part(rank)),
        "gathered_group": distributed.all_gather_cat(_gather_part(rank), whole),
        "broadcast": distributed.broadcast_(torch.full((3,), float(rank)), src=1),
        "broadcast_group": distributed.broadcast_(torch.full((3,), float(rank)), src=1, group=whole),
        "summed": distributed.all_reduce_sum_(torch.full((2,), rank + 1.0), whole),
        "world": torch.tensor([distributed.world_size(), distributed.rank(), distributed.world_size(whole)]),
    }


def _case_usage(rank: int, init: Callable[[], None]) -> Result:
    init()
    usage = CodebookUsage([8, 16])
    for codes in _usage_codes(rank):
        usage.update(codes)
    local = usage.counts.clone()
    first = _usage_result(usage, "first")
    second = _usage_result(usage, "second")  # compute must not fold the reduced counts into the local ones
    assert torch.equal(usage.counts, local)
    return {**first, **second}


def _case_empty_share(rank: int, init: Callable[[], None]) -> Result:
    init()
    out: Result = {}
    for name, kwargs in RESTARTS.items():
        torch.manual_seed(0)  # rank 0 draws the very restart candidates a single process would draw
        q = _ema_vq(**kwargs)
        _train_ema(q, rank, EMPTY_SHARE)
        out.update(_codebook_state(q, name))
    return out


def _case_masked(rank: int, init: Callable[[], None]) -> Result:
    """Each rank's share padded with garbage rows (uneven shares, rank 1 mostly padding), masked out."""
    init()
    torch.manual_seed(0)
    q = _ema_vq()
    q.train()
    for step in range(STEPS):
        real = _share(_batch(step), rank, UNEVEN)
        pad = 1e3 * torch.randn(7 + 9 * rank, DIM, generator=torch.Generator().manual_seed(step))
        x = torch.cat([real, pad])[None]  # [1, n + pad, D]
        mask = (torch.arange(x.shape[1]) < real.shape[0])[None]
        q(x, mask=mask)
    return _codebook_state(q, "masked")


CASES: dict[str, Callable[[int, Callable[[], None]], Result]] = {
    "late_init": _case_late_init,  # must stay first
    "ema_kmeans": _case_ema_kmeans,
    "ddp_dead": _case_ddp("dead"),
    "ddp_anchor": _case_ddp("anchor"),
    "composite": _case_composite,
    "papers": _case_papers,
    "groups": _case_groups,
    "usage": _case_usage,
    "empty_share": _case_empty_share,
    "masked": _case_masked,
}


def _worker(rank: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)

    def init() -> None:
        if not dist.is_initialized():
            dist.init_process_group(
                "gloo", init_method=init_method, rank=rank, world_size=WORLD, timeout=COLLECTIVE_TIMEOUT
            )

    try:
        for case, run in CASES.items():
            try:
                result = run(rank, init)
            except BaseException:
                Path(out_dir, f"{case}_rank{rank}.err").write_text(traceback.format_exc())
                raise
            torch.save(result, os.path.join(out_dir, f"{case}_rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- launcher
@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[Result]]:
    """Run every case on ``WORLD`` spawned ranks once; returns ``case -> per-rank results`` (or fails)."""
    out_dir = tmp_path_factory.mktemp("distributed")
    init_method = (out_dir / "pg_store").as_uri()
    ctx = mp.start_processes(
        _worker, args=(init_method, str(out_dir)), nprocs=WORLD, join=False, start_method="spawn"
    )
    problem = ""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=0.5):
            if time.monotonic() > deadline:
                problem = f"workers did not finish within {TIMEOUT_S:.0f} s (deadlock?)"
                break
    except Exception as err:  # a worker raised or died; join() has terminated the others
        problem = f"a worker failed: {err}"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
            proc.join(5)

    def results(case: str) -> list[Result]:
        paths = [out_dir / f"{case}_rank{r}.pt" for r in range(WORLD)]
        if not all(p.exists() for p in paths):
            errors = "\n".join(p.read_text() for p in sorted(out_dir.glob(f"{case}_rank*.err")))
            pytest.fail(f"case {case!r} produced no results: {problem or 'no error reported'}\n{errors}")
        return [torch.load(p, weights_only=True) for p in paths]

    return results


def _assert_ranks_identical(results: list[Result]) -> None:
    keys = set(results[0])
    for r, res in enumerate(results[1:], start=1):
        assert set(res) == keys
        for key in sorted(keys):
            assert torch.equal(res[key], results[0][key]), f"{key}: rank {r} differs from rank 0"


def _assert_matches(result: Result, reference: Result, **tol: float) -> None:
    assert set(result) == set(reference)
    for key in sorted(reference):
        torch.testing.assert_close(
            result[key], reference[key], **(tol or TOL), msg=lambda m, k=key: f"{k}: {m}"
        )


# ---------------------------------------------------------------------------------------------- tests
def test_ema_kmeans_matches_single_process(launch: Callable[[str], list[Result]]) -> None:
    results = launch("ema_kmeans")
    _assert_ranks_identical(results)
    # k-means runs on the rank-ordered gather (== the concatenated batch) and EMA sums/counts are all-reduced,
    # so two ranks on halves equal one process on the whole batch; so do uneven shares.
    torch.manual_seed(0)
    q = _ema_vq()
    _train_ema(q, None)
    reference = _codebook_state(q, "even")
    reference.update({"un" + k: v for k, v in reference.items()})
    _assert_matches(results[0], reference)
    assert int(results[0]["even.codebook.step"]) == STEPS
    # The EMA counts follow the global batch, not one rank's half.
    assert float(results[0]["even.codebook.cluster_size"].sum()) > 0.75 * BATCH


@pytest.mark.parametrize("restart", ["dead", "anchor"])
def test_ddp_grad_codebooks_identical(launch: Callable[[str], list[Result]], restart: str) -> None:
    results = launch(f"ddp_{restart}")
    _assert_ranks_identical(results)  # histories: identical after every optimizer step
    state = results[0]
    assert state["vq.codebook.step"].tolist() == list(range(1, STEPS + 1))
    if restart == "dead":
        # Restarts happened (a restarted code's count is set to its grace count, threshold / decay^100 at the
        # defaults) and were identical on both ranks. No single-process comparison: candidates come from each
        # rank's own random stream.
        grace = 1.0 / 0.99**100
        assert bool((state["vq.codebook.cluster_size"] - grace).abs().lt(1e-4).any())
        return
    # Anchors (cosine): DDP averages the gradients of each rank's mean loss over equal shares, which is the
    # gradient of the mean loss on the concatenated batch; counts/usage are all-reduced, and each code's
    # anchor is its nearest feature over all ranks. The anchor move edits the weights after the lookup and
    # before backward, in both runs alike (the codebook gradient uses only the looked-up values). So one
    # process on the concatenated batch gives the same history, up to summation order.
    torch.manual_seed(0)
    reference = _train_grad(_Net(**RESTARTS[restart]), None)
    _assert_matches(state, reference, rtol=1e-4, atol=1e-5)


def test_papers_quantizers_under_ddp_match_one_process(launch: Callable[[str], list[Result]]) -> None:
    results = launch("papers")
    _assert_ranks_identical(results)
    # Equal shares: DDP's average of per-rank mean-loss gradients is the full-batch gradient; k-means init and
    # anchors see the gathered batch; the structure losses depend on the parameters only.
    for name, build in PAPER_QUANTIZERS.items():
        torch.manual_seed(0)
        reference = _train_grad(_Net(build()), None)
        state = {k.split("/", 1)[1]: v for k, v in results[0].items() if k.startswith(f"{name}/")}
        _assert_matches(state, reference, rtol=1e-4, atol=1e-5)


def test_residual_and_product_ema_identical(launch: Callable[[str], list[Result]]) -> None:
    results = launch("composite")
    _assert_ranks_identical(results)
    # Each level/group sees exactly the single-process inputs (rank-ordered gathers), so it also matches.
    torch.manual_seed(0)
    rvq = _rvq()
    _train_ema(rvq, None)
    torch.manual_seed(0)
    pvq = _pvq()
    _train_ema(pvq, None)
    _assert_matches(results[0], {**_codebook_state(rvq, "rvq"), **_codebook_state(pvq, "pvq")})


def test_explicit_groups_and_helpers(launch: Callable[[str], list[Result]]) -> None:
    results = launch("groups")
    # A quantizer given a one-rank group trains alone: rank r equals one process on its own half (if it
    # ignored the group and used the default one, it would equal the run on the whole batch instead).
    for rank, res in enumerate(results):
        torch.manual_seed(0)
        q = _ema_vq()
        _train_ema(q, rank)
        _assert_matches({k: v for k, v in res.items() if k.startswith("alone.")}, _codebook_state(q, "alone"))
    assert not torch.allclose(results[0]["alone.codebook.weight"], results[1]["alone.codebook.weight"])
    expected_gather = torch.cat([_gather_part(r) for r in range(WORLD)])
    for rank, res in enumerate(results):
        for suffix in ("", "_group"):
            assert torch.equal(res[f"gathered{suffix}"], expected_gather)
            assert torch.equal(res[f"broadcast{suffix}"], torch.ones(3))  # rank 1's copy
        assert torch.equal(res["summed"], torch.full((2,), 3.0))
        assert res["world"].tolist() == [WORLD, rank, WORLD]


def test_codebook_usage_reports_global_figures(launch: Callable[[str], list[Result]]) -> None:
    results = launch("usage")
    _assert_ranks_identical(results)
    single = CodebookUsage([8, 16])
    for codes in _usage_codes(None):
        single.update(codes)
    expected = single.compute()
    for prefix in ("first", "second"):
        got = {k.split("/", 1)[1]: float(v) for k, v in results[0].items() if k.startswith(prefix + "/")}
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    # Neither rank alone uses all of position 0's codes or holds all the vectors.
    assert expected["utilization/0"] == 1.0 and expected["num_vectors"] == 2 * (20 + 25)


def test_quantizer_built_before_init_process_group_syncs(launch: Callable[[str], list[Result]]) -> None:
    results = launch("late_init")
    _assert_ranks_identical(results)
    torch.manual_seed(0)
    q = _ema_vq()
    usage = CodebookUsage(q.alphabet_sizes)
    q.train()
    for step in range(STEPS):
        usage.update(q(_batch(step)).codes)
    _assert_matches(results[0], {**_codebook_state(q, "vq"), **_usage_result(usage, "usage")})


def test_rank_without_vectors_joins_restart_collectives(launch: Callable[[str], list[Result]]) -> None:
    # Rank 1 quantizes zero vectors every step. It must still join every gather (dead-code candidates, CVQ
    # anchors), or rank 0 waits forever; and since it contributes nothing, the result is that of one process
    # on rank 0's batch (restart candidates included: rank 0's random draws are the single process's).
    results = launch("empty_share")
    _assert_ranks_identical(results)
    reference: Result = {}
    for name, kwargs in RESTARTS.items():
        torch.manual_seed(0)
        q = _ema_vq(**kwargs)
        _train_ema(q, None)
        reference.update(_codebook_state(q, name))
    _assert_matches(results[0], reference)


def test_padding_masks_under_ddp_match_one_process_on_the_real_vectors(
    launch: Callable[[str], list[Result]],
) -> None:
    # Padded rows reach no statistic on any rank: k-means on the gathered real vectors, EMA sums and counts
    # all-reduced over real vectors only, so the result is one process on the whole (unpadded) batch.
    results = launch("masked")
    _assert_ranks_identical(results)
    torch.manual_seed(0)
    q = _ema_vq()
    _train_ema(q, None)
    _assert_matches(
        results[0], {k.replace("even", "masked", 1): v for k, v in _codebook_state(q, "even").items()}
    )
