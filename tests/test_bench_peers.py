"""benchmarks/bench_peers.py runs at tiny sizes: every row filled, Markdown written."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from tests.conftest import load_script

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
needs_vqp = pytest.mark.skipif(
    importlib.util.find_spec("vector_quantize_pytorch") is None,
    reason="needs vector-quantize-pytorch (the bench extra)",
)


@needs_vqp
def test_peers_quick_grid(tmp_path: Path) -> None:
    peers = load_script(BENCH / "bench_peers.py", "_test_bench_peers")
    out, md = tmp_path / "peers.json", tmp_path / "peers.md"
    assert (
        peers.main(["--quick", "--only", "vq,fsq,residual_vq", "--out", str(out), "--markdown", str(md)]) == 0
    )
    report = json.loads(out.read_text())
    assert [(c["dim"], c["bits"]) for c in report["cells"]] == [(16, 4), (16, 8)]
    for cell in report["cells"]:
        assert set(cell["rows"]) == {"vq", "fsq", "residual_vq"}
        for row in cell["rows"].values():
            assert all(math.isfinite(row[k]) and row[k] > 0 for k in peers.SPEEDUPS)
            assert row["eval_agreement_pct"] == 100.0
            assert isinstance(row["meets_target"], bool)
        assert cell["rows"]["fsq"]["eval_forward_floor_speedup"] > 0  # FSQ has both projections
        assert cell["rows"]["vq"]["eval_forward_floor_speedup"] is None
    assert "| fsq | 16 | 8 |" in md.read_text()
