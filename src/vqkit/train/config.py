"""Run configuration: YAML files with inheritance, command-line overrides, validation, the resolved record.

A config file is YAML with four sections and an optional ``base``::

    base: base.yaml               # a path relative to this file: its values are the defaults of this one
    seed: 0
    data:  {name: digits, data_dir: null, ...dataset options}        # -> vqkit.data.load_dataset
    model: {name: image_vqvae, ...model options, quantizer: {name: vq, kwargs: {...}}}  # -> build_model
    train: {steps: 2000, batch_size: 128, lr: 3.0e-4, ...}             # -> TrainConfig
    eval:  {lpips: alex, fid_samples: 0, ...}                          # -> EvalConfig

Deltas are deep-merged over their base (mappings merge key by key; anything else replaces), then overrides
``section.key=value`` (the value parsed as YAML: ``train.steps=100``, ``model.quantizer.name=ivq``) are applied
in order. ``train`` and ``eval`` keys are checked against their dataclasses (a typo is an error naming the key
and listing the valid ones); ``data`` and ``model`` are checked by ``load_dataset`` and ``build_model``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

SECTIONS = ("seed", "data", "model", "train", "eval")
NonFinite = Literal["stop", "skip"]
NONFINITE: tuple[str, ...] = get_args(NonFinite)  # what a NaN or Inf loss does: train.nonfinite


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file or key."""


@dataclass
class TrainConfig:
    """Optimization and bookkeeping. Lengths are in optimizer steps (one global batch each)."""

    steps: int = 2000
    batch_size: int = 128  # global: split over the ranks under DDP
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    # Pretrain-then-finetune: epochs of encoder/decoder without the quantizer first, then k-means (0: none).
    pretrain_epochs: int = 0
    kmeans_vectors: int = 20000  # encoder outputs gathered for the k-means codebook init after pretraining
    # Fine-tune from a backbone trained elsewhere (a shipped model's name, a save_pretrained folder or a run
    # directory): every weight outside the quantizer is copied from it, then k-means from its encoder
    # (vqkit.train.init_from). The backbone is the pretrain stage, so pretrain_epochs must be 0.
    init_from: str | None = None
    # Train encoder and decoder without the quantizer for ``steps`` steps: the continuous model, the ceiling
    # of a bench's quantized rows (evaluated with the quantizer skipped).
    continuous: bool = False
    # Audio models: Encodec's multi-scale STFT discriminator (hinge + feature matching).
    adversarial: bool = False
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 1.0
    discriminator_filters: int = 32
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tensorboard: bool = True
    progress: bool = True
    # A NaN or Inf loss: "stop" the run (the last checkpoint is kept) or "skip" the step (no update), stopping
    # anyway after ``max_skips`` skipped steps in a row.
    nonfinite: NonFinite = "stop"
    max_skips: int = 10


@dataclass
class EvalConfig:
    """What ``vqkit eval`` and the periodic validation compute."""

    split: Literal["val", "test"] = "test"
    batch_size: int = 256
    max_items: int | None = None  # evaluate at most this many items (None: the whole split)
    lpips: Literal["alex", "vgg"] | None = "alex"
    fid_samples: int = 0
    stoi: bool = True
    pesq: bool = True
    report_items: int = 8  # reconstructions shown in the report


@dataclass
class RunConfig:
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train"]["betas"] = list(self.train.betas)
        return out


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as err:  # pragma: no cover - the train extra provides it
        raise ImportError("reading configs needs PyYAML: pip install 'vqkit[train]'") from err
    return yaml


def deep_merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """``delta`` over ``base``: mappings merge key by key, other values replace (lists included)."""
    out = copy.deepcopy(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of ``path`` with its ``base`` chain merged in (cycles are an error)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config: 'base' chain loops back to {str(path)!r}")
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"config: cannot read {str(path)!r}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:  # a binary file (an image, an archive) given as the config
        raise ConfigError(f"config: {str(path)!r} is not a UTF-8 text file: {err}") from err
    yaml = _yaml()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {str(path)!r} must hold a mapping, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"config: 'base' in {str(path)!r} must be a path, got {base!r}")
    return deep_merge(read_config_file(path.parent / base, (*_seen, path)), raw)


def apply_override(config: dict[str, Any], override: str) -> dict[str, Any]:
    """``a.b.c=value`` (value parsed as YAML) set on a copy of ``config``."""
    if "=" not in override:
        raise ConfigError(f"override: expected key.path=value, got {override!r}")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts) or parts[0] not in SECTIONS:
        raise ConfigError(f"override: {key!r} must start with one of {list(SECTIONS)}")
    yaml = _yaml()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"override: cannot parse the value of {key!r}: {err}") from err
    out = copy.deepcopy(config)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override: {key!r} goes through {part!r}, which is not a mapping")
        node = child
    node[parts[-1]] = value
    return out


def _section(cls: type, raw: Any, name: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key; valid keys: {sorted(fields)}")
    values = dict(raw)
    if "betas" in values and isinstance(values["betas"], list):
        values["betas"] = tuple(values["betas"])
    return cls(**values)


def build_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a merged raw mapping into a ``RunConfig``."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level key; valid keys: {list(SECTIONS)}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    data, model = raw.get("data") or {}, raw.get("model") or {}
    for name, section in (("data", data), ("model", model)):
        if not isinstance(section, dict) or "name" not in section:
            raise ConfigError(f"{name}: expected a mapping with a 'name', got {section!r}")
    config = RunConfig(
        seed=seed,
        data=dict(data),
        model=dict(model),
        train=_section(TrainConfig, raw.get("train"), "train"),
        eval=_section(EvalConfig, raw.get("eval"), "eval"),
    )
    _check_train(config.train)
    return config


def _check_train(train: TrainConfig) -> None:
    for name in (
        "steps",
        "batch_size",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "max_skips",
    ):
        value = getattr(train, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"train.{name}: expected a positive integer, got {value!r}")
    if not isinstance(train.lr, (int, float)) or train.lr <= 0:
        raise ConfigError(f"train.lr: expected a positive number, got {train.lr!r}")
    if train.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device: expected 'auto', 'cpu' or 'cuda', got {train.device!r}")
    if train.nonfinite not in NONFINITE:
        raise ConfigError(f"train.nonfinite: expected one of {list(NONFINITE)}, got {train.nonfinite!r}")
    if train.init_from is not None and (not isinstance(train.init_from, str) or not train.init_from):
        raise ConfigError(f"train.init_from: expected a backbone's name or path, got {train.init_from!r}")
    if not isinstance(train.continuous, bool):
        raise ConfigError(f"train.continuous: expected true or false, got {train.continuous!r}")
    stages = [
        name
        for name, on in (
            ("train.pretrain_epochs", train.pretrain_epochs > 0),
            ("train.init_from", train.init_from is not None),
            ("train.continuous", train.continuous),
        )
        if on
    ]
    if len(stages) > 1:  # each is a different first stage; together they would contradict each other
        raise ConfigError(
            f"{stages[1]}: cannot be combined with {stages[0]} (a pretrain stage, a backbone to fine-tune "
            "from and a continuous run are three different ways to start)"
        )


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read ``path`` (with its ``base`` chain), apply ``overrides``, validate."""
    raw = read_config_file(path)
    for override in overrides:
        raw = apply_override(raw, override)
    return build_config(raw)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (what every run and checkpoint records)."""
    return str(_yaml().safe_dump(config.to_dict(), sort_keys=False))
