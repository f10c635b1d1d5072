"""Save and load tokenizers as ``config.json`` + ``weights.safetensors`` (no pickle, written atomically).

``config.json`` is ``{"format": "vqkit.tokenizer", "version": 1, "vqkit_version": ..., "model": <to_config()>}``,
the model config including its quantizer's ``{"name", "kwargs"}``; ``weights.safetensors`` is the model's
``state_dict`` (encoder, quantizer, decoder). Loading needs only ``vqkit.models`` and the library core: no
training code, no pickle. The folder format and its overwrite rules are shared with quantizers
(``vqkit.utils.folders``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vqkit.hub import HubFormat, register_hub_format
from vqkit.models.base import Tokenizer
from vqkit.models.registry import build_model
from vqkit.utils.folders import CONFIG_FILE, WEIGHTS_FILE, FolderFormat, load_folder, read_config, save_folder

FORMAT = "vqkit.tokenizer"
VERSION = 1
TOKENIZER_FOLDER = FolderFormat(
    FORMAT, VERSION, kind="tokenizer", writer="save_tokenizer", payload_key="model"
)
# Tokenizer.save_pretrained / from_pretrained (vqkit.hub): every tokenizer, this folder format still read.
register_hub_format(HubFormat(Tokenizer, TOKENIZER_FOLDER, build_model))

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "TOKENIZER_FOLDER",
    "VERSION",
    "WEIGHTS_FILE",
    "load_tokenizer",
    "read_tokenizer_config",
    "save_tokenizer",
]


def save_tokenizer(model: Tokenizer, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``path/config.json`` and ``path/weights.safetensors``.

    A new or empty folder, or one ``save_tokenizer`` wrote before (nothing else in it), is replaced atomically.
    A folder holding other files raises ``FileExistsError`` unless ``overwrite=True``; then only the two files
    are replaced and every other file is kept. A ``config.json`` or ``weights.safetensors`` there that is not a
    tokenizer's is never replaced.
    """
    if not isinstance(model, Tokenizer):
        raise TypeError(f"model: expected a vqkit.models.Tokenizer, got {type(model).__name__}")
    return save_folder(path, TOKENIZER_FOLDER, model.to_config(), model, overwrite=overwrite)


def read_tokenizer_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model config stored in ``path/config.json`` (what ``build_model`` takes), checked."""
    return read_config(path, TOKENIZER_FOLDER)


def load_tokenizer(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Tokenizer:
    """Rebuild a tokenizer saved by ``save_tokenizer`` (config from JSON, tensors from safetensors).

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: the config or the weights are missing, corrupt, or do not match each other (names the file).
    """
    return load_folder(path, TOKENIZER_FOLDER, build_model, map_location)
