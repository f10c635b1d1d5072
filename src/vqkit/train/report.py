"""``report.md`` for a run: the metrics table and plots (matplotlib, Agg backend; PNGs under ``plots/``).

Plots:

* ``curves.png``: training loss terms over steps (and validation loss);
* ``utilization.png``: batch utilization during training and the validation split's codebook utilization;
* ``pca.png``: encoder outputs and the code vectors they are quantized to, projected on the first two principal
  components of the outputs (the IVQ paper's Fig. 3: collapsed codes sit away from the embeddings);
* ``reconstructions.png``: originals over reconstructions (images) or their log-magnitude spectrograms (audio),
  and ``usage.png``, the sorted code frequencies (``vqkit.train.report_figures``, the pictures a bench draws
  per method); for audio the clips as WAVs under ``audio/``.

Everything is written atomically (each PNG, then ``report.md``, then ``report.html``: the same report as one
self-contained page, ``vqkit.train.report_html``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import torch

from vqkit.models.base import Tokenizer
from vqkit.train.evaluate import metric_sections
from vqkit.train.plots import pyplot, save_png
from vqkit.train.report_figures import (
    AUDIO_CLIPS,
    USAGE_ITEMS,
    clip_table,
    model_samples,
    reconstruction_grid,
    usage_plot,
    write_clips,
)
from vqkit.train.report_html import write_html_report
from vqkit.train.run import RunPaths, read_run_json
from vqkit.utils.atomic import atomic_write_text


def read_log(path: Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """``metrics.csv`` as ``{(phase, name): [(step, value), ...]}``."""
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    if not path.exists():
        return series
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            series.setdefault((row["phase"], row["name"]), []).append((int(row["step"]), float(row["value"])))
    return series


def plot_curves(series: dict[tuple[str, str], list[tuple[int, float]]], out: Path) -> str | None:
    names = [key for key in series if key[0] in ("train", "pretrain", "val") and key[1].startswith("loss")]
    if not names:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for phase, name in sorted(names):
        steps, values = zip(*series[(phase, name)], strict=True)
        ax.plot(steps, values, label=f"{phase} {name}", linestyle="--" if phase == "val" else "-")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title("training curves")
    ax.legend(fontsize=7)
    return save_png(fig, out)


def plot_utilization(series: dict[tuple[str, str], list[tuple[int, float]]], out: Path) -> str | None:
    keys = [("train", "batch_utilization"), ("val", "codebook/utilization")]
    present = [k for k in keys if k in series]
    if not present:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    for key in present:
        steps, values = zip(*series[key], strict=True)
        ax.plot(steps, values, label=f"{key[0]} {key[1]}")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("step")
    ax.set_title("codebook utilization")
    ax.legend(fontsize=7)
    return save_png(fig, out)


@torch.no_grad()
def plot_pca(model: Tokenizer, x: torch.Tensor, out: Path) -> str | None:
    """Encoder outputs and their quantized vectors on the outputs' first two principal components."""
    quantizer = model.quantizer
    z = model.embed(x)
    flat, _ = quantizer.flatten_vectors(z, "embedding")
    q = quantizer.decode(quantizer.encode(z))
    qflat, _ = quantizer.flatten_vectors(q, "quantized")
    if flat.shape[0] < 3 or flat.shape[1] < 2:
        return None
    mean = flat.mean(0)
    _, _, v = torch.pca_lowrank(flat - mean, q=2, center=False)
    a, b = ((flat - mean) @ v).cpu().numpy(), ((qflat - mean) @ v).cpu()
    codes = torch.unique(b, dim=0).numpy()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(a[:, 0], a[:, 1], s=2, alpha=0.3, label=f"embeddings ({flat.shape[0]})")
    ax.scatter(
        codes[:, 0], codes[:, 1], s=12, marker="x", color="C3", label=f"code vectors used ({codes.shape[0]})"
    )
    ax.set_title("embeddings and codes, 2-D PCA")
    ax.legend(fontsize=7)
    return save_png(fig, out)


def _fmt(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.4g}"


def write_report(
    run_dir: Path,
    metrics: dict[str, float],
    *,
    model: Tokenizer | None = None,
    dataset: Any = None,
    items: int = 8,
) -> Path:
    """Write ``plots/*.png`` and ``report.md`` for ``run_dir`` from its log and ``metrics`` (an evaluation);
    with ``model`` and ``dataset`` (``vqkit eval``), also the pictures of ``vqkit.train.report_figures`` (and,
    for audio, the clips under ``audio/``) and ``report.html``. Returns ``report.md``."""
    paths = RunPaths(run_dir)
    series = read_log(paths.metrics)
    figures: list[tuple[str, str | None]] = [
        ("Training curves", plot_curves(series, paths.plots / "curves.png")),
        ("Codebook utilization over training", plot_utilization(series, paths.plots / "utilization.png")),
    ]
    clips: list[str] = []
    full = model is not None and dataset is not None and len(dataset) > 0
    if model is not None and full:
        more, clips = _model_figures(model, dataset, items, paths)
        figures += more
    lines = [f"# Run report: `{paths.root.name}`", "", *_metric_lines(metrics)]
    for title, name in figures:
        if name is not None:
            lines += ["", f"## {title}", "", f"![{title}](plots/{name})"]
    lines += clips
    if paths.data.exists():
        data_info = read_run_json(paths.data)
        if data_info:
            lines += [
                "",
                "## Data",
                "",
                "```json",
                json.dumps(data_info, indent=2, default=str)[:4000],
                "```",
            ]
    config_text = paths.config.read_text() if paths.config.exists() else ""
    if config_text:
        lines += ["", "## Resolved config", "", "```yaml", config_text.rstrip(), "```"]
    report = atomic_write_text(paths.report, "\n".join(lines) + "\n")
    if full:
        write_html_report(report)
    return report


def _model_figures(
    model: Tokenizer, dataset: Any, items: int, paths: RunPaths
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """The figures that need the model (PCA of embeddings and codes; reconstructions of the first ``items``
    items, or ``AUDIO_CLIPS`` clips; code usage), and for audio the clips' section of the report."""
    device = next(model.parameters()).device
    modality = str(getattr(dataset, "modality", "vector"))
    sample = torch.stack([dataset[i] for i in range(min(len(dataset), max(items, 256)))]).to(device)
    model.eval()
    shown = sample[: AUDIO_CLIPS if modality == "audio" else items]
    q = model.quantizer
    label = f"{q.registry_name or type(q).__name__} {q.codebook_label}"
    samples = model_samples(model, shown, sample[: USAGE_ITEMS[modality]], label, modality)
    plots = paths.plots
    figures = [
        ("Embeddings and codes (PCA)", plot_pca(model, sample, plots / "pca.png")),
        (
            "Reconstructions",
            reconstruction_grid(shown.cpu(), [samples], modality, plots / "reconstructions.png"),
        ),
        ("Code usage", usage_plot([samples], plots / "usage.png")),
    ]
    rate = getattr(dataset, "sample_rate", None)
    if modality != "audio" or not rate:
        return figures, []
    table = write_clips(shown.cpu(), [samples], int(rate), paths.root / "audio")
    return figures, ["", "## Audio clips", "", *clip_table(table, "audio/")]


def _metric_lines(metrics: dict[str, float]) -> list[str]:
    """The metrics table (whole-model and whole-codebook values), then, folded, the loss terms and collapse
    scores, and the per-code-position values."""
    sections = metric_sections(metrics)
    lines = ["## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(sections["summary"].items())]
    for key, title, column in (("terms", "loss terms", "term"), ("positions", "per code position", "metric")):
        if sections[key]:
            lines += ["", f"<details><summary>{title}</summary>", "", f"| {column} | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(sections[key].items())] + ["", "</details>"]
    return lines
