"""``load_dataset(name, split, ...)`` and ``list_datasets()``: every dataset by name.

A dataset's options are its loader's keyword-only parameters (after ``data_dir`` and ``seed``), with their
defaults; an unknown option is refused by name before anything is read or generated.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from vqkit._validate import check_int
from vqkit.data.audio import load_audio_folder
from vqkit.data.base import Split, VQDataset, check_split
from vqkit.data.image_folder import load_image_folder
from vqkit.data.images import load_cifar10, load_digits, load_fashion_mnist, load_mnist
from vqkit.data.music import load_music
from vqkit.data.speech import load_speech
from vqkit.data.vectors import load_gaussian_clusters

Loader = Callable[..., VQDataset]

_LOADERS: dict[str, Loader] = {
    "audio_folder": load_audio_folder,
    "cifar10": load_cifar10,
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "gaussian_clusters": load_gaussian_clusters,
    "image_folder": load_image_folder,
    "mnist": load_mnist,
    "music": load_music,
    "speech": load_speech,
}


def list_datasets() -> list[str]:
    """Dataset names, sorted."""
    return sorted(_LOADERS)


def dataset_options(name: str) -> dict[str, Any]:
    """The options of dataset ``name`` with their defaults."""
    parameters = inspect.signature(_loader(name)).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("data_dir", "seed")
    }


def _loader(name: str) -> Loader:
    if name not in _LOADERS:
        raise ValueError(f"name: unknown dataset {name!r}; expected one of {list_datasets()}")
    return _LOADERS[name]


def load_dataset(
    name: str,
    split: Split,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> VQDataset:
    """The ``split`` (``"train"``, ``"val"`` or ``"test"``) of dataset ``name``.

    Args:
        name: one of ``list_datasets()``.
        split: the fixed split; splits are disjoint, and ``info()`` records the rule.
        data_dir: the dataset's folder (file datasets), or the cache root (generated audio); see docs/data.md.
        seed: picks the split (the seeded permutation or the held-out validation items), nothing else.
        **options: the dataset's options (``dataset_options(name)``), e.g. ``size=28`` or ``sample_rate=24000``.

    Returns:
        A ``VQDataset``: ``ds[i]`` is a float32 tensor of shape ``ds.item_shape``, the same on every call.

    Raises:
        ValueError: an unknown name, split or option, or an invalid option value (the message names it).
        DataNotFoundError: a file, folder or program is missing (the message says how to install it).
        CorruptDataError: a data file cannot be read (the message names it).
    """
    loader = _loader(name)
    check_split(split)
    check_int("seed", seed)
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(f"data_dir: expected a path or None, got {data_dir!r}")
    allowed = dataset_options(name)
    for key in options:
        if key not in allowed:
            raise ValueError(f"{key}: not an option of dataset {name!r}; its options are {sorted(allowed)}")
    folder = None if data_dir is None else os.fspath(data_dir)
    return loader(split, data_dir=folder, seed=seed, **options)
