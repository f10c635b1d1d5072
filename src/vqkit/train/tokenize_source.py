"""What ``vqkit tokenize`` reads: a SOURCE resolved to the items of the existing dataset loaders, each named.

SOURCE is one of

* ``NAME:SPLIT``, a registered dataset and split (``fashion_mnist:test``, ``digits:train``, ``speech:val``):
  its items in order, named ``SPLIT/INDEX`` (``test/0``, ``test/1``, ...);
* a folder: every image (for an image tokenizer; the ``image_folder`` loader) or audio file (for an audio
  tokenizer; ``audio_folder``) under it, all three splits of the loader together, in sorted path order.
  An image is named by its path relative to the folder (``cats/a.png``); audio is cut into the loader's
  fixed-length segments, named ``PATH#K`` for the K-th segment of the file (``a.wav#0``, ``a.wav#1``);
* ``FOLDER:SPLIT``: one split of such a folder (the loader's seeded 80/10/10 split of the files).

The loaders do all the reading (``vqkit.data``); this module only picks them and names their items. Options the
tokenizer fixes (image ``channels``, audio ``sample_rate``, image ``size`` where the run records its item shape)
default to the tokenizer's values; ``options`` (``vqkit tokenize --option KEY=VALUE``) override them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vqkit.data.audio import AUDIO_EXTENSIONS, audio_info, resampled_length, segment_starts
from vqkit.data.base import SPLITS, DataNotFoundError, VQDataset, split_folder_files
from vqkit.data.image_folder import IMAGE_EXTENSIONS
from vqkit.data.registry import dataset_options, list_datasets, load_dataset


@dataclass
class TokenSource:
    """The items to tokenize: item ``i`` is ``datasets[d][k]`` for ``(d, k) = refs[i]``, named ``names[i]``."""

    spec: str
    datasets: list[VQDataset]
    refs: list[tuple[int, int]]
    names: list[str]
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.datasets[0].item_shape

    def item(self, i: int) -> torch.Tensor:
        d, k = self.refs[i]
        return self.datasets[d][k]

    def info(self) -> dict[str, Any]:
        """JSON record: the spec, the item count, a hash of the names in order, each dataset's ``info()``."""
        digest = hashlib.sha256("\n".join(self.names).encode("utf-8")).hexdigest()
        return {
            "spec": self.spec,
            "num_items": len(self.names),
            "names_sha256": digest,
            "options": dict(self.options),
            "datasets": [ds.info() for ds in self.datasets],
        }


def resolve_source(
    spec: str,
    *,
    modality: str,
    defaults: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> TokenSource:
    """``spec`` (see the module docstring) for a tokenizer of ``modality``.

    Raises:
        ValueError: ``spec`` is none of the forms, or its items are of another modality (names ``source``).
        DataNotFoundError: the folder holds no file of the modality, or the dataset's files are missing.
    """
    head, sep, tail = spec.rpartition(":")
    if Path(spec).is_dir():
        folder, split = Path(spec), None
    elif sep and Path(head).is_dir() and tail in SPLITS:
        folder, split = Path(head), tail
    elif sep and head in list_datasets():
        if tail not in SPLITS:
            raise ValueError(f"source: expected a split ({', '.join(SPLITS)}) after {head!r}:, got {tail!r}")
        merged = _options(head, defaults, options)
        dataset = load_dataset(head, tail, data_dir=data_dir, seed=seed, **merged)
        _check_modality(spec, dataset, modality)
        names = [f"{tail}/{i}" for i in range(len(dataset))]
        return TokenSource(spec, [dataset], [(0, i) for i in range(len(dataset))], names, merged)
    else:
        hint = f"; add a split: {spec}:test" if spec in list_datasets() else ""
        if not hint and ("/" in spec or os.sep in spec):
            hint = " (no such folder)"
        raise ValueError(
            f"source: expected NAME:SPLIT (a dataset of {list_datasets()} and one of {list(SPLITS)}, e.g. "
            f"fashion_mnist:test), an image or audio folder, or FOLDER:SPLIT; got {spec!r}{hint}"
        )
    return _folder_source(spec, folder, split, modality, _Loading(defaults, options, seed))


@dataclass(frozen=True)
class _Loading:
    defaults: dict[str, Any] | None
    options: dict[str, Any] | None
    seed: int


def _options(name: str, defaults: dict[str, Any] | None, options: dict[str, Any] | None) -> dict[str, Any]:
    """The tokenizer's values for the options dataset ``name`` has, then the user's (checked by the loader)."""
    known = dataset_options(name)
    return {**{k: v for k, v in (defaults or {}).items() if k in known}, **(options or {})}


def _check_modality(spec: str, dataset: VQDataset, modality: str) -> None:
    if dataset.modality != modality:
        raise ValueError(
            f"source: {spec!r} holds {dataset.modality} items; the tokenizer's modality is {modality}"
        )


def _folder_source(spec: str, root: Path, split: str | None, modality: str, how: _Loading) -> TokenSource:
    if modality not in ("image", "audio"):
        raise ValueError(
            f"source: a folder needs an image or audio tokenizer; this one's modality is {modality}"
        )
    name, what, extensions = (
        ("image_folder", "images", IMAGE_EXTENSIONS)
        if modality == "image"
        else ("audio_folder", "audio files", AUDIO_EXTENSIONS)
    )
    merged = _options(name, how.defaults, how.options)
    entries: list[tuple[int, int, str, int, int]] = []  # (file position, segment, name, dataset, item)
    datasets: list[VQDataset] = []
    for part in [split] if split else SPLITS:
        try:
            _, paths, indices, _ = split_folder_files(
                root, name, what, extensions=extensions, split=part, seed=how.seed
            )
        except DataNotFoundError as error:  # it names data_dir, the loader's argument; here it is SOURCE
            raise DataNotFoundError(f"source: {error}") from error
        if split is None and len(indices) == 0:
            continue  # fewer than 3 files: val and test are empty, every file is in train
        dataset = load_dataset(name, part, data_dir=root, seed=how.seed, **merged)  # type: ignore[arg-type]
        keys = _item_keys(dataset, root, [(int(i), paths[int(i)]) for i in indices])
        if len(keys) != len(dataset):  # the loaders' own item tables and these names must agree
            raise RuntimeError(
                f"source: named {len(keys)} items of {name} {part!r}, which has {len(dataset)}"
            )
        entries.extend((*key, len(datasets), k) for k, key in enumerate(keys))
        datasets.append(dataset)
    entries.sort()
    refs = [(d, k) for *_, d, k in entries]
    return TokenSource(spec, datasets, refs, [entry[2] for entry in entries], merged)


def _item_keys(dataset: VQDataset, root: Path, files: list[tuple[int, Path]]) -> list[tuple[int, int, str]]:
    """``(file position, segment, name)`` of each item, in the dataset's order: one per image file; for audio,
    the segments ``segment_starts`` cuts from the file at the dataset's rate, as ``audio_folder`` does."""
    keys = []
    for position, path in files:
        relative = path.relative_to(root).as_posix()
        if dataset.modality == "image":
            keys.append((position, 0, relative))
            continue
        frames, rate = audio_info(path)
        samples = resampled_length(frames, rate, int(dataset.sample_rate or rate))
        for k, _ in enumerate(segment_starts(samples, dataset.item_shape[-1])):
            keys.append((position, k, f"{relative}#{k}"))
    return keys
