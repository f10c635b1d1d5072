"""Save and load quantizers as ``config.json`` + ``weights.safetensors`` (no pickle, written atomically).

``config.json`` is ``{"format": "vqkit.quantizer", "version": 1, "vqkit_version": ..., "name": ...,
"kwargs": {...}}`` (``Quantizer.to_config()`` beside the header); ``weights.safetensors`` is the
``state_dict``. The folder format and its overwrite rules are shared with tokenizers (``vqkit.utils.folders``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vqkit.hub import HubFormat, register_hub_format
from vqkit.quantizers.base import Quantizer
from vqkit.registry import quantizer_from_config
from vqkit.utils.folders import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    FolderFormat,
    load_folder,
    read_config_file,
    save_folder,
)

CONFIG_FORMAT = "vqkit.quantizer"
CONFIG_VERSION = 1
QUANTIZER_FOLDER = FolderFormat(CONFIG_FORMAT, CONFIG_VERSION, kind="quantizer", writer="save_quantizer")
# Quantizer.save_pretrained / from_pretrained (vqkit.hub): every quantizer, this folder format still read.
register_hub_format(HubFormat(Quantizer, QUANTIZER_FOLDER, quantizer_from_config, kwargs_key="kwargs"))

__all__ = [
    "CONFIG_FILE",
    "CONFIG_FORMAT",
    "CONFIG_VERSION",
    "QUANTIZER_FOLDER",
    "WEIGHTS_FILE",
    "load_config_json",
    "load_quantizer",
    "save_quantizer",
]


def load_config_json(path: Path) -> dict[str, Any]:
    """The quantizer ``config.json`` at ``path``, checked (format and version); ``ValueError`` names the file."""
    return read_config_file(Path(path), QUANTIZER_FOLDER)


def save_quantizer(quantizer: Quantizer, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``path/config.json`` and ``path/weights.safetensors``.

    A new or empty folder, or one ``save_quantizer`` wrote before (nothing else in it), is replaced atomically.
    A folder holding other files raises ``FileExistsError`` unless ``overwrite=True``; then only the two files
    are replaced and every other file is kept. A ``config.json`` or ``weights.safetensors`` there that is not a
    quantizer's is never replaced. Raises ``TypeError`` for an unregistered quantizer class (no config).
    """
    if not isinstance(quantizer, Quantizer):
        raise TypeError(f"quantizer: expected a vqkit Quantizer, got {type(quantizer).__name__}")
    return save_folder(path, QUANTIZER_FOLDER, quantizer.to_config(), quantizer, overwrite=overwrite)


def load_quantizer(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Quantizer:
    """Rebuild a quantizer saved by ``save_quantizer`` (config from JSON, tensors from safetensors).

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: the config or the weights are missing, corrupt, or do not match each other (names the file).
    """
    return load_folder(path, QUANTIZER_FOLDER, quantizer_from_config, map_location)
