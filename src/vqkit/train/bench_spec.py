"""Bench files (YAML, ``configs/bench/``): what a ``vqkit bench`` compares, read and checked.

A bench file names a training config and what varies::

    config: ../fashion_mnist.yaml      # the shared training config (path relative to this file)
    overrides: [train.steps=600]       # applied to it for every run
    methods: all                       # registry names, or all
    bits: [8]                          # bits per latent vector; bits per item = latent positions x bits
    seeds: [0]
    backbone: speech_backbone          # optional: "pretrain once, quantize many" (below)
    ceiling: true                      # the continuous model as a row (the default)
    claims:                            # optional: judged in the report (vqkit.train.verdict)
      - {better: "VQ 1x4096", than: vq, metric: psnr}
    fixed:                             # optional: methods at their own settings and rate (the papers' rows)
      - {label: "VQ 1x4096", name: vq, kwargs: {codebook_size: 4096}, overrides: [train.pretrain_epochs=2]}
      - {label: "RVQ 8 dropout", name: residual_vq, kwargs: {dropout: 0.5}, levels: true}  # a row per prefix
    quick: {overrides: [...], bits: [...], seeds: [...], methods: [...]}   # what --quick changes

Two modes. **From scratch** (no ``backbone``): every run trains the config's model from its initialization.
**Pretrain once, quantize many** (``backbone``: a shipped model's name, ``vqkit.list_pretrained``, a
``save_pretrained`` folder or a run directory): every run starts from the same continuous backbone
(``train.init_from``: its weights outside the quantizer, then k-means from its encoder where the method has a
codebook) and fine-tunes for the same ``train.steps``; the config's model must be the backbone's architecture,
and every run keeps the config's data split (``data.split_seed`` = the config's ``seed``) so no seed tests on
items the backbone trained on.

``ceiling`` (default true): the continuous model as a row of its own, evaluated with the quantizer skipped;
from scratch, the same model trained without the quantizer for the same steps (``train.continuous``), once per
seed; with a backbone, the backbone itself.

Errors name the key (``bench.methods``, ``bench.fixed[1].kwargs``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqkit.rates import standalone_quantizers
from vqkit.registry import list_quantizers
from vqkit.train.config import ConfigError


@dataclass
class BenchSpec:
    config: Path
    overrides: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    bits: list[int] = field(default_factory=lambda: [8])
    seeds: list[int] = field(default_factory=lambda: [0])
    fixed: list[dict[str, Any]] = field(default_factory=list)
    backbone: str | None = None
    ceiling: bool = True
    claims: list[dict[str, str]] = field(default_factory=list)


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
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), str):
        raise ConfigError(f"bench: {str(path)!r} must be a mapping with a 'config' path")
    _check_types(raw, path)
    section = dict(raw)
    if quick:
        extra = raw.get("quick") or {}
        section["overrides"] = [*(raw.get("overrides") or []), *(extra.get("overrides") or [])]
        for key in ("methods", "bits", "seeds"):
            if key in extra:
                section[key] = extra[key]
    fixed = [_fixed_entry(entry, i) for i, entry in enumerate(section.get("fixed") or [])]
    chosen = section.get("methods", [] if fixed else "all")
    every_row = [e["label"] for e in fixed] + (standalone_quantizers() if chosen == "all" else list(chosen))
    claims = _claims(raw.get("claims") or [], every_row)  # before --methods narrows the rows
    if methods:
        fixed = [e for e in fixed if e["label"] in methods or e["name"] in methods]
        chosen = [m for m in methods if not any(m in (e["label"], e["name"]) for e in fixed)]
    names = standalone_quantizers() if chosen == "all" else list(chosen)
    unknown_methods = sorted(set(names) - set(list_quantizers()))
    if unknown_methods:
        raise ConfigError(
            f"bench.methods: unknown quantizer {unknown_methods[0]!r}; known: {list_quantizers()}"
        )
    bits = [int(b) for b in section.get("bits", [8])]
    if seeds is None:
        seeds = [int(s) for s in section.get("seeds", [0])]
    if not seeds or not ((names and bits) or fixed):
        raise ConfigError("bench: seeds, and methods with bits (or fixed entries), must not be empty")
    return BenchSpec(
        path.parent / str(section["config"]),
        list(section.get("overrides") or []),
        names,
        bits,
        seeds,
        fixed,
        _backbone(raw.get("backbone"), path),
        bool(raw.get("ceiling", True)),
        claims,
    )


def _claims(raw: Any, rows: list[str]) -> list[dict[str, str]]:
    """The ``claims`` key: ``{better, than, metric}`` mappings naming the bench's rows (labels or methods)."""
    if not isinstance(raw, list):
        raise ConfigError(f"bench.claims: expected a list of {{better, than, metric}}, got {raw!r}")
    claims = []
    for i, claim in enumerate(raw):
        if not isinstance(claim, dict) or set(claim) != {"better", "than", "metric"}:
            raise ConfigError(f"bench.claims[{i}]: expected {{better, than, metric}}, got {claim!r}")
        for key in ("better", "than"):
            if claim[key] not in rows:
                raise ConfigError(
                    f"bench.claims[{i}].{key}: expected one of the rows {rows}, got {claim[key]!r}"
                )
        claims.append({k: str(v) for k, v in claim.items()})
    return claims


def _backbone(value: Any, path: Path) -> str | None:
    """The ``backbone`` key: a shipped model's name, or a folder (relative to the bench file when it is one)."""
    if value is None:
        return None
    from vqkit.pretrained import is_pretrained_name

    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"bench.backbone: expected a shipped model's name or a folder in {str(path)!r}, got {value!r}"
        )
    if is_pretrained_name(value):
        return value
    folder = path.parent / value
    if not folder.is_dir():
        raise ConfigError(
            f"bench.backbone: {value!r} is neither a shipped model's name nor a folder next to {str(path)!r}"
        )
    return str(folder)


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"bench: cannot read {str(path)!r}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:  # a binary file given as the bench file
        raise ConfigError(f"bench: {str(path)!r} is not a UTF-8 text file: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"bench: {str(path)!r} is not valid YAML: {err}") from err


KEYS = ("config", "overrides", "methods", "bits", "seeds", "quick", "fixed", "backbone", "ceiling", "claims")


def _check_types(raw: dict[str, Any], path: Path) -> None:
    """The bench file's keys and their value types (and of its ``quick`` section), each named with the file."""
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(f"bench.{unknown[0]}: unknown key; valid keys: {sorted(KEYS)}")
    quick = raw.get("quick") or {}
    if not isinstance(quick, dict):
        raise ConfigError(f"bench.quick: expected a mapping in {str(path)!r}, got {quick!r}")
    for prefix, section in (("bench", raw), ("bench.quick", quick)):
        for key, kind, expected in (
            ("overrides", str, "a list of key=value strings"),
            ("bits", int, "a list of integers"),
            ("seeds", int, "a list of integers"),
            ("methods", str, "'all' or a list of quantizer names"),
        ):
            value = section.get(key)
            if value is None or (key == "methods" and value == "all"):
                continue
            if not isinstance(value, list) or not all(
                isinstance(v, kind) and not isinstance(v, bool) for v in value
            ):
                raise ConfigError(f"{prefix}.{key}: expected {expected} in {str(path)!r}, got {value!r}")
    if not isinstance(raw.get("ceiling", True), bool):
        raise ConfigError(f"bench.ceiling: expected true or false in {str(path)!r}, got {raw['ceiling']!r}")
    if not isinstance(raw.get("fixed") or [], list):
        raise ConfigError(f"bench.fixed: expected a list of entries in {str(path)!r}, got {raw['fixed']!r}")


def _fixed_entry(entry: Any, index: int) -> dict[str, Any]:
    if not isinstance(entry, dict) or entry.get("name") not in list_quantizers():
        raise ConfigError(
            f"bench.fixed[{index}]: expected {{label, name: <registered quantizer>, kwargs}}, got {entry!r}"
        )
    kwargs = entry.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"bench.fixed[{index}].kwargs: expected a mapping, got {kwargs!r}")
    overrides = entry.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"bench.fixed[{index}].overrides: expected a list of key=value, got {overrides!r}")
    unknown = sorted(set(entry) - {"label", "name", "kwargs", "overrides", "levels"})
    if unknown:
        raise ConfigError(f"bench.fixed[{index}].{unknown[0]}: unknown key")
    return {
        "label": str(entry.get("label") or entry["name"]),
        "name": entry["name"],
        "kwargs": dict(kwargs),
        "overrides": list(overrides),
        "levels": _levels_flag(entry.get("levels", False), index),
    }


def _levels_flag(value: Any, index: int) -> bool:
    """``levels: true``: besides the full codes, evaluate the trained model at every prefix of its residual
    levels (one row each, at that prefix's rate): the rate-distortion curve of one model."""
    if not isinstance(value, bool):
        raise ConfigError(f"bench.fixed[{index}].levels: expected true or false, got {value!r}")
    return value
