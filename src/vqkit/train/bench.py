"""``vqkit bench``: several quantizers on one dataset and model at equal bits per item and an equal budget.

A bench file (YAML, ``configs/bench/``) names a training config and what varies::

    config: ../fashion_mnist.yaml      # the shared training config (path relative to this file)
    overrides: [train.steps=600]       # applied to it for every run
    methods: all                       # registry names, or all
    bits: [8]                          # bits per latent vector; bits per item = latent positions x bits
    seeds: [0]
    fixed:                             # optional: methods at their own settings and rate (the papers' rows)
      - {label: "VQ 1x4096", name: vq, kwargs: {codebook_size: 4096}, overrides: [train.pretrain_epochs=2]}
    quick: {overrides: [...], bits: [...], seeds: [...], methods: [...]}   # what --quick changes

Every (method, bits, seed) is one training run under ``OUT/runs/<method>-<bits>b-s<seed>``, configured by
``vqkit.rates.kwargs_at_rate`` (k-means init wherever the method takes ``init``). The model, data, steps, batch
size and optimizer are the same for every method. A run whose ``bench.json`` exists is skipped, so an
interrupted bench resumes where it stopped (and a run interrupted mid-training resumes from its checkpoint).
Methods that cannot reach a rate are listed with the reason.

The report (``OUT/report.md``, ``OUT/results.json``, ``OUT/plots/``) gives per method: the codebook size as
the papers write it, codebook parameters, nominal and effective bits, utilization, perplexity, dead codes, the
modality's quality metrics, the collapse study's scores where the data has labels, encode throughput and training
time (mean ± sample standard deviation over seeds when there are several), and a rate-distortion plot of quality
against bits per item.
"""

from __future__ import annotations

import copy
import io
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import vqkit
from vqkit.rates import kwargs_at_rate
from vqkit.train import checkpoint as ckpt
from vqkit.train.config import ConfigError, apply_override, build_config, read_config_file
from vqkit.utils.atomic import atomic_write_bytes, atomic_write_text

# The collapse study's scores, where the data has labels (``vqkit.train.evaluate``): column title per metric.
COLLAPSE = {"collapse/mode_separability": "mode separability", "collapse/tokens_distance": "tokens TV"}
QUALITY = {
    "image": ("psnr", "lpips_alex", "ssim", "mse"),
    "audio": ("lsd", "stoi", "pesq", "mel_distance", "chroma_similarity"),  # the IVQ paper's CS last
}
HIGHER_IS_BETTER = {"psnr", "ssim", "ms_ssim", "stoi", "pesq", "si_sdr", "chroma_similarity"}


@dataclass
class BenchSpec:
    config: Path
    overrides: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    bits: list[int] = field(default_factory=lambda: [8])
    seeds: list[int] = field(default_factory=lambda: [0])
    fixed: list[dict[str, Any]] = field(default_factory=list)


def load_bench(
    path: str | Path,
    *,
    quick: bool = False,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
) -> BenchSpec:
    """Read a bench file (``quick`` applies its ``quick`` section; ``methods`` keeps the named entries and
    ``seeds`` replaces the file's seeds); errors name the key."""
    path = Path(path)
    try:
        import yaml

        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"bench: cannot read {str(path)!r}: {err.strerror or err}") from err
    if not isinstance(raw, dict) or "config" not in raw:
        raise ConfigError(f"bench: {str(path)!r} must be a mapping with a 'config' path")
    known = {"config", "overrides", "methods", "bits", "seeds", "quick", "fixed"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"bench.{unknown[0]}: unknown key; valid keys: {sorted(known)}")
    section = dict(raw)
    if quick:
        extra = raw.get("quick") or {}
        section["overrides"] = [*(raw.get("overrides") or []), *(extra.get("overrides") or [])]
        for key in ("methods", "bits", "seeds"):
            if key in extra:
                section[key] = extra[key]
    fixed = [_fixed_entry(entry, i) for i, entry in enumerate(section.get("fixed") or [])]
    chosen = section.get("methods", [] if fixed else "all")
    if methods:
        fixed = [e for e in fixed if e["label"] in methods or e["name"] in methods]
        chosen = [m for m in methods if not any(m in (e["label"], e["name"]) for e in fixed)]
    names = vqkit.list_quantizers() if chosen == "all" else list(chosen)
    unknown_methods = sorted(set(names) - set(vqkit.list_quantizers()))
    if unknown_methods:
        raise ConfigError(
            f"bench.methods: unknown quantizer {unknown_methods[0]!r}; known: {vqkit.list_quantizers()}"
        )
    bits = [int(b) for b in section.get("bits", [8])]
    if seeds is None:
        seeds = [int(s) for s in section.get("seeds", [0])]
    if not seeds or not ((names and bits) or fixed):
        raise ConfigError("bench: seeds, and methods with bits (or fixed entries), must not be empty")
    return BenchSpec(
        path.parent / str(section["config"]), list(section.get("overrides") or []), names, bits, seeds, fixed
    )


def _fixed_entry(entry: Any, index: int) -> dict[str, Any]:
    if not isinstance(entry, dict) or entry.get("name") not in vqkit.list_quantizers():
        raise ConfigError(
            f"bench.fixed[{index}]: expected {{label, name: <registered quantizer>, kwargs}}, got {entry!r}"
        )
    kwargs = entry.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"bench.fixed[{index}].kwargs: expected a mapping, got {kwargs!r}")
    overrides = entry.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"bench.fixed[{index}].overrides: expected a list of key=value, got {overrides!r}")
    unknown = sorted(set(entry) - {"label", "name", "kwargs", "overrides"})
    if unknown:
        raise ConfigError(f"bench.fixed[{index}].{unknown[0]}: unknown key")
    return {
        "label": str(entry.get("label") or entry["name"]),
        "name": entry["name"],
        "kwargs": dict(kwargs),
        "overrides": list(overrides),
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _best_rate(fn: Any, repeats: int = 3) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def _throughput(model: Any, dataset: Any, batch: int = 256) -> dict[str, float]:
    """Items/s of ``model.encode`` (encoder + quantizer) and vectors/s of ``quantizer.encode`` alone."""
    x = torch.stack([dataset[i] for i in range(min(batch, len(dataset)))])
    z = model.embed(x)
    vectors = model.quantizer.flatten_vectors(z, "z")[0].shape[0]
    return {
        "encode_items_per_s": x.shape[0] / _best_rate(lambda: model.encode(x)),
        "quantizer_vectors_per_s": vectors / _best_rate(lambda: model.quantizer.encode(z)),
    }


def _run_one(
    spec: BenchSpec,
    base: dict[str, Any],
    method: str,
    bits: int | None,
    seed: int,
    out: Path,
    *,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from vqkit.train.evaluate import evaluate
    from vqkit.train.loop import train
    from vqkit.train.run import load_run_model, load_split, run_config

    dim = int(base["model"].get("latent_dim", 0))
    name = fixed["name"] if fixed is not None else method
    kwargs: dict[str, Any] | str
    if fixed is not None:  # the entry's own settings, at whatever rate they give
        kwargs = fixed["kwargs"]
        run_dir = out / "runs" / f"{_slug(fixed['label'])}-s{seed}"
    else:
        assert bits is not None
        kwargs = kwargs_at_rate(method, dim, bits)
        run_dir = out / "runs" / f"{method}-{bits}b-s{seed}"
    if isinstance(kwargs, str):
        return {"method": method, "bits": bits, "seed": seed, "skipped": kwargs}
    raw = copy.deepcopy(base)
    for override in fixed["overrides"] if fixed is not None else []:  # e.g. train.pretrain_epochs=2
        raw = apply_override(raw, override)
    raw["seed"] = seed
    raw["model"]["quantizer"] = {"name": name, "kwargs": kwargs}
    config = build_config(raw)
    settings = _settings(config)
    result_path = run_dir / "bench.json"
    if result_path.exists():
        row = dict(json.loads(result_path.read_text()))
        _check_same_run(run_dir, row.get("config"), settings)
        return row
    resume = ckpt.latest_checkpoint(run_dir / "checkpoints") is not None
    if resume:
        _check_same_run(run_dir, _settings(run_config(run_dir)), settings)
    started = time.perf_counter()
    train(config, run_dir, resume=resume)
    train_seconds = time.perf_counter() - started
    model, _ = load_run_model(run_dir)
    test = load_split(config, config.eval.split)  # config.seed is this run's seed
    metrics = evaluate(model, test, config)
    q = model.quantizer
    row = {
        "method": method,
        "quantizer": name,
        "bits": bits if bits is not None else q.bits_per_vector,
        "seed": seed,
        "quantizer_kwargs": kwargs,
        "codebook_size": q.codebook_label,
        "codebook_parameters": q.num_codebook_parameters,
        "nominal_bits": q.bits_per_vector,
        "modality": getattr(test, "modality", "vector"),
        "steps": config.train.steps + config.train.pretrain_epochs,
        "train_seconds": train_seconds if not resume else None,  # a resumed run's time is partial
        "metrics": metrics,
        **_throughput(model, test),
        "config": settings,
    }
    atomic_write_text(result_path, json.dumps(row, indent=2))
    return row


# Settings that do not change what a run computes: where it runs and how often it logs or saves (a resumed run
# reaches the same weights whatever the checkpoint interval). Machines of a split bench may differ in them.
_INCIDENTAL = frozenset(
    {
        "train.device",
        "train.progress",
        "train.tensorboard",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
    }
)


def _settings(config: Any) -> dict[str, Any]:
    """A run's configuration as it reads back from ``bench.json`` (tuples become lists), for comparison."""
    return dict(json.loads(json.dumps(config.to_dict(), default=str)))


def _check_same_run(run_dir: Path, recorded: dict[str, Any] | None, settings: dict[str, Any]) -> None:
    """A finished or interrupted run is reused only under the configuration it was made with: after an edit
    of the bench file (more steps, other overrides) its numbers would silently stand for another setting."""
    if recorded is None:  # a result written before configurations were kept
        return
    changed = [d for d in _differences(recorded, settings) if d not in _INCIDENTAL]
    if not changed:
        return
    raise ConfigError(
        f"out: {str(run_dir)!r} holds a run made with another configuration (changed: {', '.join(changed)}); "
        "pass another --out, or delete that run to redo it"
    )


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def run_bench(
    path: str | Path,
    out: str | Path,
    *,
    quick: bool = False,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
) -> Path:
    """Run (or resume) the bench in ``path`` into ``out``; returns the report path. ``methods`` and ``seeds``
    narrow or replace the file's (a run of another seed is another run folder, so seeds add up)."""
    spec = load_bench(path, quick=quick, methods=methods, seeds=seeds)
    base = read_config_file(spec.config)
    for override in [*spec.overrides, "train.progress=false", "train.tensorboard=false"]:
        base = apply_override(base, override)
    out = Path(out)
    rows = []
    for seed in spec.seeds:
        for entry in spec.fixed:
            print(f"bench: {entry['label']} ({entry['name']} {entry['kwargs']}), seed {seed}", flush=True)
            rows.append(_run_one(spec, base, entry["label"], None, seed, out, fixed=entry))
        for bits in spec.bits if spec.methods else []:
            for method in spec.methods:
                print(f"bench: {method} at {bits} bits, seed {seed}", flush=True)
                rows.append(_run_one(spec, base, method, bits, seed, out))
    return write_bench_report(out, spec, rows, quick=quick)


# ---------------------------------------------------------------------------------------------- report
def _aggregate(values: list[float]) -> tuple[float, float | None]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return math.nan, None
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else None)


def _pair(pair: tuple[float, float | None], digits: int = 4) -> str:
    """``mean`` or ``mean ± spread``; a dash for a missing value."""
    mean, spread = pair
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    for entry in summary:
        value = entry["metrics"].get(metric, (math.nan, None))[0]
        bits = entry["metrics"].get("bits_per_item", (math.nan, None))[0]
        if not math.isnan(value) and not math.isnan(bits):
            series.setdefault(entry["method"], []).append((bits, value))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, points in sorted(series.items()):
        points.sort()
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=method)
    ax.set_xlabel("bits per item")
    ax.set_ylabel(metric + (" (higher is better)" if metric in HIGHER_IS_BETTER else " (lower is better)"))
    ax.legend(fontsize=7, ncol=2)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path.name


def write_bench_report(
    out: Path, spec: BenchSpec, rows: list[dict[str, Any]], *, quick: bool = False
) -> Path:
    summary = summarize(rows)
    skipped = sorted({row["skipped"] for row in rows if "skipped" in row})
    modality = summary[0]["modality"] if summary else "vector"
    quality = [m for m in QUALITY.get(modality, ("mse",)) if any(m in e["metrics"] for e in summary)] or [
        "mse"
    ]
    collapse = [m for m in COLLAPSE if any(m in e["metrics"] for e in summary)]
    results = {
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
            "vqkit": vqkit.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
        },
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    plots = [(m, _plot_rate_distortion(summary, m, out / "plots" / f"rd_{m}.png")) for m in quality[:2]]
    head = [
        "method",
        "bits/vector",
        "bits/item",
        "codebook",
        "codebook params",
        "eff. bits",
        "util",
        "perplexity",
        "dead",
        *quality,
        *[COLLAPSE[m] for m in collapse],
        "enc items/s",
        "train s",
    ]
    lines = [f"# Bench: `{spec.config.name}`" + (" (quick)" if quick else ""), ""]
    lines += [
        f"Every method trains the same model on the same data for the same steps; overrides: "
        f"`{' '.join(spec.overrides) or 'none'}`. Seeds: {spec.seeds}; cells are means (± sample standard "
        "deviation over seeds when there are several). Quality is measured on the evaluation split.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    nothing = (math.nan, None)
    for entry in summary:
        m = entry["metrics"]
        cells = [
            entry["method"],
            f"{entry['bits']:.4g}",
            _pair(m.get("bits_per_item", nothing), 5),
            entry["codebook_size"],
            str(entry["codebook_parameters"]),
            _pair(m.get("codebook/effective_bits", nothing), 3),
            _pair(m.get("codebook/utilization", nothing), 3),
            _pair(m.get("codebook/perplexity", nothing)),
            _pair(m.get("codebook/dead_codes", nothing)),
            *[_pair(m.get(q, nothing)) for q in (*quality, *collapse)],
            _pair(entry["encode_items_per_s"], 3),
            _pair(entry["train_seconds"], 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
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
