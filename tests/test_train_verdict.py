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


def test_a_bench_file_s_claims_are_judged_in_its_report(tmp_path: Path) -> None:
    from vqkit.train.bench_spec import load_bench
    from vqkit.train.config import ConfigError
    from vqkit.train.verdict import claim_lines

    root = Path(__file__).resolve().parent.parent
    bench = tmp_path / "bench.yaml"
    head = f"config: {root / 'configs' / 'digits.yaml'}\nfixed: [{{label: A, name: vq}}, {{label: B, name: fsq}}]\n"
    bench.write_text(head + "claims: [{better: A, than: B, metric: stoi}]\n")
    spec = load_bench(bench)
    lines = claim_lines(_rows("A", [0.90, 0.91, 0.92]) + _rows("B", [0.80, 0.81, 0.82]), spec.claims)
    assert lines[-1].startswith("| A > B | stoi | 0.91 | 0.81 | +0.1 | 0.02 | confirmed (")
    assert "not in this report" in claim_lines(_rows("A", [0.9]), spec.claims)[-1]
    bench.write_text(head + "claims: [{better: A, than: C, metric: stoi}]\n")
    with pytest.raises(ConfigError, match=r"bench.claims\[0\].than: expected one of the rows \['A', 'B'"):
        load_bench(bench)
