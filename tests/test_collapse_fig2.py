"""``examples/collapse_fig2.py`` (the collapse study's Fig. 2) at a tiny size, and its measures on known cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def fig2() -> ModuleType:
    spec = importlib.util.spec_from_file_location("collapse_fig2", ROOT / "examples" / "collapse_fig2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_describe_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(50)
    z = (labels.float() * 6 + torch.randn(200, generator=g))[:, None]
    got = fig2().describe(z, labels)
    v, lab = z[:, 0].double().numpy(), labels.numpy()
    within = np.mean([(v[lab == c] - v[lab == c].mean()) ** 2 for c in range(4)])
    assert got["eta2"] == pytest.approx(1 - within / v.var(), abs=1e-5)
    assert got["width"] == pytest.approx(np.quantile(v, 0.99) - np.quantile(v, 0.01), rel=1e-4)
    assert got["modes_kept"] == 4 and 0.9 < got["mode_separability"] <= 1


def test_describe_separated_and_merged_extremes() -> None:
    labels = torch.arange(10).repeat_interleave(20)
    points = fig2().describe(labels.float()[:, None], labels)  # each cluster one point
    assert points["eta2"] == pytest.approx(1.0) and points["modes_kept"] == 10
    noise = torch.randn(200, 1, generator=torch.Generator().manual_seed(1))
    merged = fig2().describe(noise, labels)  # no cluster structure at all
    assert merged["eta2"] < 0.2 and merged["mode_separability"] < 0.5


def test_runs_and_writes_the_figure(tmp_path: Path) -> None:
    figure = tmp_path / "fig2.png"
    runs = fig2().main(["--epochs", "1", "--seeds", "0,1", "--figure", str(figure)])
    assert figure.is_file() and figure.stat().st_size > 10_000
    assert len(runs) == 2
    for run in runs:
        for state in ("untrained", "trained"):
            scores = run[state]
            assert scores["width"] > 0 and 0 <= scores["eta2"] <= 1
            assert 1 <= scores["modes_kept"] <= 10 and 0 <= scores["mode_separability"] <= 1
        assert run["trained"]["width"] > run["untrained"]["width"]  # pretraining spreads the outputs
