"""benchmarks/bench_quantizers.py runs at tiny sizes: finite ratios, matched codes, memory rows, Markdown."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_quantizers.py"
N, DIM, BITS = 256, 16, 6
NAMES = ["vq", "fsq", "residual_vq"]
HAS_VQP = importlib.util.find_spec("vector_quantize_pytorch") is not None
needs_vqp = pytest.mark.skipif(not HAS_VQP, reason="needs vector-quantize-pytorch (the bench extra)")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "_test_bench_quantizers")


@pytest.fixture(scope="module")
def results(bench: ModuleType) -> dict[str, dict[str, object]]:
    x = bench.make_input(N, DIM)
    fit = x.reshape(N, DIM)
    out = {}
    for name in NAMES:
        case = bench.build_case(name, DIM, BITS, fit)
        assert not isinstance(case, str), case
        out[name] = bench.bench_case(case, x, (1, 1, 1))
    return out


def test_matmul_width_follows_the_search(bench: ModuleType) -> None:
    widths = {}
    for name in ("vq", "residual_vq", "product_vq", "looc", "fsq", "factorized_vq"):
        case = bench.build_case(name, 64, 10, fit=None)
        widths[name] = (case.k, case.candidates)
    assert widths["vq"] == (1024, 1024)
    assert widths["residual_vq"] == (64, 64)  # 2 levels of 32 codes, full width
    assert widths["product_vq"] == (32, 64)  # 2 groups of 32 codes of D/2 dims: the multiply-adds of K=32
    assert widths["looc"] == (32, 64)
    assert widths["fsq"] == (64, None)  # implicit codebook: K = D
    assert widths["factorized_vq"] == (128, 1024)  # 1024 codes of 8 dims
    assert isinstance(bench.build_case("ivq", 64, 10, fit=None), str)  # 10 bits is not a multiple of 4


def test_speed_rows_are_finite(results: dict[str, dict[str, object]]) -> None:
    for name, r in results.items():
        encode, train, vqp = r["encode"], r["train"], r["vqp"]
        assert isinstance(encode, dict) and isinstance(train, dict) and isinstance(vqp, dict)
        values = [
            encode["ratio_to_matmul"],
            encode["vectors_per_s"],
            train["ratio_to_matmul_step"],
            train["vectors_per_s"],
        ]
        if "n/a" not in vqp:
            values += [vqp["encode_speedup"], vqp["eval_forward_speedup"], vqp["train_speedup"]]
        assert all(math.isfinite(v) and v > 0 for v in values), (name, values)


@needs_vqp
def test_codes_match_vector_quantize_pytorch(results: dict[str, dict[str, object]]) -> None:
    for name in NAMES:  # the same codebooks (copied) or the same levels and projections: the same codes
        vqp = results[name]["vqp"]
        assert isinstance(vqp, dict) and "n/a" not in vqp, (name, vqp)
        assert vqp["eval_agreement_pct"] == 100.0 and vqp["step1_agreement_pct"] == 100.0, (name, vqp)


@needs_vqp
def test_lfq_codes_match_after_bit_reversal(bench: ModuleType) -> None:
    x = bench.make_input(N, DIM)
    case = bench.build_case("lfq", DIM, BITS, fit=None)
    ref = bench.build_reference(case.quantizer.eval())
    ref.module.eval()
    assert (case.quantizer.encode(x) == ref.codes(ref.forward(x))).all()


def test_memory_child_and_markdown(
    bench: ModuleType, results: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    memory = bench.memory_child(N, DIM, BITS, ["fsq"])
    assert set(memory["fsq"]) == {"matmul", "vqkit_encode"} | ({"vqp_eval_forward"} if HAS_VQP else set())
    assert all(v is None or v >= 0 for v in memory["fsq"].values())
    report = {
        "config": {"n": N, "dim": DIM, "bits": BITS},
        "quantizers": {
            name: {**r, "memory": bench.memory_summary(memory.get(name))} for name, r in results.items()
        },
        "skipped": ["skipped 'ivq': no rule"],
        "environment": {
            "threads": 2,
            "cpu_model": "cpu",
            "torch": "t",
            "vector_quantize_pytorch": "v",
            "timestamp_utc": "2026-01-01T00:00:00",
            "git_commit": "c",
            "loadavg_before": (0.0, 0.0, 0.0),
            "loadavg_after": (0.0, 0.0, 0.0),
            "wall_s": 1.0,
            "command": "python benchmarks/bench_quantizers.py",
        },
    }
    text = bench.markdown_report(report)
    assert "Command: `python benchmarks/bench_quantizers.py`" in text
    assert text.count("| residual_vq |") == 2
    assert ("| fsq | FSQ |" if HAS_VQP else "| fsq | n/a |") in text


def test_same_rate_race_reports_ratios_to_residual_vq(bench: ModuleType) -> None:
    """IVQ and LooC against residual VQ in one round robin (issue 14's target), with its Markdown sentence."""
    dim, bits = 16, 8
    x = bench.make_input(N, dim)
    cases = {
        name: bench.build_case(name, dim, bits, x.reshape(N, dim)) for name in ("residual_vq", "ivq", "looc")
    }
    assert not any(isinstance(c, str) for c in cases.values()), cases
    section = bench.same_rate_race(cases, x, 2, 1)
    assert section["ratio_to_residual_vq"]["residual_vq"] == 1.0
    assert all(math.isfinite(v) and v > 0 for v in section["median_ratio_to_residual_vq"].values())
    line = bench.same_rate_line(section)
    assert "ivq " in line and "looc " in line and "residual_vq" not in line.split(":")[1]
