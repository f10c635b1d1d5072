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
    assert {"simvq", "simvq_wide", "kmeans_plusplus", "cvq_anchor"} <= set(report)
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
