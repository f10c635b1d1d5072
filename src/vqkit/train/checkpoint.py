"""Training checkpoints as safetensors + JSON (never pickle), written atomically.

A checkpoint is a directory ``checkpoints/step_XXXXXXX/``:

* ``model.safetensors``: the model's state dict (parameters and buffers: codebooks, EMA statistics, ...);
* ``optimizer.safetensors``: every tensor of the optimizer state, keyed ``state/<param index>/<name>``;
* ``state.json``: the step, the optimizer's param groups and non-tensor state, the resolved config, and the
  random generator states (as integer lists) so a resumed run draws what the uninterrupted one would have.

The directory is staged under a temporary name and renamed into place (``atomic_directory``), so a crash
leaves either a complete checkpoint or none; ``latest_checkpoint`` only ever sees complete ones.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vqkit.utils.atomic import atomic_directory

FORMAT = "vqkit.checkpoint"
VERSION = 1
PREFIX = "step_"


@dataclass
class TrainingState:
    step: int
    extra: dict[str, Any]


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{name}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain_state": plain}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta["plain_state"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states, JSON-able."""
    out: dict[str, Any] = {
        "torch": torch.get_rng_state().tolist(),
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    kind, keys, pos, has_gauss, cached = cast(tuple[Any, ...], np.random.get_state())
    out["numpy"] = [kind, keys.tolist(), pos, has_gauss, cached]
    if torch.cuda.is_available():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(
    directory: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]
) -> Path:
    """Write ``directory/step_XXXXXXX`` atomically; returns its path."""
    target = directory / f"{PREFIX}{step:07d}"
    tensors, meta = _optimizer_split(optimizer)
    state = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "optimizer": meta,
        "rng": rng_state(),
        **extra,
    }
    model_state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_directory(target) as staging:
        save_file(model_state, str(staging / "model.safetensors"))
        save_file(tensors, str(staging / "optimizer.safetensors"))
        (staging / "state.json").write_text(json.dumps(state))
    return target


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (staging folders are never listed)."""
    if not directory.is_dir():
        return []
    found = [
        p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[5:].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune_checkpoints(directory: Path, keep: int) -> None:
    for path in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, restore_rng: bool = True
) -> TrainingState:
    """Load ``path`` into ``model`` (and ``optimizer``); restores the generator states. Errors name the path."""
    try:
        state = json.loads((path / "state.json").read_text())
        weights = load_file(str(path / "model.safetensors"))
    except (OSError, ValueError, SafetensorError) as err:
        raise ValueError(f"checkpoint: cannot read {str(path)!r}: {err}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {str(path)!r} is not a vqkit checkpoint")
    model.load_state_dict(weights)
    if optimizer is not None:
        try:
            tensors = load_file(str(path / "optimizer.safetensors"))
        except (OSError, SafetensorError) as err:
            raise ValueError(f"checkpoint: cannot read {str(path)!r}: {err}") from err
        optimizer.load_state_dict(_optimizer_join(tensors, state["optimizer"]))
    if restore_rng:
        set_rng_state(state["rng"])
    extra = {k: v for k, v in state.items() if k not in ("format", "version", "step", "optimizer", "rng")}
    return TrainingState(step=int(state["step"]), extra=extra)
