"""``vqkit.train.bench_report``: the table's seeds' spreads, the ceiling row, the whole-codebook column, the mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqkit.train.bench_report import write_bench_report
from vqkit.train.bench_spec import BenchSpec


def _row(method: str, seed: int, psnr: float, **extra: Any) -> dict[str, Any]:
    metrics = {"psnr": psnr, "bits_per_item": 392.0, "codebook/utilization": 0.5}
    metrics.update(extra.pop("metrics", {}))
    return {
        "method": method,
        "bits": extra.pop("bits", 8),
        "seed": seed,
        "codebook_size": "1×256",
        "codebook_parameters": 16384,
        "modality": "image",
        "metrics": metrics,
        "encode_items_per_s": 100.0,
        "quantizer_vectors_per_s": 1000.0,
        "train_seconds": 10.0,
        **extra,
    }


def test_the_table_has_spreads_the_ceiling_and_the_whole_codebook_column(tmp_path: Path) -> None:
    rows = [
        _row("vq", 0, 20.0),
        _row("vq", 1, 21.0),
        _row("looc", 0, 19.0, metrics={"codebook/shared_utilization": 0.75}),
        _row("looc", 1, 19.0, metrics={"codebook/shared_utilization": 0.25}),
        _row("ceiling", 0, 36.0, bits=2048, ceiling=True, metrics={"bits_per_item": 100352.0}),
    ]
    spec = BenchSpec(tmp_path / "config.yaml", seeds=[0, 1], backbone="fashion_mnist_backbone")
    report = write_bench_report(tmp_path, spec, rows).read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines() if line.startswith("| ")}
    head = lines["method"].split(" | ")
    whole = head.index("whole util")
    assert head[whole - 1] == "util"
    assert lines["vq"].split(" | ")[whole] == "–"  # no shared codebook: no whole-codebook figure
    assert lines["looc"].split(" | ")[whole] == "0.5 ± 0.35"  # mean and sample std of 0.75, 0.25
    assert "20.5 ± 0.71" in lines["vq"]
    assert "36" in lines["ceiling"] and "**Pretrain once, quantize many:**" in report
    assert (tmp_path / "plots" / "rd_psnr.png").exists()
