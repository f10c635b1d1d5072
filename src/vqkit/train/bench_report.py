"""A bench's report: ``OUT/results.json`` (every raw row), ``OUT/plots/rd_<metric>.png`` and ``OUT/report.md``.

Per method and rate the table gives the codebook size as the papers write it, codebook parameters, nominal,
effective and coded bits (coded: the test codes actually range-coded under a held-out prior, per item and per
vector, where the ``coding`` extra is installed; ``vqkit.train.evaluate``), utilization, perplexity, dead
codes, the modality's quality metrics, the collapse study's scores where the data has labels, encode
throughput and training time: means over seeds, ± the sample standard deviation when there are several.
The plots put quality against bits per item, one line per method.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

from vqkit._version import __version__
from vqkit.train.bench_spec import BenchSpec
from vqkit.train.plots import pyplot, save_png
from vqkit.utils.atomic import atomic_write_text

# The collapse study's scores, where the data has labels (``vqkit.train.evaluate``): column title per metric.
COLLAPSE = {"collapse/mode_separability": "mode separability", "collapse/tokens_distance": "tokens TV"}
QUALITY = {
    "image": ("psnr", "lpips_alex", "ssim", "mse"),
    "audio": ("lsd", "stoi", "pesq", "mel_distance", "chroma_similarity"),  # the IVQ paper's CS last
}
HIGHER_IS_BETTER = {"psnr", "ssim", "ms_ssim", "stoi", "pesq", "si_sdr", "chroma_similarity"}

Spread = tuple[float, float | None]
"""A mean over seeds and its sample standard deviation (None for one seed); NaN mean: no value."""
_NOTHING: Spread = (math.nan, None)


def _aggregate(values: list[float]) -> Spread:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return _NOTHING
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else None)


def _cell(value: Spread, digits: int = 4) -> str:
    """``mean`` or ``mean ± spread``; a dash for a missing value."""
    mean, spread = value
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}g}" + (f" ± {spread:.2g}" if spread else "")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (method, bits): means and spreads over seeds, by bits, then in the bench file's order."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        if "skipped" not in row:
            groups.setdefault((row["method"], row["bits"]), []).append(row)
    out = []
    for (method, bits), group in sorted(groups.items(), key=lambda kv: kv[0][1]):  # stable: file order
        metric_names = sorted({k for r in group for k in r["metrics"]})
        out.append(
            {
                "method": method,
                "bits": bits,
                "seeds": [r["seed"] for r in group],
                "codebook_size": group[0]["codebook_size"],
                "codebook_parameters": group[0]["codebook_parameters"],
                "modality": group[0]["modality"],
                "metrics": {
                    k: _aggregate([r["metrics"].get(k, math.nan) for r in group]) for k in metric_names
                },
                "encode_items_per_s": _aggregate([r["encode_items_per_s"] for r in group]),
                "quantizer_vectors_per_s": _aggregate([r["quantizer_vectors_per_s"] for r in group]),
                "train_seconds": _aggregate(
                    [r["train_seconds"] for r in group if r["train_seconds"] is not None]
                ),
                "rows": group,
            }
        )
    return out


def _plot_rate_distortion(summary: list[dict[str, Any]], metric: str, path: Path) -> str | None:
    series: dict[str, list[tuple[float, float]]] = {}
    for entry in summary:
        value = entry["metrics"].get(metric, _NOTHING)[0]
        bits = entry["metrics"].get("bits_per_item", _NOTHING)[0]
        if not math.isnan(value) and not math.isnan(bits):
            series.setdefault(entry["method"], []).append((bits, value))
    if not series:
        return None
    fig, ax = pyplot().subplots(figsize=(6.5, 4))
    for method, points in sorted(series.items()):
        points.sort()
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=method)
    ax.set_xlabel("bits per item")
    ax.set_ylabel(metric + (" (higher is better)" if metric in HIGHER_IS_BETTER else " (lower is better)"))
    ax.legend(fontsize=7, ncol=2)
    return save_png(fig, path)


def _results(spec: BenchSpec, rows: list[dict[str, Any]], skipped: list[str], quick: bool) -> dict[str, Any]:
    """``results.json``: the bench, every raw row (``bench.json`` of each run), and the environment."""
    return {
        "bench": str(spec.config),
        "quick": quick,
        "overrides": spec.overrides,
        "methods": spec.methods,
        "bits": spec.bits,
        "seeds": spec.seeds,
        "rows": rows,
        "skipped": skipped,
        "environment": {
            "torch": torch.__version__,
            "vqkit": __version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
        },
    }


def _columns(summary: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The quality and collapse metrics present in the summary (quality: the modality's, else ``mse``)."""
    modality = summary[0]["modality"] if summary else "vector"
    present = [m for m in QUALITY.get(modality, ("mse",)) if any(m in e["metrics"] for e in summary)]
    collapse = [m for m in COLLAPSE if any(m in e["metrics"] for e in summary)]
    return present or ["mse"], collapse


def _table(summary: list[dict[str, Any]], quality: list[str], collapse: list[str]) -> list[str]:
    """The markdown table: one line per (method, bits)."""
    head = [
        "method",
        "bits/vector",
        "bits/item",
        "coded bits/item",
        "codebook",
        "codebook params",
        "eff. bits",
        "coded bits",
        "util",
        "perplexity",
        "dead",
        *quality,
        *[COLLAPSE[m] for m in collapse],
        "enc items/s",
        "train s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in summary:
        m = entry["metrics"]
        cells = [
            entry["method"],
            f"{entry['bits']:.4g}",
            _cell(m.get("bits_per_item", _NOTHING), 5),
            _cell(m.get("coded_bits_per_item", _NOTHING), 4),
            entry["codebook_size"],
            str(entry["codebook_parameters"]),
            _cell(m.get("codebook/effective_bits", _NOTHING), 3),
            _cell(m.get("codebook/coded_bits", _NOTHING), 3),
            _cell(m.get("codebook/utilization", _NOTHING), 3),
            _cell(m.get("codebook/perplexity", _NOTHING)),
            _cell(m.get("codebook/dead_codes", _NOTHING)),
            *[_cell(m.get(q, _NOTHING)) for q in (*quality, *collapse)],
            _cell(entry["encode_items_per_s"], 3),
            _cell(entry["train_seconds"], 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_bench_report(
    out: Path, spec: BenchSpec, rows: list[dict[str, Any]], *, quick: bool = False
) -> Path:
    """Write ``results.json``, the rate-distortion plots and ``report.md`` under ``out``; returns the report."""
    summary = summarize(rows)
    skipped = sorted({row["skipped"] for row in rows if "skipped" in row})
    quality, collapse = _columns(summary)
    atomic_write_text(
        out / "results.json", json.dumps(_results(spec, rows, skipped, quick), indent=2, default=str)
    )
    plots = [(m, _plot_rate_distortion(summary, m, out / "plots" / f"rd_{m}.png")) for m in quality[:2]]
    lines = [f"# Bench: `{spec.config.name}`" + (" (quick)" if quick else ""), ""]
    lines += [
        f"Every method trains the same model on the same data for the same steps; overrides: "
        f"`{' '.join(spec.overrides) or 'none'}`. Seeds: {spec.seeds}; cells are means (± sample standard "
        "deviation over seeds when there are several). Quality is measured on the evaluation split. Bits: "
        "nominal (from the alphabets), effective (the code entropy, per vector) and coded (measured: the "
        "evaluation codes range-coded, each half under a prior fitted on the other half; per item and per vector).",
        "",
        *_table(summary, quality, collapse),
    ]
    if skipped:
        lines += ["", "Not run:", "", *[f"* {note}" for note in skipped]]
    for metric, name in plots:
        if name is not None:
            lines += [
                "",
                f"## Rate-distortion: {metric}",
                "",
                f"![{metric} against bits per item](plots/{name})",
            ]
    lines += ["", f"Raw rows: `results.json`; each run's directory is under `runs/` ({len(rows)} runs)."]
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
