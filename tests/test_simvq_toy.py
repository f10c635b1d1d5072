"""``examples/simvq_toy.py`` (SimVQ's 2-D toy, Figs. 2-3) at a tiny size: its counts obey what plain SGD implies."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def toy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("simvq_toy", ROOT / "examples" / "simvq_toy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_ranges_cover_every_step_once() -> None:
    module = toy()
    assert module.step_ranges(12) == [(1, 1), (2, 4), (5, 12)]
    assert module.step_ranges(300) == [(1, 25), (26, 100), (101, 300)]


def test_variants_start_from_the_same_codes() -> None:
    module = toy()
    codes = torch.randn(module.NUM_CODES, 2, generator=torch.Generator().manual_seed(0))
    for variant in module.VARIANTS:
        assert torch.equal(module.build(variant, codes).effective_codebook.detach(), codes), variant


def test_toy_runs_and_counts_are_consistent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = toy()
    figure = tmp_path / "toy.png"
    results = module.main(["--steps", "12", "--seeds", "0,1", "--figure", str(figure)])
    assert figure.is_file() and figure.stat().st_size > 10_000
    assert "| points | vq |" in capsys.readouterr().out
    assert set(results) == {(s, v) for s in module.SETTINGS for v in module.VARIANTS}
    k = module.NUM_CODES
    for (_, variant), runs in results.items():
        assert len(runs) == 2
        for run in runs:
            assert [r["steps"] for r in run["ranges"]] == module.step_ranges(12)
            assert run["trajectory"].shape == (13, k, 2) and len(run["loss"]) == 12
            assert 1 <= run["used"] <= k and math.isfinite(run["mse"]) and run["mse"] >= 0
            for r in run["ranges"]:
                assert 0 <= r["updated"] <= k and 1 <= r["used"] <= k
                if variant == "vq":  # SGD: a code moves iff some input selected it
                    assert r["updated"] == r["used"]
                else:  # W moves every effective code
                    assert r["updated"] == k
            if variant == "vq":
                assert run["idle_move"] == 0.0 and run["w_change"] == 0.0 and math.isnan(run["w_norm"])
            else:
                assert run["w_change"] > 0 and run["w_norm"] > 0
