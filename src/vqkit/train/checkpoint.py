"""Training checkpoints as safetensors + JSON (never pickle), written atomically.

A checkpoint is a directory ``checkpoints/step_XXXXXXX/``:

* ``model.safetensors``: the model's state dict (parameters and buffers: codebooks, EMA statistics, ...);
* ``optimizer.safetensors``: every tensor of the optimizer state, keyed ``state/<param index>/<name>``;
* ``state.json``: the step, the optimizer's param groups and non-tensor state, the resolved config, and the
  random generator states (as integer lists) so a resumed run draws what the uninterrupted one would have.

The directory is staged under a temporary name and renamed into place (``atomic_directory``), so a crash
leaves either a complete checkpoint or none; ``latest_checkpoint`` only ever sees complete ones, and
``remove_staging`` clears what a killed write left. A model or optimizer holding NaN or Inf is not saved (the
run diverged: the checkpoints before it are the ones worth keeping). Read errors name the file.
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
from safetensors.torch import load_file
from torch import nn

from vqkit.utils.atomic import atomic_directory
from vqkit.utils.folders import write_safetensors

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


Part = tuple[nn.Module, "torch.optim.Optimizer | None"]


def save_checkpoint(
    directory: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    *,
    others: dict[str, Part] | None = None,
) -> Path:
    """Write ``directory/step_XXXXXXX`` atomically; returns its path. ``others`` are further named
    ``(module, optimizer)`` pairs (e.g. a discriminator) stored as ``<name>.safetensors`` and
    ``<name>_optimizer.safetensors``."""
    target = directory / f"{PREFIX}{step:07d}"
    parts: dict[str, Part] = {"model": (model, optimizer), **(others or {})}
    files: dict[str, dict[str, torch.Tensor]] = {}
    metas: dict[str, Any] = {}
    for name, (module, opt) in parts.items():
        files[f"{name}.safetensors"] = {
            k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()
        }
        if opt is not None:
            tensors, meta = _optimizer_split(opt)
            files["optimizer.safetensors" if name == "model" else f"{name}_optimizer.safetensors"] = tensors
            metas[name] = meta
    state = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "optimizer": metas["model"],
        "optimizers": {k: v for k, v in metas.items() if k != "model"},
        "rng": rng_state(),
        **extra,
    }
    _refuse_nonfinite(step, files)
    with atomic_directory(target) as staging:
        for filename, tensors in files.items():
            write_safetensors(tensors, staging / filename)
        (staging / "state.json").write_text(json.dumps(state))
    return target


def _refuse_nonfinite(step: int, files: dict[str, dict[str, torch.Tensor]]) -> None:
    """Raise ``ValueError`` (nothing written) when a floating-point tensor to save holds NaN or Inf."""
    for filename, tensors in files.items():
        for key, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(
                    f"checkpoint: not saving step {step}: tensor {key!r} of {filename} holds NaN or Inf (the "
                    "run diverged); the checkpoints written before it are kept"
                )


def remove_staging(directory: Path) -> list[Path]:
    """Remove the staging folders (``.step_XXXXXXX.*.tmp``) that killed checkpoint writes left in ``directory``;
    returns them. Call it where no checkpoint is being written (a run's start). The hidden ``.old`` folder a
    kill between the two renames of a replacement can leave is kept: it may hold the only copy."""
    if not directory.is_dir():
        return []
    stale = sorted(p for p in directory.glob(f".{PREFIX}*.tmp") if p.is_dir())
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def checkpoint_step(path: Path) -> int:
    """The step of checkpoint ``path`` (``step_0000120`` -> 120): the number of optimizer steps it holds."""
    return int(path.name[len(PREFIX) :])


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (staging folders are never listed)."""
    if not directory.is_dir():
        return []
    found = [
        p
        for p in directory.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()
    ]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune_checkpoints(directory: Path, keep: int) -> None:
    for path in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _read(path: Path, filename: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path / filename))
    except (OSError, SafetensorError) as err:
        raise ValueError(f"checkpoint: cannot read {str(path / filename)!r}: {err}") from err


def _read_state(path: Path) -> dict[str, Any]:
    """``path/state.json``, checked for what loading needs; errors name the file."""
    file = path / "state.json"
    try:
        state = json.loads(file.read_text())
    except (OSError, ValueError) as err:  # ValueError: bad JSON, or not UTF-8 text
        raise ValueError(f"checkpoint: cannot read {str(file)!r}: {err}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {str(path)!r} is not a vqkit checkpoint")
    step = state.get("step")
    state.setdefault("optimizers", {})  # the states of the ``others``: none for a run without them
    wrong = [key for key in ("optimizer", "optimizers", "rng") if not isinstance(state.get(key), dict)]
    if isinstance(step, bool) or not isinstance(step, int) or wrong:
        found = f"'step' {step!r}" if not wrong else f"{wrong[0]!r} {state.get(wrong[0])!r:.60}"
        raise ValueError(
            f"checkpoint: {str(file)!r} is damaged: expected a step and the saved states, got {found}"
        )
    return state


def _load_part(
    path: Path, name: str, module: nn.Module, opt: torch.optim.Optimizer | None, meta: Any
) -> None:
    """Load ``<name>.safetensors`` into ``module`` and its optimizer file into ``opt``; errors name the file."""
    weights = "model.safetensors" if name == "model" else f"{name}.safetensors"
    moments = "optimizer.safetensors" if name == "model" else f"{name}_optimizer.safetensors"
    try:
        module.load_state_dict(_read(path, weights))
    except RuntimeError as err:
        raise ValueError(f"checkpoint: {str(path / weights)!r} does not fit the model: {err}") from err
    if opt is None:
        return
    tensors = _read(path, moments)
    try:
        opt.load_state_dict(_optimizer_join(tensors, meta))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"checkpoint: {str(path / moments)!r} does not fit the optimizer: {err}") from err


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    restore_rng: bool = True,
    others: dict[str, Part] | None = None,
) -> TrainingState:
    """Load ``path`` into ``model`` (and ``optimizer``, and ``others`` saved with it); restores the generator
    states. Errors name the path (a missing, corrupt or mismatched file is a ``ValueError``)."""
    state = _read_state(path)
    _load_part(path, "model", model, optimizer, state["optimizer"])
    for name, (module, opt) in (others or {}).items():
        _load_part(path, name, module, opt, state["optimizers"].get(name))
    if restore_rng:
        try:
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"checkpoint: {str(path / 'state.json')!r} holds damaged generator states: {err}"
            ) from err
    skip = ("format", "version", "step", "optimizer", "optimizers", "rng")
    extra = {k: v for k, v in state.items() if k not in skip}
    return TrainingState(step=int(state["step"]), extra=extra)
