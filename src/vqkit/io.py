"""Save and load quantizers as ``config.json`` + ``weights.safetensors`` (no pickle, written atomically)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqkit._version import __version__
from vqkit.quantizers.base import Quantizer
from vqkit.registry import quantizer_from_config
from vqkit.utils.atomic import atomic_directory

CONFIG_FORMAT = "vqkit.quantizer"
CONFIG_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


def load_config_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"path: cannot read quantizer config {str(path)!r}: {err}") from err
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise ValueError(
            f"path: {str(path)!r} is not a vqkit quantizer config (format={CONFIG_FORMAT!r} expected)"
        )
    return config


def save_quantizer(quantizer: Quantizer, path: str | os.PathLike[str]) -> Path:
    """Write ``path/config.json`` and ``path/weights.safetensors``; replaces an existing folder atomically."""
    config = {
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "vqkit_version": __version__,
        **quantizer.to_config(),
    }
    tensors = {name: t.detach().contiguous().cpu() for name, t in quantizer.state_dict().items()}
    with atomic_directory(path) as staging:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": CONFIG_FORMAT})
    return Path(path)


def load_quantizer(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Quantizer:
    """Rebuild a quantizer saved by ``save_quantizer`` (config from JSON, tensors from safetensors)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"path: expected a folder written by Quantizer.save, got {str(folder)!r}")
    config = load_config_json(folder / CONFIG_FILE)
    if int(config.get("version", 0)) > CONFIG_VERSION:
        raise ValueError(f"path: config version {config['version']} is newer than supported {CONFIG_VERSION}")
    quantizer = quantizer_from_config(config)
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE), device=str(map_location))
    except (OSError, SafetensorError) as err:
        raise ValueError(f"path: cannot read weights {str(folder / WEIGHTS_FILE)!r}: {err}") from err
    quantizer.load_state_dict(tensors, strict=True)
    return quantizer.to(map_location)
