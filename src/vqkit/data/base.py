"""The dataset contract (``VQDataset``), fixed splits, the data errors and the cache folder.

Every loader returns a ``VQDataset``: item ``i`` is always the same float32 tensor of shape ``item_shape``, and
``info()`` says exactly which data it is (sources, split rule, seed, options), so a run can record it.
"""

from __future__ import annotations

import copy
import hashlib
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from vqkit._validate import check_choice

Modality = Literal["image", "audio", "vector"]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

VAL_FRACTION = 0.1
TEST_FRACTION = 0.1


class DataNotFoundError(FileNotFoundError):
    """A file, folder or program a loader needs is missing; the message says how to get it."""


class CorruptDataError(ValueError):
    """A data file exists but cannot be read (truncated, wrong format, bad values); the message names it."""


class VQDataset(Dataset[torch.Tensor]):
    """A fixed split of one dataset; item ``i`` is a float32 tensor of shape ``item_shape``.

    Images are ``[C, H, W]`` in [0, 1], audio ``[1, T]`` in [-1, 1] at ``sample_rate``, vectors ``[D]``.
    ``labels`` (int64 ``[len(self)]``) is set where the source has classes (digits, MNIST, CIFAR, the Gaussian
    clusters' modes), else ``None``. Subclasses implement ``_item``.
    """

    modality: Modality
    item_shape: tuple[int, ...]
    sample_rate: int | None
    labels: torch.Tensor | None

    def __init__(
        self,
        *,
        modality: Modality,
        item_shape: tuple[int, ...],
        length: int,
        record: dict[str, Any],
        sample_rate: int | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        self.modality = modality
        self.item_shape = tuple(int(s) for s in item_shape)
        self.sample_rate = sample_rate
        self.labels = labels
        self._length = int(length)
        self._record = record

    @property
    def name(self) -> str:
        return str(self._record["name"])

    @property
    def split(self) -> str:
        return str(self._record["split"])

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> torch.Tensor:
        i = operator.index(index)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(
                f"index: expected an integer in [-{self._length}, {self._length}), got {index!r}"
            )
        return self._item(i)

    def _item(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """JSON-able record: name, split, num_items, modality, item_shape, sample_rate, sources, split rule, options."""
        return {
            "name": self._record["name"],
            "split": self._record["split"],
            "num_items": self._length,
            "modality": self.modality,
            "item_shape": list(self.item_shape),
            "sample_rate": self.sample_rate,
            **{k: copy.deepcopy(v) for k, v in self._record.items() if k not in ("name", "split")},
        }

    def __repr__(self) -> str:
        rate = f", sample_rate={self.sample_rate}" if self.sample_rate else ""
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, items={self._length}, "
            f"item_shape={self.item_shape}{rate})"
        )


# ---------------------------------------------------------------------------------------------------------------
# Splits. The order comes from a keyed hash (BLAKE2b of the seed and the unit's key), not from a random number
# generator: it is the same on every platform and for every numpy / torch / Python version.


def _hash_order(keys: Sequence[str], seed: int) -> list[int]:
    digests = [hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest() for key in keys]
    return sorted(range(len(keys)), key=lambda i: (digests[i], keys[i]))


def check_split(split: Any) -> Split:
    """``split`` if it is one of ``SPLITS``; anything else is a ``ValueError`` naming it (never a silent train)."""
    return check_choice("split", split, SPLITS)  # type: ignore[return-value]


def split_counts(n: int) -> dict[str, int]:
    """80/10/10 with rounding; val and test get at least one unit each once there are 3 units."""
    n_val = max(1, int(VAL_FRACTION * n + 0.5)) if n >= 3 else 0
    n_test = max(1, int(TEST_FRACTION * n + 0.5)) if n >= 3 else 0
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def permutation_split(
    keys: Sequence[str], split: str, seed: int, *, unit: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Indices (sorted) of ``split`` among units named ``keys``, and the rule's record for ``info()``.

    The units are ordered by a seeded hash of their key; the first 10% form ``val``, the next 10% ``test``, the
    rest ``train``. Adding units keeps the relative order of the others, so only units near the boundaries can
    change split.
    """
    check_split(split)
    counts = split_counts(len(keys))
    order = _hash_order(keys, seed)
    bounds = {"val": (0, counts["val"]), "test": (counts["val"], counts["val"] + counts["test"])}
    start, stop = bounds.get(split, (counts["val"] + counts["test"], len(keys)))
    chosen = np.array(sorted(order[start:stop]), dtype=np.int64)
    record = {
        "rule": "seeded_permutation",
        "description": (
            f"{unit}s ordered by BLAKE2b(seed, {unit} key); first {VAL_FRACTION:.0%} (at least 1) -> val, "
            f"next {TEST_FRACTION:.0%} (at least 1) -> test, the rest -> train"
        ),
        "unit": unit,
        "seed": seed,
        "counts": counts,
        "units_sha256": _digest([keys[i] for i in chosen]),
    }
    return chosen, record


def holdout_split(num_train: int, num_test: int, split: str, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """For sources with an official test set: ``test`` is it; a seeded 10% of the official train set is ``val``.

    Returns indices into the official train set (``train`` / ``val``) or the test set (``test``).
    """
    check_split(split)
    n_val = int(VAL_FRACTION * num_train + 0.5)
    counts = {"train": num_train - n_val, "val": n_val, "test": num_test}
    if split == "test":
        chosen = np.arange(num_test, dtype=np.int64)
    else:
        order = _hash_order([str(i) for i in range(num_train)], seed)
        chosen = np.array(sorted(order[:n_val] if split == "val" else order[n_val:]), dtype=np.int64)
    record = {
        "rule": "official_test_with_holdout_val",
        "description": (
            f"test = the official test set; val = the first {VAL_FRACTION:.0%} of the official train set "
            "ordered by BLAKE2b(seed, index); train = the rest of the official train set"
        ),
        "unit": "item",
        "seed": seed,
        "counts": counts,
        "units_sha256": _digest([str(int(i)) for i in chosen]),
    }
    return chosen, record


def require_nonempty(name: str, split: str, chosen: np.ndarray, what: str) -> None:
    if len(chosen) == 0:
        raise ValueError(
            f"split: {name!r} has no {split!r} items ({what}); val and test need at least 3 units in all"
        )


def _digest(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Files


def cache_root(data_dir: str | os.PathLike[str] | None) -> Path:
    """Where generated data lives: ``data_dir``, else ``$VQKIT_CACHE``, else ``$XDG_CACHE_HOME/vqkit`` or
    ``~/.cache/vqkit`` (read when called, never at import)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("VQKIT_CACHE"):
        return Path(os.environ["VQKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vqkit"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_dir(data_dir: str | os.PathLike[str] | None, dataset: str, what: str) -> Path:
    """``data_dir`` as a Path; it must be given and be a folder."""
    if data_dir is None:
        raise ValueError(f"data_dir: {dataset!r} needs a folder of {what} (--data-dir), got None")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(
            f"data_dir: {dataset!r} expected a folder of {what}, got {str(path)!r} (no such folder)"
        )
    return path


def reject_data_dir(dataset: str, data_dir: str | os.PathLike[str] | None, why: str) -> None:
    if data_dir is not None:
        raise ValueError(f"data_dir: {dataset!r} {why} and reads no folder, got {os.fspath(data_dir)!r}")


def list_files(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``root`` with one of ``extensions``: recursive, hidden files and folders skipped, sorted by path."""
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        found.extend(
            Path(folder, n) for n in names if not n.startswith(".") and n.lower().endswith(extensions)
        )
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def split_folder_files(
    data_dir: str | os.PathLike[str] | None,
    dataset: str,
    what: str,
    *,
    extensions: tuple[str, ...],
    split: str,
    seed: int,
) -> tuple[Path, list[Path], np.ndarray, dict[str, Any]]:
    """The files of a folder dataset and its split, the same for every modality: ``data_dir`` must be a folder of
    ``what`` (``require_dir``) with at least one file with one of ``extensions`` (``list_files``), and the files
    are split by ``permutation_split`` keyed by their path relative to it (so moving the folder keeps the split).

    Returns ``(folder, its files, indices of the split's files among them, split rule)``.
    """
    root = require_dir(data_dir, dataset, what)
    paths = list_files(root, extensions)
    if not paths:
        raise DataNotFoundError(
            f"data_dir: {dataset!r} found no {what} ({', '.join(extensions)}) under {str(root)!r}"
        )
    keys = [p.relative_to(root).as_posix() for p in paths]
    indices, rule = permutation_split(keys, split, seed, unit="file")
    return root, paths, indices, rule
