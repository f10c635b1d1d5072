"""Data: ``load_dataset(name, split)`` for images, audio and vectors, all as fixed, recorded splits.

>>> from vqkit.data import load_dataset, list_datasets
>>> ds = load_dataset("digits", "train", size=28)   # ds[i]: float32 [1, 28, 28] in [0, 1]
>>> ds.info()                                       # name, split, sources, split rule and seed, options

Nothing downloads: images come from local files (Debian's dataset-fashion-mnist, scikit-learn's digits, your
MNIST / CIFAR-10 / image folders), audio from espeak-ng, music21 + fluidsynth or your audio folders.
See docs/data.md.
"""

from vqkit.data.base import CorruptDataError, DataNotFoundError, VQDataset
from vqkit.data.idx import read_idx
from vqkit.data.registry import dataset_options, list_datasets, load_dataset
from vqkit.data.synthetic import gaussian_clusters

__all__ = [
    "CorruptDataError",
    "DataNotFoundError",
    "VQDataset",
    "dataset_options",
    "gaussian_clusters",
    "list_datasets",
    "load_dataset",
    "read_idx",
]
