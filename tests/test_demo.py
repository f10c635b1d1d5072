"""The demo's machinery on a tiny budget: every registered quantizer trains, evaluates and round-trips."""

from __future__ import annotations

import json

import pytest

from vqkit import demo
from vqkit.rates import standalone_quantizers
from vqkit.registry import quantizer_class


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "STEPS", 5)
    monkeypatch.setattr(demo, "BATCH", 64)
    monkeypatch.setattr(demo, "EVAL_SIZE", 256)
    monkeypatch.setattr(demo, "THROUGHPUT_REPEATS", 1)


@pytest.mark.usefixtures("tiny")
def test_every_quantizer_reaches_the_target_rate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = []
    for name in standalone_quantizers():
        row = demo.run_one(name, "gaussian", demo.gaussian_sampler(4), 4, 8)
        if quantizer_class(name).shared_codes:  # multi-scale codes need a grid; these are i.i.d. vectors
            assert isinstance(row, str) and "grid" in row
            continue
        assert not isinstance(row, str), row
        assert row.bits == 8 and row.roundtrip_exact
        assert row.mse_per_dim > 0 and 0 < row.utilization <= 1
        rows.append(row)
    table = demo.format_table(rows)
    assert all(row.quantizer in table for row in rows)
    path = demo.write_results(rows, [], 1.0, tmp_path / "results.json")
    assert len(json.loads(path.read_text())["results"]) == len(rows)


def test_gaussian_bound() -> None:
    assert demo.gaussian_bound(8, 4) == pytest.approx(2.0**-4)
