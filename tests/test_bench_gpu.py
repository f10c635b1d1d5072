"""benchmarks/bench_gpu.py on the CPU (``--device cpu --quick``, in a subprocess): every section and every quantizer
row of its report, positive ratios, the code-agreement fields; and its check of graphed calls, which must tell a
faithful replay from one that skips the step."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import vqkit
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"
HAS_VQP = importlib.util.find_spec("vector_quantize_pytorch") is not None
# Classes whose codes equal vqkit's in fp32 from the same state (bench_quantizers' tests hold the same).
EXACT = ["vq", "ema_vq", "fsq", "lfq", "residual_vq", "product_vq"]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "_test_bench_gpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench_gpu")
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out / "gpu.json")]
    command += ["--markdown", str(out / "gpu.md")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    return {"report": report, "markdown": (out / "gpu.md").read_text(), "stdout": done.stdout}


def _positive(values: list[Any]) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)


def test_every_quantizer_row_present(bench: ModuleType, run: dict[str, Any]) -> None:
    report = run["report"]
    dim, bits = report["config"]["dim"], report["config"]["bits"]
    built = [
        name for name in bench.case_names() if not isinstance(bench.build_case(name, dim, bits, None), str)
    ]
    assert list(report["quantizers"]) == built
    assert len(report["skipped"]) == len(bench.case_names()) - len(built)
    for name, row in report["quantizers"].items():
        for precision in ("fp32", "bf16"):
            section = row[precision]
            assert section["errors"] == {}, (name, precision, section["errors"])
            assert section["encode"] is not None and section["train"] is not None, (name, precision)


def test_ratios_are_positive(run: dict[str, Any]) -> None:
    for name, row in run["report"]["quantizers"].items():
        for precision in ("fp32", "bf16"):
            enc, train = row[precision]["encode"], row[precision]["train"]
            values = [enc["ratio_to_matmul"], enc["eval_forward_ratio_to_matmul"], enc["vectors_per_s"]]
            values += [train["ratio_to_matmul_step"], train["vectors_per_s"]]
            if "class" in row["vqp"]:  # an equivalent: its speedups are measured in both precisions
                values += [enc["encode_speedup"], enc["eval_forward_speedup"], train["train_speedup"]]
            else:
                assert "encode_speedup" not in enc and "train_speedup" not in train, name
            assert _positive(values), (name, precision, values)


def test_codes_agree_fields(run: dict[str, Any]) -> None:
    rows = run["report"]["quantizers"]
    for name, row in rows.items():
        fp32, bf16 = row["fp32"], row["bf16"]
        assert fp32["encode"]["agreement"]["cpu_pct"] == 100.0, name  # the same device: the same codes
        assert 0.0 <= bf16["encode"]["agreement"]["cpu_pct"] <= 100.0, name
        for precision in (fp32, bf16):
            eval_pct = precision["encode"]["agreement"]["vqp_eval_pct"]
            step_pct = precision["train"]["agreement"]["vqp_step1_pct"]
            assert (eval_pct is None) == (step_pct is None) == ("class" not in row["vqp"]), name
    if HAS_VQP:
        for name in EXACT:
            agree = rows[name]["fp32"]["encode"]["agreement"], rows[name]["fp32"]["train"]["agreement"]
            assert agree[0]["vqp_eval_pct"] == 100.0 and agree[1]["vqp_step1_pct"] == 100.0, (name, agree)


def test_target_search_and_memory_sections(run: dict[str, Any]) -> None:
    report = run["report"]
    assert report["errors"] == {}
    target = report["small_batch"]
    ratios = target["ratio_to_matmul"]
    assert set(ratios) == {"vqkit_encode", "vqkit_encode_unchecked", "vqkit_step", "vqkit_step_unchecked"}
    assert _positive(list(ratios.values())) and _positive(list(target["step_ratio_to_matmul_step"].values()))
    assert target["meets_target"] == {
        name: r <= target["target_max_ratio_to_matmul"] for name, r in ratios.items()
    }
    assert target["errors"] == {} and "CUDA graphs need a CUDA device" in target["notes"][0]
    assert [row["dtype"] for row in report["search"]] == ["fp32", "bf16 autocast"]
    for row in report["search"]:
        assert row["errors"] == {} and row["vqp"] == ("VectorQuantize" if HAS_VQP else row["vqp"])
        assert _positive([row["encode"]["ratio_to_matmul"], row["train"]["ratio_to_matmul_step"]])
    if HAS_VQP:
        assert report["search"][0]["encode"]["agreement"]["vqp_eval_pct"] == 100.0
    assert [row["peak_extra_mib"] for row in report["memory"]] == [None]  # CUDA only
    assert _positive([row["encode_median_s"] for row in report["memory"]])


def test_environment_and_tables(run: dict[str, Any]) -> None:
    env = run["report"]["environment"]
    assert env["device"].startswith("cpu") and env["torch"] == torch.__version__ and env["quick"] is True
    assert env["vqkit"] == vqkit.__version__ and env["wall_s"] > 0
    for title in ("1. Small-batch target", "2. Search rows", "3. Eval-encode memory", "4. Every quantizer"):
        assert title in run["markdown"] and title in run["stdout"]
    assert "| vq[orthogonal_weight=10] |" in run["markdown"] and "elapsed" in run["stdout"]


def test_bad_arguments_are_refused(bench: ModuleType) -> None:
    for argv in (["--device", "tpu9"], ["--device", "cpu", "--only", "no_such_quantizer"]):
        with pytest.raises(SystemExit) as exit_info:
            bench.parse_args(argv)
        assert exit_info.value.code == 2


def test_graph_check_tells_a_faithful_replay_from_a_broken_one(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = sys.modules["gpu_cases"]  # bench_gpu's sibling module, imported by it
    device = cases.Device("cpu")
    torch.manual_seed(0)
    q = vqkit.VQ(8, 16, update="ema", init="gaussian")
    x = torch.randn(64, 8)

    def eager(device: Any, fn: Any, warmup: int = 3) -> Any:  # a "graph" that reruns the call eagerly
        return cases.compiled_call(fn, warmup)

    def frozen(device: Any, fn: Any, warmup: int = 3) -> Any:  # a "graph" whose replay does nothing
        out = fn()
        return cases.Graphed(lambda: None, lambda: out)

    monkeypatch.setattr(cases, "cuda_graph", eager)
    assert cases.graph_calls(device, "cuda", q, x)["matches_eager"] == {"encode": True, "step": True}
    monkeypatch.setattr(cases, "cuda_graph", frozen)
    assert cases.graph_calls(device, "cuda", q, x)["matches_eager"] == {"encode": True, "step": False}
