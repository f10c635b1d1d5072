"""``vqkit.train.verdict``: the verdict rule on a bench's rows (equal rate, seeds, margin against twice the spread)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from vqkit.train.verdict import judge, main


def _rows(
    method: str, values: list[float], bits: float = 1200.0, metric: str = "stoi"
) -> list[dict[str, Any]]:
    return [
        {"method": method, "seed": s, "modality": "audio", "metrics": {metric: v, "bits_per_item": bits}}
        for s, v in enumerate(values)
    ]


@pytest.mark.parametrize(
    ("a", "b", "label"),
    [
        ([0.90, 0.91, 0.92], [0.80, 0.81, 0.82], "confirmed"),  # margin 0.10 > 2 x 0.01
        ([0.80, 0.81, 0.82], [0.90, 0.91, 0.92], "not confirmed at equal rate"),
        ([0.80, 0.85, 0.90], [0.78, 0.80, 0.82], "inconclusive"),  # margin 0.05 < 2 x 0.05
        ([0.95], [0.80], "inconclusive"),  # one seed
    ],
)
def test_the_rule(a: list[float], b: list[float], label: str) -> None:
    verdict = judge(_rows("A", a) + _rows("B", b), "A", "B", "stoi")
    assert verdict.label == label
    assert verdict.margin == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
    if len(a) > 1:  # numpy-free oracle: the larger sample standard deviation
        sd = max(math.sqrt(sum((v - sum(x) / len(x)) ** 2 for v in x) / (len(x) - 1)) for x in (a, b))
        assert verdict.spread == pytest.approx(sd)


def test_unequal_rates_and_lower_is_better() -> None:
    rows = _rows("A", [1.0, 1.1], bits=600.0, metric="lsd") + _rows("B", [2.0, 2.1], metric="lsd")
    verdict = judge(rows, "A", "B", "lsd")
    assert verdict.margin == pytest.approx(1.0)  # lower LSD is better: the margin favours A
    assert verdict.label == "inconclusive" and "unequal rates" in verdict.reason


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"rows": _rows("A", [0.9, 0.91]) + _rows("B", [0.7, 0.71])}))
    assert main([str(results), "A", "B"]) == 0
    assert "stoi: 0.905 vs 0.705 (2 and 2 seeds), margin +0.2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(results), "A", "C"])
    assert "method: expected one of the bench's rows ['A', 'B'], got 'C'" in capsys.readouterr().err
