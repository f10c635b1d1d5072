"""``vqkit bench``: several quantizers on one dataset and model at equal bits per item and an equal budget.

What a bench compares is its bench file (``vqkit.train.bench_spec``). Every (method, bits, seed) is one training
run under ``OUT/runs/<method>-<bits>b-s<seed>``, configured by ``vqkit.rates.kwargs_at_rate`` (k-means init
wherever the method takes ``init``); a fixed entry runs at its own settings under ``OUT/runs/<label>-s<seed>``.
The model, data, steps, batch size and optimizer are the same for every method. With a ``backbone`` every run
is a fine-tune of it (``train.init_from``, the bench file's "pretrain once, quantize many" mode), on the
config's data split. The ceiling (``ceiling: true``, the default) is the continuous model, evaluated with the
quantizer skipped: ``OUT/runs/continuous-s<seed>`` trained without the quantizer for the same steps, or, with a
backbone, the backbone itself (``OUT/runs/ceiling``, evaluated, not trained). A run whose ``bench.json``
exists is skipped, so an interrupted bench resumes where it stopped (and a run interrupted mid-training resumes
from its checkpoint); a run made under another configuration is refused, not reused. Methods that cannot reach
a rate are listed with the reason. The report is ``vqkit.train.bench_report``'s.

A run's row (its ``bench.json``, and one entry of ``results.json``'s ``rows``) counts optimizer steps three
ways, as a reader comparing budgets needs them:

* ``steps``: the steps with the quantizer (``train.steps``: the same for every method of a bench);
* ``pretrain_epochs``: the epochs of the pretrain stage before them (``train.pretrain_epochs``; 0: none);
* ``total_steps``: every optimizer step the run took, pretraining included (its final checkpoint's step).

Progress: one reporter over the bench's runs (``vqkit.train.progress``: a line per run trained, with the ETA),
under which each run's training and evaluation bars nest.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vqkit.rates import kwargs_at_rate
from vqkit.train import checkpoint as ckpt
from vqkit.train.bench_report import write_bench_report
from vqkit.train.bench_spec import BenchSpec, load_bench
from vqkit.train.config import ConfigError, RunConfig, apply_override, build_config, read_config_file
from vqkit.train.evaluate import evaluate
from vqkit.train.init_from import load_backbone
from vqkit.train.loop import train
from vqkit.train.progress import progress
from vqkit.train.report_figures import AUDIO_CLIPS, USAGE_ITEMS, SampleSet, fixed_items, model_samples, slug
from vqkit.train.run import RunPaths, load_run_model, load_split, run_config
from vqkit.utils.atomic import atomic_write_text
from vqkit.utils.timing import best_seconds

__all__ = ["load_bench", "run_bench", "write_bench_report"]


@torch.no_grad()
def _throughput(model: Any, dataset: Any, batch: int = 256, *, unquantized: bool = False) -> dict[str, float]:
    """Items/s of ``model.encode`` (encoder + quantizer) and vectors/s of ``quantizer.encode`` alone;
    ``unquantized`` (a ceiling): items/s of the encoder alone, and no quantizer figure (NaN)."""
    x = torch.stack([dataset[i] for i in range(min(batch, len(dataset)))])
    if unquantized:
        return {
            "encode_items_per_s": x.shape[0] / best_seconds(lambda: model.embed(x)),
            "quantizer_vectors_per_s": math.nan,
        }
    z = model.embed(x)
    vectors = model.quantizer.flatten_vectors(z, "z")[0].shape[0]
    return {
        "encode_items_per_s": x.shape[0] / best_seconds(lambda: model.encode(x)),
        "quantizer_vectors_per_s": vectors / best_seconds(lambda: model.quantizer.encode(z)),
    }


@dataclass
class _Run:
    """One bench run, planned: what the row calls it, the quantizer it trains, where, and its config."""

    method: str
    bits: int | None
    seed: int
    quantizer: str
    kwargs: dict[str, Any]
    run_dir: Path
    config: RunConfig
    levels: bool = False
    ceiling: bool = False  # the continuous model: evaluated with the quantizer skipped
    backbone: str | None = None  # a ceiling that is this backbone, evaluated as it is (nothing is trained)


def _plan(
    base: dict[str, Any], method: str, bits: int | None, seed: int, out: Path, fixed: dict[str, Any] | None
) -> _Run | dict[str, Any]:
    """The run of ``method`` at ``bits`` (or of the ``fixed`` entry), or its ``skipped`` row when the method
    cannot reach that rate."""
    if fixed is not None:  # the entry's own settings, at whatever rate they give
        name, kwargs = fixed["name"], fixed["kwargs"]
        run_dir = out / "runs" / f"{slug(fixed['label'])}-s{seed}"
    else:
        assert bits is not None
        name, kwargs = method, kwargs_at_rate(method, int(base["model"].get("latent_dim", 0)), bits)
        run_dir = out / "runs" / f"{method}-{bits}b-s{seed}"
    if isinstance(kwargs, str):
        return {"method": method, "bits": bits, "seed": seed, "skipped": kwargs}
    raw = copy.deepcopy(base)
    for override in fixed["overrides"] if fixed is not None else []:  # e.g. train.pretrain_epochs=2
        raw = apply_override(raw, override)
    raw["seed"] = seed
    raw["model"]["quantizer"] = {"name": name, "kwargs": kwargs}
    levels = bool(fixed["levels"]) if fixed is not None else False
    return _Run(method, bits, seed, name, kwargs, run_dir, build_config(raw), levels)


def _plan_ceiling(base: dict[str, Any], seed: int, out: Path, backbone: str | None) -> _Run:
    """The ceiling row's run: the config's model trained without its quantizer for the same steps, or the
    backbone itself (module docstring)."""
    raw = copy.deepcopy(base)
    raw["seed"] = seed
    train_section = {k: v for k, v in (raw.get("train") or {}).items() if k != "init_from"}
    if backbone is None:
        raw["train"] = {**train_section, "continuous": True}
        label, run_dir = "continuous (ceiling)", out / "runs" / f"continuous-s{seed}"
    else:
        raw["train"] = train_section
        label, run_dir = f"continuous backbone {Path(backbone).name} (ceiling)", out / "runs" / "ceiling"
    return _Run(label, None, seed, "none", {}, run_dir, build_config(raw), ceiling=True, backbone=backbone)


def _run_one(run: _Run) -> dict[str, Any]:
    """The row of one run: read back when it is finished, else trained (or resumed), evaluated and written."""
    settings = _settings(run.config)
    result_path = run.run_dir / "bench.json"
    if result_path.exists():
        row = dict(json.loads(result_path.read_text()))
        _check_same_run(run.run_dir, row.get("config"), settings)
        return row
    if run.backbone is not None:  # the backbone as the ceiling: evaluated, not trained
        row = _result_row(run, load_backbone(run.backbone), 0, None, settings)
        atomic_write_text(result_path, json.dumps(row, indent=2))
        return row
    resume = ckpt.latest_checkpoint(RunPaths(run.run_dir).checkpoints) is not None
    if resume:
        _check_same_run(run.run_dir, _settings(run_config(run.run_dir)), settings)
    started = time.perf_counter()
    final = train(run.config, run.run_dir, resume=resume)
    train_seconds = time.perf_counter() - started if not resume else None  # a resumed run's time is partial
    model, _ = load_run_model(run.run_dir)
    row = _result_row(run, model, ckpt.checkpoint_step(final), train_seconds, settings)
    atomic_write_text(result_path, json.dumps(row, indent=2))
    return row


def _result_row(
    run: _Run, model: Any, total_steps: int, train_seconds: float | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """The trained run's ``bench.json``: the quantizer's rate and size, the test metrics, the step counts (see
    the module docstring), the time and throughput, and the settings it was made with."""
    test = load_split(run.config, run.config.eval.split)  # the run's split (data.split_seed, else its seed)
    metrics = evaluate(model, test, run.config, progress=True, unquantized=run.ceiling)
    if run.ceiling:
        return _ceiling_row(run, model, test, metrics, total_steps, train_seconds, settings)
    q = model.quantizer
    levels = [
        {
            "num_quantizers": k,
            "bits": q.bits_per_vector_at(k),
            "metrics": evaluate(model, test, run.config, num_quantizers=k, progress=True),
        }
        for k in (range(1, q.num_levels) if run.levels else ())
    ]
    return {
        "method": run.method,
        "quantizer": run.quantizer,
        "bits": run.bits if run.bits is not None else q.bits_per_vector,
        "seed": run.seed,
        "quantizer_kwargs": run.kwargs,
        "codebook_size": q.codebook_label,
        "codebook_parameters": q.num_codebook_parameters,
        "nominal_bits": q.bits_per_vector,
        "modality": getattr(test, "modality", "vector"),
        "steps": run.config.train.steps,
        "pretrain_epochs": run.config.train.pretrain_epochs,
        "total_steps": total_steps,
        "train_seconds": train_seconds,
        "metrics": metrics,
        "levels": levels,
        **_throughput(model, test),
        "config": settings,
    }


def _ceiling_row(
    run: _Run,
    model: Any,
    test: Any,
    metrics: dict[str, float],
    total_steps: int,
    train_seconds: float | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The continuous model's row: its rate is its float32 latent (32 bits a value), it has no codebook."""
    bits = 32 * int(model.quantizer.dim)
    return {
        "method": run.method,
        "quantizer": "none",
        "bits": bits,
        "seed": run.seed,
        "ceiling": True,
        "backbone": run.backbone,
        "quantizer_kwargs": {},
        "codebook_size": "none (float32 latent)",
        "codebook_parameters": 0,
        "nominal_bits": bits,
        "modality": getattr(test, "modality", "vector"),
        "steps": run.config.train.steps if run.backbone is None else 0,
        "pretrain_epochs": 0,
        "total_steps": total_steps,
        "train_seconds": train_seconds,
        "metrics": metrics,
        "levels": [],
        **_throughput(model, test, unquantized=True),
        "config": settings,
    }


# Settings that do not change what a run computes: where it runs and how often it logs or saves (a resumed run
# reaches the same weights whatever the checkpoint interval), and what happens on a non-finite loss (a finished
# run had none, or it stopped). Machines of a split bench may differ in them.
_INCIDENTAL = frozenset(
    {
        "train.device",
        "train.progress",
        "train.tensorboard",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.nonfinite",
        "train.max_skips",
    }
)


def level_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``levels: true`` run's prefixes as rows of their own: ``"<label> (k/L levels)"`` at the prefix's rate,
    so the report and the rate-distortion plot show one model's curve beside the other methods."""
    total = len(row.get("levels", [])) + 1
    return [
        {
            **row,
            "method": f"{row['method']} ({level['num_quantizers']}/{total} levels)",
            "bits": level["bits"],
            "nominal_bits": level["bits"],
            "metrics": level["metrics"],
            "levels": [],
        }
        for level in row.get("levels", [])
    ]


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
    report_only: bool = False,
) -> Path:
    """Run (or resume) the bench in ``path`` into ``out``; returns the report path. ``methods`` and ``seeds``
    narrow or replace the file's (a run of another seed is another run folder, so seeds add up).
    ``report_only``: train nothing; the report covers the finished runs and lists the others as not run."""
    spec = load_bench(path, quick=quick, methods=methods, seeds=seeds)
    base = read_config_file(spec.config)
    for override in [*spec.overrides, "train.tensorboard=false", *_backbone_overrides(spec, base)]:
        base = apply_override(base, override)
    out = Path(out)
    planned: list[tuple[str, _Run | dict[str, Any]]] = [
        (f"bench: {run.method}, seed {run.seed}", run) for run in _ceilings(spec, base, out)
    ]
    planned += [
        (note, _plan(base, m, bits, seed, out, fixed)) for note, (m, bits, seed, fixed) in _entries(spec)
    ]
    runs = [run for _, run in planned if isinstance(run, _Run)]
    done = sum((run.run_dir / "bench.json").exists() for run in runs)
    rows, shown = [], []
    # One line per run trained (finished runs are read back without one); a run's training and evaluation bars
    # nest inside this one on a terminal and print nothing in a log.
    with progress(len(runs), desc="bench", unit="run", initial=done, every=0.0) as bar:
        for note, run in planned:
            if not isinstance(run, _Run):  # a rate the method cannot reach
                rows.append(run)
                continue
            finished = (run.run_dir / "bench.json").exists()
            if not finished and report_only:  # reported as missing, not trained
                rows.append({"method": run.method, "bits": run.bits, "seed": run.seed, "skipped": _MISSING})
                continue
            if not finished:
                bar.note(note)
            rows.append(_run_one(run))
            if run.seed == spec.seeds[0] and not run.ceiling:
                shown.append((run, rows[-1]))
            rows.extend(level_rows(rows[-1]))
            if not finished:
                bar.update(1)
    return write_bench_report(out, spec, rows, quick=quick, samples=_samples(shown))


_MISSING = "runs not finished yet (reported with --report-only)"


def _backbone_overrides(spec: BenchSpec, base: dict[str, Any]) -> list[str]:
    """What "pretrain once, quantize many" sets in every run: the backbone to start from, and the config's own
    data split (the backbone's) whatever the run's seed."""
    if spec.backbone is None:
        return []
    split_seed = (base.get("data") or {}).get("split_seed", base.get("seed", 0))
    return [f"train.init_from={json.dumps(spec.backbone)}", f"data.split_seed={split_seed}"]


def _ceilings(spec: BenchSpec, base: dict[str, Any], out: Path) -> list[_Run]:
    """The ceiling runs: one per seed from scratch, the backbone once (its evaluation has no seed)."""
    if not spec.ceiling:
        return []
    # The backbone is evaluated once, under the config's own seed (its split's), whatever seeds a call runs.
    seeds = spec.seeds if spec.backbone is None else [int(base.get("seed", 0))]
    return [_plan_ceiling(base, seed, out, spec.backbone) for seed in seeds]


def _entries(spec: BenchSpec) -> Iterator[tuple[str, tuple[str, int | None, int, dict[str, Any] | None]]]:
    """Every run of the bench, in order, as ``(what the log says, (method, bits, seed, fixed entry))``."""
    for seed in spec.seeds:
        for entry in spec.fixed:
            note = f"bench: {entry['label']} ({entry['name']} {entry['kwargs']}), seed {seed}"
            yield note, (entry["label"], None, seed, entry)
        for bits in spec.bits if spec.methods else []:
            for method in spec.methods:
                yield f"bench: {method} at {bits} bits, seed {seed}", (method, bits, seed, None)


def _samples(runs: list[tuple[_Run, dict[str, Any]]]) -> SampleSet | None:
    """What the report's pictures show: each first-seed run's model (and each prefix of a ``levels`` run's) on
    the same few test items. Runs on other data than the first (a fixed entry's data override) are left out."""
    if not runs:
        return None
    first = runs[0][0].config
    test = load_split(first, first.eval.split)
    modality = str(getattr(test, "modality", "vector"))
    items = fixed_items(test, AUDIO_CLIPS if modality == "audio" else first.eval.report_items)
    usage_items = fixed_items(test, USAGE_ITEMS[modality])
    models = {}
    for run, row in runs:
        if run.config.data != first.data or run.config.seed != first.seed:
            continue
        model, _ = load_run_model(run.run_dir)
        models[(row["method"], row["bits"])] = model_samples(
            model, items, usage_items, row["method"], modality
        )
        for level, prefix in zip(row.get("levels", []), level_rows(row), strict=True):
            k = level["num_quantizers"]
            sample = model_samples(model, items, usage_items, prefix["method"], modality, num_quantizers=k)
            models[(prefix["method"], prefix["bits"])] = sample
    return SampleSet(modality, getattr(test, "sample_rate", None), items, models)
