"""Save and load tokenizers as ``config.json`` + ``weights.safetensors`` (no pickle, written atomically).

``config.json`` is ``{"format": "vqkit.tokenizer", "version": 1, "vqkit_version": ..., "model": <to_config()>}``,
the model config including its quantizer's ``{"name", "kwargs"}``; ``weights.safetensors`` is the model's
``state_dict`` (encoder, quantizer, decoder). Loading needs only ``vqkit.models`` and the library core: no
training code, no pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqkit._version import __version__
from vqkit.models.base import Tokenizer, build_model
from vqkit.utils.atomic import atomic_directory

FORMAT = "vqkit.tokenizer"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


def save_tokenizer(model: Tokenizer, path: str | os.PathLike[str]) -> Path:
    """Write ``path/config.json`` and ``path/weights.safetensors``; replaces an existing folder atomically."""
    if not isinstance(model, Tokenizer):
        raise TypeError(f"model: expected a vqkit.models.Tokenizer, got {type(model).__name__}")
    config = {"format": FORMAT, "version": VERSION, "vqkit_version": __version__, "model": model.to_config()}
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    with atomic_directory(path) as staging:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": FORMAT})
    return Path(path)


def read_tokenizer_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model config stored in ``path/config.json`` (what ``build_model`` takes), checked."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"path: expected a folder written by save_tokenizer, got {str(folder)!r}")
    file = folder / CONFIG_FILE
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"path: cannot read tokenizer config {str(file)!r}: {err}") from err
    if (
        not isinstance(config, dict)
        or config.get("format") != FORMAT
        or not isinstance(config.get("model"), dict)
    ):
        raise ValueError(f"path: {str(file)!r} is not a vqkit tokenizer config (format={FORMAT!r} expected)")
    version = config.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"path: {str(file)!r} has config version {version!r}; this vqkit reads up to {VERSION}"
        )
    model: dict[str, Any] = config["model"]
    return model


def load_tokenizer(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Tokenizer:
    """Rebuild a tokenizer saved by ``save_tokenizer`` (config from JSON, tensors from safetensors).

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: the config or the weights are missing, corrupt, or do not match each other (names the file).
    """
    folder = Path(path)
    config = read_tokenizer_config(folder)
    try:
        model = build_model(config)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"path: the model config in {str(folder / CONFIG_FILE)!r} is invalid: {err}"
        ) from err
    file = folder / WEIGHTS_FILE
    try:
        tensors = load_file(str(file), device=str(map_location))
    except (OSError, SafetensorError) as err:
        raise ValueError(f"path: cannot read weights {str(file)!r}: {err}") from err
    missing = sorted(set(model.state_dict()) - set(tensors))
    unexpected = sorted(set(tensors) - set(model.state_dict()))
    if missing or unexpected:
        raise ValueError(
            f"path: weights {str(file)!r} do not match the config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"path: weights {str(file)!r} do not match the config: {err}") from err
    return model.to(map_location)
