"""Per-call work a user did not ask for (issue 14): SimVQ's diagnostics and k-means++ seeding, before and after.

* **SimVQ** at N=16384, D=64, K=1024: three copies with the same state race round-robin
  (``bench_common.race``): ``before`` computes the previous metrics on every forward (``svdvals`` of W and the
  machine-precision rank, the code this change replaced, kept here as the reference), ``now`` is ``SimVQ`` as it
  is (``w_frobenius`` every forward, the SVD every ``stats_every = 50`` training forwards), ``none`` returns no
  diagnostics at all (the floor: ``now - none`` is what the diagnostics still cost). Each is timed on a training
  step (forward, ``quantized.square().mean() + loss``, backward) and an eval forward (``no_grad``). The SVD and
  the Frobenius norm are also timed alone, and the same race runs at D=512 (``simvq_wide``), where the
  ``O(D^3)`` SVD is no longer small against the ``O(N K D)`` step.
* **k-means++ seeding** of K=1024 centres from N=20000 points of D=64: the previous loop (one ``multinomial``
  and ``.item()`` per centre, kept here as the reference) against ``vqkit.functional.kmeans_plusplus``, the host
  reads of each (``item`` and ``bool`` of a tensor, counted) and whether they pick the same centres (they
  should: the same draw on the same generator). On CPU a host read costs little; on a GPU each is a device sync
  that waits for every queued kernel, which is what the change removes.
* **CVQ's anchors** (``restart="anchor"``, LooC's default and the ``cvq`` preset): ``before`` searches a second
  time with the roles swapped for each code's nearest feature (``AnchorRestart`` without a hint, the previous
  code path), ``now`` reads it from the training search's own score tiles (``Codebook.search_for_update``:
  column minima), ``none`` is ``restart="none"`` (the floor). Training steps of LooC at N=16384, D=64 with
  2 x 32 (the 12-bit bench setting), 16 x 4 from 256 codes (the paper's) and 16 x 4 from 1,024, and of CVQ with
  1,024 codes.
* **Lazy results** (``vqkit.types.LazyScalars``): the usage metrics of every forward, and the loss terms of a
  forward without a gradient, are computed on first read. ``read`` reads every metric, per-position metric and
  loss after each call (what every call computed before), ``unread`` reads none (an inference loop, a trainer
  between logging steps): eval forwards and training steps of FSQ, LFQ, VQ and residual VQ at 8 bits.
* **The code table** (``ChannelQuantizer._values_out``): the eval forward of FSQ, LFQ and BSQ through the
  out-projection's matmul (``matmul``: the table switched off) against the gather from a table of every code's
  output (``table``), at D=64 and 256.

* **Per-call work** (``overhead_per_call.py``): a small batch's (64 vectors) eval forward and training step of
  eleven quantizers with the previous per-call work put back (``compute_dtype`` walking every parameter and
  buffer, an ``autocast`` object per call, a tensor ``isfinite`` of the input's extremes) against now.

Writes JSON (default ``benchmarks/results/bench_overhead.json``, atomically) with the ratios.

    python benchmarks/bench_overhead.py [--threads 2] [--repeats 12] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import THREADS, cpu_model, load_warning, race
from overhead_per_call import bench_per_call

import vqkit
from vqkit.functional.kmeans import kmeans_plusplus
from vqkit.quantizers import code_table as table_module
from vqkit.utils.atomic import atomic_write_text

OUT = Path(__file__).resolve().parent / "results" / "bench_overhead.json"


class EveryCallSimVQ(vqkit.SimVQ):
    """``SimVQ`` with its previous metrics: an SVD and the machine-precision rank on every forward."""

    def _diagnostics(self) -> dict[str, torch.Tensor]:
        w = self.transform.weight.detach().float()
        singular = torch.linalg.svdvals(w)
        tol = singular.max() * max(w.shape) * torch.finfo(w.dtype).eps
        return {"w_rank": (singular > tol).sum().float(), "w_frobenius": torch.linalg.norm(w)}


class BareSimVQ(vqkit.SimVQ):
    """``SimVQ`` without diagnostics: the floor."""

    def _diagnostics(self) -> dict[str, torch.Tensor]:
        return {}


@torch.no_grad()
def synced_kmeans_plusplus(x: torch.Tensor, num_centers: int, generator: torch.Generator) -> torch.Tensor:
    """The previous seeding loop (l2, K < N), verbatim in substance: one host read per centre."""
    n = x.shape[0]
    centers = x.new_empty((num_centers, x.shape[1]))
    first = int(torch.randint(n, (1,), device=x.device, generator=generator).item())
    centers[0] = x[first]
    min_d = (x - centers[0]).pow(2).sum(-1)
    for i in range(1, num_centers):
        total = min_d.sum()
        if total <= 0:
            pick = int(torch.randint(n, (1,), device=x.device, generator=generator).item())
        else:
            pick = int(torch.multinomial(min_d / total, 1, generator=generator).item())
        centers[i] = x[pick]
        torch.minimum(min_d, (x - centers[i]).pow(2).sum(-1), out=min_d)
    return centers


@contextmanager
def host_reads() -> Iterator[list[int]]:
    """Count ``Tensor.item`` and ``Tensor.__bool__`` calls inside the block (one per sync on a GPU)."""
    count = [0]
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__")}

    def counted(original: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object) -> object:
            count[0] += 1
            return original(*args)

        return call

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(original))
    try:
        yield count
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def _train_step(q: vqkit.Quantizer, x: torch.Tensor) -> vqkit.QuantizerOutput:
    q.train()
    q.zero_grad(set_to_none=True)
    out = q(x.clone().requires_grad_(True))
    (out.quantized.square().mean() + out.loss).backward()
    return out


def _eval_forward(q: vqkit.Quantizer, x: torch.Tensor) -> vqkit.QuantizerOutput:
    q.eval()
    with torch.no_grad():
        return q(x)


def _micro(fn: Callable[[], object], repeats: int = 200) -> float:
    """Best of five means over ``repeats`` calls, in microseconds."""
    fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e6


def _svdvals_us(dim: int) -> float:
    """``svdvals`` of a ``dim x dim`` Gaussian matrix: what an SVD per forward costs at other widths."""
    w = torch.randn(dim, dim, generator=torch.Generator().manual_seed(dim))
    return _micro(lambda: torch.linalg.svdvals(w), repeats=200 if dim <= 64 else 10)


def bench_simvq(
    n: int, dim: int, codes: int, repeats: int, svd_dims: tuple[int, ...] = ()
) -> dict[str, object]:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    variants: dict[str, vqkit.SimVQ] = {}
    for label, cls in (("before", EveryCallSimVQ), ("now", vqkit.SimVQ), ("none", BareSimVQ)):
        torch.manual_seed(0)
        variants[label] = cls(dim, codes)
    train = race({k: functools.partial(_train_step, q, x) for k, q in variants.items()}, repeats)
    evals = race({k: functools.partial(_eval_forward, q, x) for k, q in variants.items()}, 2 * repeats)
    w = variants["now"].transform.weight.detach()
    train_ms = {k: 1e3 * t.best for k, t in train.items()}
    eval_ms = {k: 1e3 * t.best for k, t in evals.items()}
    ratios = {}
    for kind, times in (("train", train_ms), ("eval forward", eval_ms)):
        ratios[f"{kind}: before / now"] = times["before"] / times["now"]
        ratios[f"{kind}: now / none"] = times["now"] / times["none"]
    rows = {
        "train_ms": train_ms,
        "eval_forward_ms": eval_ms,
        "median_train_ms": {k: 1e3 * t.median for k, t in train.items()},
        "median_eval_forward_ms": {k: 1e3 * t.median for k, t in evals.items()},
        "svdvals_us": _micro(lambda: torch.linalg.svdvals(w)),
        "svdvals_us_at_dim": {d: _svdvals_us(d) for d in svd_dims},
        "frobenius_us": _micro(lambda: torch.linalg.norm(w)),
        "ratios": ratios,
    }
    return {"n": n, "dim": dim, "codebook_size": codes, "stats_every": variants["now"].stats_every, **rows}


def bench_seeding(n: int, dim: int, centers: int, repeats: int) -> dict[str, object]:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(1))

    def seeded(fn: Callable[..., torch.Tensor]) -> Callable[[], object]:
        return lambda: fn(x, centers, generator=torch.Generator().manual_seed(0))

    fns = {"before": seeded(synced_kmeans_plusplus), "now": seeded(kmeans_plusplus)}
    reads = {}
    for label, fn in fns.items():
        with host_reads() as count:
            fn()
        reads[label] = count[0]
    same = torch.equal(
        synced_kmeans_plusplus(x, centers, generator=torch.Generator().manual_seed(0)),
        kmeans_plusplus(x, centers, generator=torch.Generator().manual_seed(0)),
    )
    timing = race(fns, repeats, warmup=1)
    seconds = {k: t.best for k, t in timing.items()}
    return {
        "n": n,
        "dim": dim,
        "num_centers": centers,
        "seconds": seconds,
        "median_seconds": {k: t.median for k, t in timing.items()},
        "host_reads": reads,
        "ratio before / now": seconds["before"] / seconds["now"],
        "same centres": same,
    }


class _SecondSearch:
    """``Codebook.search_for_update`` without the per-code hint: the restart searches again (the code before)."""

    def __init__(self, codebook: vqkit.quantizers.codebook.Codebook) -> None:
        self.codebook = codebook

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.codebook.search(z), None


def _anchor_variants(name: str, dim: int, kwargs: dict[str, object]) -> dict[str, vqkit.Quantizer]:
    variants: dict[str, vqkit.Quantizer] = {}
    for label in ("before", "now", "none"):
        torch.manual_seed(0)
        restart = "none" if label == "none" else "anchor"
        q = vqkit.create_quantizer(name, dim=dim, **kwargs, restart=restart)
        if label == "before":
            codebook = q.codebook
            assert isinstance(codebook, vqkit.quantizers.codebook.Codebook)
            codebook.search_for_update = _SecondSearch(codebook)  # type: ignore[method-assign]
        variants[label] = q
    return variants


def bench_anchor(
    n: int, dim: int, repeats: int, settings: dict[str, tuple[str, dict[str, object]]]
) -> dict[str, object]:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(2))
    rows: dict[str, object] = {}
    for label, (name, kwargs) in settings.items():
        variants = _anchor_variants(name, dim, kwargs)
        timing = race({k: functools.partial(_train_step, q, x) for k, q in variants.items()}, repeats)
        ms = {k: 1e3 * t.best for k, t in timing.items()}
        rows[label] = {
            "quantizer": {"name": name, **kwargs},
            "train_ms": ms,
            "median_train_ms": {k: 1e3 * t.median for k, t in timing.items()},
            "ratios": {"before / now": ms["before"] / ms["now"], "now / none": ms["now"] / ms["none"]},
        }
    return {"n": n, "dim": dim, "rows": rows}


def _read_all(call: Callable[[], vqkit.QuantizerOutput]) -> None:
    out = call()
    for mapping in (out.metrics, out.position_metrics, out.losses):
        dict(mapping)


def bench_lazy(n: int, dim: int, repeats: int, settings: dict[str, tuple[str, dict[str, object]]]) -> dict:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(3))
    rows: dict[str, object] = {}
    for label, (name, kwargs) in settings.items():
        torch.manual_seed(0)
        q = vqkit.create_quantizer(name, dim=dim, **kwargs)
        _train_step(q, x)  # data init, k-means: the state every timed call sees
        row: dict[str, object] = {"quantizer": {"name": name, **kwargs}}
        for kind, call in (("eval_forward", _eval_forward), ("train", _train_step)):
            fns: dict[str, Callable[[], object]] = {
                "read": functools.partial(_read_all, functools.partial(call, q, x)),
                "unread": functools.partial(call, q, x),
            }
            timing = race(fns, repeats if kind == "train" else 2 * repeats)
            ms = {k: 1e3 * t.best for k, t in timing.items()}
            row[f"{kind}_ms"] = ms
            row[f"{kind}: read / unread"] = ms["read"] / ms["unread"]
        rows[label] = row
    return {"n": n, "rows": rows}


@contextmanager
def _no_code_table() -> Iterator[None]:
    saved, table_module.CODE_TABLE_MAX = table_module.CODE_TABLE_MAX, 0
    try:
        yield
    finally:
        table_module.CODE_TABLE_MAX = saved


def _matmul_forward(q: vqkit.Quantizer, x: torch.Tensor) -> vqkit.QuantizerOutput:
    with _no_code_table():
        return _eval_forward(q, x)


def bench_code_table(n: int, dims: tuple[int, ...], repeats: int) -> dict[str, object]:
    rows: dict[str, object] = {}
    for dim in dims:
        x = torch.randn(n, dim, generator=torch.Generator().manual_seed(4))
        for name, kwargs in (("fsq", {"levels": [4, 4, 4, 4]}), ("lfq", {"bits": 8}), ("bsq", {"bits": 8})):
            torch.manual_seed(0)
            q = vqkit.create_quantizer(name, dim=dim, **kwargs)
            _train_step(q, x)
            with torch.no_grad(), _no_code_table():
                matmul_out = q.eval()(x).quantized
            with torch.no_grad():
                table_out = q(x).quantized
            fns: dict[str, Callable[[], object]] = {
                "matmul": functools.partial(_matmul_forward, q, x),
                "table": functools.partial(_eval_forward, q, x),
            }
            ms = {k: 1e3 * t.best for k, t in race(fns, 2 * repeats).items()}
            rows[f"{name} D={dim}"] = {
                "eval_forward_ms": ms,
                "matmul / table": ms["matmul"] / ms["table"],
                "max_abs_difference": float((matmul_out - table_out).abs().max()),
            }
    return {"n": n, "rows": rows}


LAZY_SETTINGS: dict[str, tuple[str, dict[str, object]]] = {
    "fsq 8 bits": ("fsq", {"levels": [4, 4, 4, 4]}),
    "lfq 8 bits": ("lfq", {"bits": 8}),
    "vq 256 codes": ("vq", {"codebook_size": 256}),
    "residual_vq 2 x 16 codes": ("residual_vq", {"codebook_size": 16, "num_quantizers": 2}),
}

ANCHOR_SETTINGS: dict[str, tuple[str, dict[str, object]]] = {
    "looc 2x32 of 64 codes": ("looc", {"codebook_size": 64, "codebook_dim": 32}),
    "looc 16x4 of 256 codes": ("looc", {"codebook_size": 256, "codebook_dim": 4}),
    "looc 16x4 of 1024 codes": ("looc", {"codebook_size": 1024, "codebook_dim": 4}),
    "cvq 1024 codes": ("cvq", {"codebook_size": 1024}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check that it runs")
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    if args.quick:
        simvq, wide = bench_simvq(512, 16, 64, 2), bench_simvq(256, 64, 64, 2)
        seeding = bench_seeding(500, 8, 32, 2)
        anchor = bench_anchor(
            2048,
            16,
            2,
            {
                k: (n, {**kw, "codebook_size": 16})
                for k, (n, kw) in ANCHOR_SETTINGS.items()
                if "2x32" not in k
            },
        )
        lazy = bench_lazy(1024, 16, 2, LAZY_SETTINGS)
        table = bench_code_table(2048, (16,), 2)
        per_call = bench_per_call(64, 16, 6, 1, ("vq", "fsq", "residual_vq"))
    else:
        simvq = bench_simvq(16384, 64, 1024, args.repeats, svd_dims=(64, 256, 512))
        wide = bench_simvq(16384, 512, 1024, max(2, args.repeats // 3))
        seeding = bench_seeding(20000, 64, 1024, max(2, args.repeats // 4))
        anchor = bench_anchor(16384, 64, args.repeats, ANCHOR_SETTINGS)
        lazy = bench_lazy(16384, 64, args.repeats, LAZY_SETTINGS)
        table = bench_code_table(16384, (64, 256), args.repeats)
        per_call = bench_per_call(64, 64, 8, args.repeats)
    load_after = os.getloadavg()
    report = {
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_model": cpu_model(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "wall_s": time.perf_counter() - started,
            "command": " ".join(["python", *sys.argv]),
            "timing": "min over round-robin repeats after warm-up (median recorded too)",
        },
        "simvq": simvq,
        "simvq_wide": wide,
        "kmeans_plusplus": seeding,
        "cvq_anchor": anchor,
        "lazy_results": lazy,
        "code_table": table,
        "per_call": per_call,
    }
    for section, values in report.items():
        if section != "environment":
            print(section, json.dumps(values, indent=1))
    warning = load_warning(load_before, load_after)
    if warning:
        print(warning)
    atomic_write_text(args.json, json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
