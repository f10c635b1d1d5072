"""The folder format quantizers and tokenizers share: ``config.json`` + ``weights.safetensors``, no pickle.

``config.json`` is ``{"format": ..., "version": ..., "vqkit_version": ..., <payload>}``, the payload either under
one key (tokenizers: ``"model"``) or beside those three (quantizers: ``"name"``, ``"kwargs"``);
``weights.safetensors`` is the module's ``state_dict``, its header metadata ``{"format": ...}``. One family
of helpers writes (``save_folder``, by ``vqkit.utils.publish``'s rules: a previous output of the same format
is replaced atomically, a folder holding other files only with ``overwrite=True`` and never at the cost of
those files) and reads (``read_config``, ``load_folder``: every error names the file it is about).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from vqkit._version import __version__
from vqkit.utils.atomic import bytes_writer
from vqkit.utils.publish import Owner, publish_folder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FILES = (WEIGHTS_FILE, CONFIG_FILE)  # the writing order: the config, which identifies the folder, last

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class FolderFormat:
    """One kind of saved folder.

    Attributes:
        format: the ``"format"`` marker in ``config.json`` and in the weights' metadata.
        version: the newest config version this code reads (and the one it writes).
        kind: what errors call it (``"quantizer"``).
        writer: the function that writes it, as errors name it (``"save_quantizer"``).
        payload_key: the config key holding the payload, or ``None`` when its keys sit at the top level.
    """

    format: str
    version: int
    kind: str
    writer: str
    payload_key: str | None = None

    def owner(self, argument: str = "path", force: str = "overwrite=True") -> Owner:
        """Who writes such folders; the CLI passes its own argument and flag names for its messages."""
        return Owner(self.writer, argument, force, lambda folder: owned_files(folder, self))


def save_folder(
    path: str | os.PathLike[str],
    fmt: FolderFormat,
    payload: Mapping[str, Any],
    module: nn.Module,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``path/config.json`` (with ``payload``) and ``path/weights.safetensors`` (``module``'s tensors)."""
    config: dict[str, Any] = {"format": fmt.format, "version": fmt.version, "vqkit_version": __version__}
    config.update({fmt.payload_key: dict(payload)} if fmt.payload_key else payload)
    text = json.dumps(config, indent=2, sort_keys=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in module.state_dict().items()}

    def write_weights(file: Path) -> None:
        write_safetensors(tensors, file, metadata={"format": fmt.format})

    files = {WEIGHTS_FILE: write_weights, CONFIG_FILE: bytes_writer(text.encode("utf-8"))}
    return publish_folder(path, files, fmt.owner(), overwrite=overwrite)


def write_safetensors(
    tensors: dict[str, torch.Tensor], file: Path, metadata: dict[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file``, with its I/O failures (disk full, permission denied) raised as the
    ``OSError`` they are: safetensors raises its own error type, which names no file and no errno class."""
    try:
        save_file(tensors, str(file), metadata=metadata)
    except SafetensorError as err:
        found = re.search(r"os error (\d+)", str(err))  # its message carries the OS error number
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(file)) from err


def read_config_file(file: Path, fmt: FolderFormat) -> dict[str, Any]:
    """The whole ``config.json`` at ``file``, checked: readable JSON, the right format, a readable version."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"path: cannot read {fmt.kind} config {str(file)!r}: {err}") from err
    if (
        not isinstance(config, dict)
        or config.get("format") != fmt.format
        or (fmt.payload_key is not None and not isinstance(config.get(fmt.payload_key), dict))
    ):
        raise ValueError(
            f"path: {str(file)!r} is not a vqkit {fmt.kind} config (format={fmt.format!r} expected)"
        )
    version = config.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version > fmt.version:
        raise ValueError(
            f"path: {str(file)!r} has config version {version!r}; this vqkit reads up to {fmt.version}"
        )
    return config


def read_config(path: str | os.PathLike[str], fmt: FolderFormat) -> dict[str, Any]:
    """The payload stored in ``path/config.json``, checked (``FileNotFoundError`` when ``path`` is no folder)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"path: expected a folder written by {fmt.writer}, got {str(folder)!r}")
    config = read_config_file(folder / CONFIG_FILE, fmt)
    payload: dict[str, Any] = config[fmt.payload_key] if fmt.payload_key else config
    return payload


def load_folder(
    path: str | os.PathLike[str],
    fmt: FolderFormat,
    build: Callable[[dict[str, Any]], M],
    map_location: str | torch.device = "cpu",
) -> M:
    """Build the module from the checked payload with ``build``, then load the weights strictly.

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: the config or the weights are missing, corrupt, or do not match each other (names the file).
    """
    payload = read_config(path, fmt)
    try:
        module = build(payload)
    except (ValueError, TypeError, KeyError) as err:
        reason = (
            err.args[0] if isinstance(err, KeyError) and err.args else err
        )  # KeyError's str() adds quotes
        file = str(Path(path) / CONFIG_FILE)
        raise ValueError(f"path: the {fmt.kind} config in {file!r} is invalid: {reason}") from err
    load_weights(module, Path(path) / WEIGHTS_FILE, map_location)
    return module.to(map_location)


def load_weights(module: nn.Module, file: Path, map_location: str | torch.device = "cpu") -> None:
    """Load the safetensors ``file`` into ``module`` strictly; a mismatch is a ``ValueError`` naming ``file``."""
    try:
        tensors = load_file(str(file), device=str(map_location))
    except (OSError, SafetensorError) as err:
        raise ValueError(f"path: cannot read weights {str(file)!r}: {err}") from err
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [
        f"{name!r} has shape {tuple(t.shape)}, the config builds {tuple(expected[name].shape)}"
        for name, t in tensors.items()
        if name in expected and t.shape != expected[name].shape
    ]
    if missing or unexpected or shapes:
        found = shapes[:3] or [f"missing {missing[:3]}, unexpected {unexpected[:3]}"]
        raise ValueError(f"path: weights {str(file)!r} do not match the config: {'; '.join(found)}")
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as err:  # anything the checks above did not foresee still names the file
        raise ValueError(f"path: weights {str(file)!r} do not match the config: {err}") from err


def owned_files(folder: Path, fmt: FolderFormat) -> set[str]:
    """The files in ``folder`` a writer of ``fmt`` wrote, recognized by their ``format`` markers."""
    owned = set()
    if _config_format(folder / CONFIG_FILE) == fmt.format:
        owned.add(CONFIG_FILE)
    if _weights_format(folder / WEIGHTS_FILE) == fmt.format:
        owned.add(WEIGHTS_FILE)
    return owned


def _config_format(file: Path) -> object:
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config.get("format") if isinstance(config, dict) else None


def _weights_format(file: Path) -> object:
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, SafetensorError):
        return None
    return metadata.get("format")
