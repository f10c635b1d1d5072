"""benchmarks/bench_scaling.py: the sweep grid, the chunked matmul against the plain one, the log-log fit on an
exact power law, and the ``--quick`` run end to end (JSON structure, memory bound, figure)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_scaling.py"
NAMES = "vq,fsq,ivq"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "_test_bench_scaling")


@pytest.fixture(scope="module")
def cases(bench: ModuleType) -> ModuleType:
    import scaling_cases  # the script put benchmarks/ on sys.path

    return scaling_cases


@pytest.fixture(scope="module")
def quick(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("scaling")
    threads = torch.get_num_threads()
    try:
        argv = ["--quick", "--threads", "1", "--only", NAMES]
        assert bench.main([*argv, "--out", str(out / "r.json"), "--plot", str(out / "f.png")]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "r.json").read_text()), out / "f.png"


def test_fit_recovers_a_power_law(cases: ModuleType) -> None:
    xs = [2.0**i for i in range(1, 8)]
    fit = cases.fit(xs, [3.0 * x**1.5 for x in xs])
    assert fit["slope"] == pytest.approx(1.5) and fit["r2"] == pytest.approx(1.0) and fit["points"] == 7
    assert cases.fit([4.0, 4.0], [1.0, 2.0]) is None  # constant work: no slope


def test_sweeps_share_the_base_point(cases: ModuleType) -> None:
    grid = cases.DEFAULT
    points, notes = cases.sweep_points(grid, ["vq", "ivq"])
    vq = [p for p in points if p.name == "vq"]
    assert len(vq) == len(grid.ns) + len(grid.bits_values) + len(grid.dims) - 2
    base = next(p for p in vq if (p.n, p.bits, p.dim) == (grid.n, grid.bits, grid.dim))
    assert base.axes == ["n", "bits", "dim"]
    assert cases.base_bits("ivq", grid) == 12  # IVQ spends 4 bits a level: 10 is out of reach
    assert {p.bits for p in points if p.name == "ivq" and "bits" in p.axes} == {8, 12, 16}
    assert "ivq: base rate 12 bits (it cannot reach 10)" in notes


def test_chunked_matmul_matches_the_plain_one(cases: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    flat, w = torch.randn(10, 4, generator=gen), torch.randn(4, 8, generator=gen)
    monkeypatch.setattr(cases, "MATMUL_FULL_BYTES", 4 * 8 * 3)  # 3 rows at a time: chunks of 3, 3, 3, 1
    assert cases.chunk_rows(10, 8) == 3
    last = cases.matmul_call(flat, w)()
    torch.testing.assert_close(last[:1], (flat @ w)[9:])
    grads = cases.matmul_step_call(flat, w)()
    x = flat.clone().requires_grad_(True)
    (x @ w).square().mean().backward()
    assert [g.shape[0] for g in grads] == [3, 3, 3, 1]
    torch.testing.assert_close(torch.cat(grads), x.grad)


def test_quick_run_writes_the_report(quick: tuple[dict[str, Any], Path]) -> None:
    report, _ = quick
    assert report["config"]["quick"] is True and report["environment"]["threads"] == 1
    assert {p["name"] for p in report["points"]} == set(NAMES.split(","))
    for p in report["points"]:
        assert p["work"] == p["n"] * p["k_matmul"] * p["dim"]
        assert p["memory"]["encode_bytes"] is None or p["memory"]["encode_bytes"] >= 0
        if p["axes"] != ["memory"]:
            times = [p[k] for k in ("encode_s", "matmul_s", "train_step_s", "matmul_step_s")]
            assert all(math.isfinite(t) and t > 0 for t in times), p
    assert any("work N*K*D" in note and note.startswith("skipped vq ") for note in report["skipped"])
    assert any("'ivq': no rule reaches 6 bits" in note for note in report["skipped"])
    assert set(report["slopes"]["vq"]) == {"n", "bits", "dim"}
    assert report["slopes"]["fsq"]["bits"]["encode_s"]["vs_work"] is None  # implicit: constant work
    assert math.isfinite(report["vq_encode_fit"]["encode"]["slope"])


def test_quick_run_bounds_memory_and_plots(quick: tuple[dict[str, Any], Path]) -> None:
    report, figure = quick
    (vq,) = report["memory_bounds"]["memory_only"]
    if vq["encode_bytes"] is not None:  # the peak reset needs Linux >= 4.0
        assert vq["score_matrix_bytes"] == 2048 * 4096 * 4 and not vq["holds_nk_matrix"] and vq["bounded"]
    pytest.importorskip("matplotlib")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
