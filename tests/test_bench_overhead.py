"""benchmarks/bench_overhead.py at tiny sizes: every section runs, and each variant it races is the real one."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_overhead.py"


def test_quick_run_writes_every_section(tmp_path: Path) -> None:
    bench = load_script(SCRIPT, "_test_bench_overhead")
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick", "--threads", "1", "--json", str(tmp_path / "o.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "o.json").read_text())
    assert {
        "simvq",
        "simvq_wide",
        "kmeans_plusplus",
        "cvq_anchor",
        "lazy_results",
        "code_table",
        "per_call",
    } <= set(report)
    assert set(report["per_call"]["rows"]) == {"vq", "fsq", "residual_vq"}
    assert all(row["eval: before / now"] > 0 for row in report["per_call"]["rows"].values())
    for row in report["code_table"]["rows"].values():  # the two paths give the same result to rounding
        assert row["max_abs_difference"] < 1e-5 and set(row["eval_forward_ms"]) == {"matmul", "table"}
    assert all(row["train: read / unread"] > 0 for row in report["lazy_results"]["rows"].values())
    assert report["kmeans_plusplus"]["same centres"] is True
    for row in report["cvq_anchor"]["rows"].values():
        assert set(row["train_ms"]) == {"before", "now", "none"} and all(
            v > 0 for v in row["train_ms"].values()
        )


def test_the_before_variant_searches_again_and_moves_the_codes_alike() -> None:
    # "before" (no hint: a second, swapped search) and "now" (the search's own column minima) must be the same
    # training step, or the race would compare different work.
    bench = load_script(SCRIPT, "_test_bench_overhead_variants")
    variants = bench._anchor_variants("looc", 16, {"codebook_size": 16, "codebook_dim": 4})
    x = torch.randn(512, 16, generator=torch.Generator().manual_seed(0))
    for label in ("before", "now"):
        bench._train_step(variants[label], x)
    torch.testing.assert_close(
        variants["before"].codebook.weight, variants["now"].codebook.weight, rtol=0, atol=1e-6
    )
    assert not torch.equal(variants["none"].codebook.weight, variants["now"].codebook.weight)  # anchors moved


def test_switching_the_code_table_off_takes_the_matmul() -> None:
    bench = load_script(SCRIPT, "_test_bench_overhead_table")
    q = bench.vqkit.create_quantizer("lfq", dim=16, bits=4).eval()
    codes = torch.randint(0, 16, (256, 1))
    calls = []
    q.project_out.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    q.decode(codes)
    with bench._no_code_table():
        q.decode(codes)
    assert calls == [16, 256]  # the table's 16 rows, then every code's values


def test_the_previous_per_call_work_is_put_back_and_taken_away() -> None:
    bench = load_script(SCRIPT, "_test_bench_overhead_per_call")
    from overhead_per_call import previous_per_call

    from vqkit.quantizers import base
    from vqkit.quantizers.precision import Float32State

    q = bench.vqkit.VQ(8, 16)
    kept = Float32State.__dict__["compute_dtype"]
    with previous_per_call():
        assert Float32State.__dict__["compute_dtype"] is not kept
        assert base.all_finite(torch.ones(3)) and not base.all_finite(torch.tensor([1.0, float("nan")]))
        assert q.compute_dtype == torch.float32
        q(torch.randn(4, 8))
    assert Float32State.__dict__["compute_dtype"] is kept and base.all_finite is bench_all_finite()


def bench_all_finite() -> object:
    from vqkit.functional.numerics import all_finite

    return all_finite
