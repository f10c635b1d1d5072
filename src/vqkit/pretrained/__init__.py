"""Tokenizers and backbones shipped inside the package: ``list_pretrained()`` and ``load_pretrained(name)``.

Each entry is a folder next to this file, ``save_pretrained``'s layout (``config.json``, ``model.safetensors``,
``README.md``) plus ``entry.json``: what the listing shows without building the model (modality, input format,
rate, held-out metrics and how the folder was made). Nothing is downloaded: the weights are package data, made
once by the commands their cards and ``entry.json`` record (``publish`` writes a folder).

Two kinds: a ``"tokenizer"`` (quantized: ``encode`` / ``decode`` at its rate) and a ``"backbone"`` (a continuous
model trained with the quantizer skipped, ``forward_unquantized``: the ceiling of its quantized fine-tunes and
their starting point). ``vqkit encode`` / ``decode`` take a tokenizer's name where they take a run folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from vqkit.models.base import Tokenizer
from vqkit.utils.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent
ENTRY = "entry.json"
Kind = Literal["tokenizer", "backbone"]
KINDS: tuple[str, ...] = ("tokenizer", "backbone")


@dataclass(frozen=True)
class PretrainedEntry:
    """One shipped model, as ``list_pretrained`` shows it.

    Attributes:
        name: what ``load_pretrained`` takes (the folder's name).
        kind: ``"tokenizer"`` or ``"backbone"`` (module docstring).
        modality: ``"image"`` or ``"audio"``.
        quantizer: the registry name of its quantizer (a backbone's is untrained and unused).
        rate: bits per second (audio) or per item (image) of its codes; ``None`` for a backbone.
        rate_unit: ``"bits/s"`` or ``"bits/item"``.
        sample_rate: Hz, for audio.
        item_shape: an image's ``[C, H, W]``.
        metrics: held-out metrics (name -> value) on ``data``'s ``split``.
        data: the dataset the metrics and the training came from (a vqkit dataset name and its settings).
        split: the split of ``metrics``.
        command: the command(s) that made the folder.
        description: a sentence on what it is for.
        folder: where it lies.
    """

    name: str
    kind: str
    modality: str
    quantizer: str
    rate: float | None
    rate_unit: str
    sample_rate: int | None = None
    item_shape: list[int] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    data: str = ""
    split: str = "test"
    command: str = ""
    description: str = ""
    folder: Path = ROOT

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["folder"] = str(self.folder)
        return out


def _entries(root: Path) -> dict[str, PretrainedEntry]:
    found = {}
    for folder in sorted(p for p in root.iterdir() if (p / ENTRY).is_file()):
        found[folder.name] = _read_entry(folder)
    return found


def _read_entry(folder: Path) -> PretrainedEntry:
    file = folder / ENTRY
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
        raw.pop("folder", None)
        return PretrainedEntry(**raw, folder=folder)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"pretrained: cannot read {str(file)!r}: {err}") from err


def list_pretrained(*, root: str | os.PathLike[str] | None = None) -> list[PretrainedEntry]:
    """The shipped models (``PretrainedEntry``), by name. ``root``: another folder of entries (tests)."""
    return list(_entries(ROOT if root is None else Path(root)).values())


def pretrained_entry(name: str, *, root: str | os.PathLike[str] | None = None) -> PretrainedEntry:
    """The entry called ``name``; ``ValueError`` lists the names there are."""
    entries = _entries(ROOT if root is None else Path(root))
    if not isinstance(name, str) or name not in entries:
        raise ValueError(f"name: expected one of the shipped models {sorted(entries)}, got {name!r}")
    return entries[name]


def is_pretrained_name(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a shipped model (and no existing path: a folder of that name wins)."""
    text = os.fspath(value)
    plain = len(Path(text).parts) == 1 and not text.startswith(".")
    return plain and not Path(text).exists() and (ROOT / text / ENTRY).is_file()


def load_pretrained(
    name: str, *, map_location: str = "cpu", root: str | os.PathLike[str] | None = None
) -> Tokenizer:
    """The shipped model ``name`` (``list_pretrained``), in eval mode, ready for ``encode`` / ``decode`` (a
    backbone: ``forward_unquantized``). Offline: the weights are package data."""
    entry = pretrained_entry(name, root=root)
    model = Tokenizer.from_pretrained(entry.folder, map_location=map_location)
    return model.eval()


def model_rate(model: Tokenizer, sample_rate: int | None, item_shape: list[int] | None) -> tuple[float, str]:
    """The nominal rate of ``model``'s codes: bits per second for audio (at ``sample_rate``), else bits per item
    of ``item_shape``."""
    if model.modality == "audio":
        kbps = cast(Callable[[int | None], float], model.bitrate_kbps)  # audio models have it
        return 1000.0 * float(kbps(sample_rate)), "bits/s"
    if item_shape is None:
        raise ValueError("item_shape: an image tokenizer's rate needs its item shape [C, H, W], got None")
    return float(model.bits_per_item(item_shape)), "bits/item"


def publish(
    model: Tokenizer,
    name: str,
    *,
    kind: Kind,
    data: str,
    metrics: Mapping[str, float],
    command: str,
    description: str,
    sample_rate: int | None = None,
    item_shape: list[int] | None = None,
    root: str | os.PathLike[str] | None = None,
    split: str = "test",
) -> PretrainedEntry:
    """Write ``model`` as the entry ``name`` (``save_pretrained`` folder + ``entry.json``) under ``root`` (default:
    this package's folder); the rate comes from the model itself. Replaces an earlier entry of that name."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name: expected letters, digits, '_' or '-', got {name!r}")
    folder = (ROOT if root is None else Path(root)) / name
    rate, unit = model_rate(model, sample_rate, item_shape) if kind == "tokenizer" else (None, "")
    entry = PretrainedEntry(
        name=name,
        kind=kind,
        modality=str(model.modality),
        quantizer=str(model.to_config()["quantizer"]["name"]),
        rate=rate,
        rate_unit=unit,
        sample_rate=sample_rate,
        item_shape=item_shape,
        metrics={k: float(v) for k, v in metrics.items()},
        data=data,
        split=split,
        command=command,
        description=description,
        folder=folder,
    )
    card = {"datasets": [data], "metrics": entry.metrics, "split": split, "description": description}
    model.save_pretrained(folder, overwrite=True, model_card_kwargs=card)
    atomic_write_text(folder / ENTRY, json.dumps({**entry.as_dict(), "folder": None}, indent=2) + "\n")
    return entry
