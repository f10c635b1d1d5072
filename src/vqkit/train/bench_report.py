"""A bench's report: ``OUT/results.json`` (every raw row), ``OUT/plots/*.png``, ``OUT/report.md`` and
``OUT/report.html`` (the same as one self-contained page, ``vqkit.train.report_html``).

Per method and rate the table gives the codebook size as the papers write it, codebook parameters, nominal,
effective and coded bits (coded: the test codes actually range-coded under a held-out prior, per item and per
vector, where the ``coding`` extra is installed; ``vqkit.train.evaluate``), utilization, perplexity, dead
codes, the modality's quality metrics, the collapse study's scores where the data has labels, encode
throughput and training time: means over seeds, ± the sample standard deviation when there are several.
The rate-distortion plots put quality against bits per item, one line per method, or, when every method is at
the same rate, rank the methods in a horizontal bar chart (best on top); a ``ceiling`` row (a continuous
model) is a dashed line. Given the bench's ``SampleSet`` (``vqkit.train.report_figures``), the report also
shows each method's reconstructions of the same test items, its code usage and, for audio, its clips.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vqkit._version import __version__
from vqkit.train.bench_spec import BenchSpec
from vqkit.train.plots import method_colors, pyplot, save_png
from vqkit.train.report_figures import (
    CLIP_SECONDS,
    SampleSet,
    clip_table,
    reconstruction_grid,
    usage_plot,
    write_clips,
)
from vqkit.train.report_html import write_html_report
from vqkit.train.verdict import HIGHER_IS_BETTER, claim_lines
from vqkit.utils.atomic import atomic_write_text

# The collapse study's scores, where the data has labels (``vqkit.train.evaluate``): column title per metric.
COLLAPSE = {"collapse/mode_separability": "mode separability", "collapse/tokens_distance": "tokens TV"}
QUALITY = {
    "image": ("psnr", "lpips_alex", "ssim", "mse"),
    "audio": ("lsd", "stoi", "pesq", "mel_distance", "chroma_similarity"),  # the IVQ paper's CS last
}
SHARED_UTIL = "codebook/shared_utilization"  # the whole shared codebook's usage (vqkit.metrics.codes.usage)

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


def _is_ceiling(entry: dict[str, Any]) -> bool:
    """A row that bounds the quantizers from above (a continuous model's ``bench.json`` with ``ceiling: true``):
    drawn as a line, not as one of the ranked methods."""
    return bool(entry["rows"][0].get("ceiling"))


def _plot_rate_distortion(
    summary: list[dict[str, Any]], metric: str, path: Path, colors: dict[str, Any]
) -> str | None:
    """Quality against bits per item, a colour per method; at a single rate a ranked bar chart (best on top)."""
    points = [
        (e["method"], e["metrics"].get("bits_per_item", _NOTHING)[0], *e["metrics"].get(metric, _NOTHING), e)
        for e in summary
    ]
    points = [p for p in points if not math.isnan(p[1]) and not math.isnan(p[2])]
    methods = [p for p in points if not _is_ceiling(p[4])]
    if not methods:
        return None
    better = " (higher is better)" if metric in HIGHER_IS_BETTER else " (lower is better)"
    ceilings = [p for p in points if _is_ceiling(p[4])]
    if len({p[1] for p in methods}) == 1:
        fig = _ranked_bars(methods, ceilings, metric, colors)
    else:
        fig, ax = pyplot().subplots(figsize=(7, 4.5))
        for method in dict.fromkeys(p[0] for p in methods):
            xs, ys = zip(*sorted((p[1], p[2]) for p in methods if p[0] == method), strict=True)
            ax.plot(xs, ys, marker="o", label=method, color=colors.get(method))
        for name, _, value, _, _ in ceilings:
            ax.axhline(value, color="0.3", linestyle="--", linewidth=1, label=name)
        ax.set_xlabel("bits per item")
        ax.set_ylabel(metric + better)
        ax.legend(fontsize=7, ncol=2)
    return save_png(fig, path)


def _ranked_bars(
    points: list[tuple[Any, ...]], ceilings: list[tuple[Any, ...]], metric: str, colors: Any
) -> Any:
    """One bar per method at the bench's single rate, sorted best first, ± the seeds' spread; the axis starts
    below the worst value (a ranking: the differences matter, not the distance from zero)."""
    higher = metric in HIGHER_IS_BETTER
    ranked = sorted(points, key=lambda p: p[2], reverse=not higher)  # drawn bottom up: the best ends on top
    values = [p[2] for p in ranked] + [c[2] for c in ceilings]
    low, high = min(values), max(values)
    pad = 0.08 * (high - low or abs(high) or 1.0)
    base = 0.0 if 0 <= low < 3 * pad else low - 3 * pad  # a positive metric near zero keeps its zero
    fig, ax = pyplot().subplots(figsize=(7, 0.9 + 0.26 * len(ranked)))
    y = list(range(len(ranked)))
    ax.barh(
        y,
        [p[2] - base for p in ranked],
        left=base,
        xerr=[p[3] or 0.0 for p in ranked] if any(p[3] for p in ranked) else None,
        color=[colors.get(p[0]) for p in ranked],
        height=0.72,
        error_kw={"elinewidth": 0.8, "capsize": 2},
    )
    for i, p in enumerate(ranked):
        ax.text(p[2] + pad * 0.2, i, f"{p[2]:.4g}", va="center", fontsize=7)
    for name, _, value, _, _ in ceilings:
        ax.axvline(value, color="0.25", linestyle="--", linewidth=1)
        ax.text(value, len(ranked) - 0.4, f" {name}", fontsize=7, va="bottom")
    ax.set_yticks(y, [p[0] for p in ranked], fontsize=8)
    ax.set_xlim(base, high + 3 * pad)
    ax.set_ylim(-0.6, len(ranked) - 0.4 + (0.6 if ceilings else 0.0))
    ax.set_xlabel(metric + (" (higher is better)" if higher else " (lower is better)"), fontsize=8)
    ax.set_title(f"at {points[0][1]:.4g} bits per item", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _results(spec: BenchSpec, rows: list[dict[str, Any]], skipped: list[str], quick: bool) -> dict[str, Any]:
    """``results.json``: the bench, every raw row (``bench.json`` of each run), and the environment."""
    return {
        "bench": str(spec.config),
        "quick": quick,
        "overrides": spec.overrides,
        "methods": spec.methods,
        "bits": spec.bits,
        "seeds": spec.seeds,
        "backbone": spec.backbone,
        "ceiling": spec.ceiling,
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
    """The markdown table: one line per (method, bits). ``util`` is the mean over code positions; where a
    method's positions share one codebook (LooC), ``whole util`` is the share of that codebook in use."""
    shared = any(SHARED_UTIL in e["metrics"] for e in summary)
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
        *(["whole util"] if shared else []),
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
            *([_cell(m.get(SHARED_UTIL, _NOTHING), 3)] if shared else []),
            _cell(m.get("codebook/perplexity", _NOTHING)),
            _cell(m.get("codebook/dead_codes", _NOTHING)),
            *[_cell(m.get(q, _NOTHING)) for q in (*quality, *collapse)],
            _cell(entry["encode_items_per_s"], 3),
            _cell(entry["train_seconds"], 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_bench_report(
    out: Path,
    spec: BenchSpec,
    rows: list[dict[str, Any]],
    *,
    quick: bool = False,
    samples: SampleSet | None = None,
) -> Path:
    """Write ``results.json``, the plots, ``report.md`` and ``report.html`` under ``out``; returns
    ``report.md``. ``samples`` (the bench's models on a few test items) adds the reconstructions, code usage
    and, for audio, the clips under ``audio/``."""
    summary = summarize(rows)
    skipped = sorted({row["skipped"] for row in rows if "skipped" in row})
    quality, collapse = _columns(summary)
    atomic_write_text(
        out / "results.json", json.dumps(_results(spec, rows, skipped, quick), indent=2, default=str)
    )
    lines = [f"# Bench: `{spec.config.name}`" + (" (quick)" if quick else ""), ""]
    lines += [
        _mode_line(spec),
        "",
        f"Every method trains the same model on the same data for the same steps; overrides: "
        f"`{' '.join(spec.overrides) or 'none'}`. Seeds: {spec.seeds}; cells are means (± sample standard "
        "deviation over seeds when there are several). Quality is measured on the evaluation split. Bits: "
        "nominal (from the alphabets), effective (the code entropy, per vector) and coded (measured: the "
        "evaluation codes range-coded, each half under a prior fitted on the other half; per item and per vector).",
        "",
        *_table(summary, quality, collapse),
        *claim_lines(rows, spec.claims),
    ]
    if skipped:
        lines += ["", "Not run:", "", *[f"* {note}" for note in skipped]]
    lines += _figure_lines(out, summary, quality, samples)
    lines += ["", f"Raw rows: `results.json`; each run's directory is under `runs/` ({len(rows)} runs)."]
    report = atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    write_html_report(report)
    return report


def _mode_line(spec: BenchSpec) -> str:
    """How the runs started, and what the ceiling row is."""
    if spec.backbone is not None:
        mode = (
            f"**Pretrain once, quantize many:** every run fine-tunes the continuous backbone `{spec.backbone}` "
            "(its weights outside the quantizer, the codebook k-means-initialized from its encoder's outputs "
            "where the method has one) on the backbone's data split."
        )
        ceiling = " The ceiling row is that backbone, evaluated with the quantizer skipped."
    else:
        mode = "**From scratch:** every run trains the model from its initialization."
        ceiling = (
            " The ceiling row is the same model trained without the quantizer for the same steps, evaluated "
            "with it skipped."
        )
    return mode + (ceiling + " Its rate is its float32 latent (32 bits a value)." if spec.ceiling else "")


def _labels(summary: list[dict[str, Any]]) -> dict[tuple[str, float], str]:
    """What a picture calls each entry: its method, with the rate where the bench's methods have several (the
    ceiling's float32 rate does not count)."""
    several = len({e["bits"] for e in summary if not _is_ceiling(e)}) > 1
    return {
        (e["method"], e["bits"]): e["method"] + (f" at {e['bits']:g} bits" if several else "")
        for e in summary
    }


def _figure_lines(
    out: Path, summary: list[dict[str, Any]], quality: list[str], samples: SampleSet | None
) -> list[str]:
    """The pictures' sections of ``report.md``: rate-distortion, reconstructions, code usage, audio clips."""
    labels = _labels(summary)
    by_method = method_colors([e["method"] for e in summary])  # a method keeps its colour at every rate
    colors = {**by_method, **{label: by_method[method] for (method, _), label in labels.items()}}
    figures = [
        (
            f"Rate-distortion: {m}",
            f"{m} against bits per item",
            _plot_rate_distortion(summary, m, out / "plots" / f"rd_{m}.png", colors),
        )
        for m in quality[:2]
    ]
    shown = []
    if samples is not None:
        for key, label in labels.items():
            if key in samples.models:
                shown.append(replace(samples.models[key], label=label))
        grid = reconstruction_grid(
            samples.originals, shown, samples.modality, out / "plots" / "reconstructions.png"
        )
        figures += [
            ("Reconstructions", "originals and each method's reconstructions", grid),
            (
                "Code usage",
                "sorted code frequencies per method",
                usage_plot(shown, out / "plots" / "usage.png", colors),
            ),
        ]
    lines = []
    for title, alt, name in figures:
        if name is not None:
            lines += ["", f"## {title}", "", f"![{alt}](plots/{name})"]
    if samples is not None and samples.modality == "audio" and samples.sample_rate and shown:
        table = write_clips(samples.originals, shown, int(samples.sample_rate), out / "audio")
        lines += [
            "",
            "## Audio clips",
            "",
            f"The first clips of the evaluation split (at most {CLIP_SECONDS:g} s each) and each method's "
            "reconstructions, as WAV files under `audio/`.",
            "",
            *clip_table(table, "audio/"),
        ]
    return lines
