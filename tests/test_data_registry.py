"""vqkit.data: the registry, option checks, the split rules, digits and the Gaussian clusters."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import torch

from vqkit.data import VQDataset, dataset_options, gaussian_clusters, list_datasets, load_dataset
from vqkit.data.base import holdout_split, permutation_split, split_counts

SPLITS = ("train", "val", "test")


def test_list_datasets() -> None:
    assert list_datasets() == [
        "audio_folder",
        "cifar10",
        "digits",
        "fashion_mnist",
        "gaussian_clusters",
        "image_folder",
        "mnist",
        "music",
        "speech",
    ]
    assert dataset_options("digits") == {"size": 8, "channels": 1}


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"name: unknown dataset 'imagenet'; expected one of \['audio_folder'"
    ):
        load_dataset("imagenet", "train")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "validation"}, r"split: expected one of \['train', 'val', 'test'\], got 'validation'"),
        ({"split": "train", "resolution": 28}, r"resolution: not an option of dataset 'digits'"),
        ({"split": "train", "size": 0}, r"size: expected an integer in \[1, 4096\], got 0"),
        ({"split": "train", "size": 2.5}, r"size: expected an integer"),
        ({"split": "train", "channels": 2}, r"channels: expected 1 or 3, got 2"),
        ({"split": "train", "seed": "0"}, r"seed: expected an integer, got '0'"),
        ({"split": "train", "data_dir": "/tmp"}, r"data_dir: 'digits' ships with scikit-learn"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset("digits", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("gaussian_clusters", {"dim": 0}, "dim: expected a positive integer"),
        ("gaussian_clusters", {"center_std": -1.0}, "center_std: expected a number"),
        ("speech", {"num_clips": 0}, "num_clips: expected a positive integer"),
        ("speech", {"sample_rate": 16000.0}, r"sample_rate: expected an integer number of Hz"),
        ("speech", {"segment_seconds": 0}, r"segment_seconds: expected a number of seconds"),
        ("speech", {"voices": "en-us"}, r"voices: expected a non-empty list"),
        ("music", {"programs": [0, 128]}, r"programs: expected a non-empty list of General MIDI programs"),
        ("music", {"num_pieces": 1000}, r"num_pieces: expected at most 371"),
        ("music", {"pieces": []}, r"pieces: expected a non-empty list"),
        ("audio_folder", {"hop": 1}, r"hop: not an option of dataset 'audio_folder'"),
    ],
)
def test_bad_options_are_named_before_any_work(name: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset(name, "train", **options)


def test_split_counts_and_rules_are_disjoint_and_cover() -> None:
    assert split_counts(1797) == {"train": 1437, "val": 180, "test": 180}
    assert split_counts(3) == {"train": 1, "val": 1, "test": 1}
    assert split_counts(2) == {"train": 2, "val": 0, "test": 0}
    keys = [f"file{i}.png" for i in range(57)]
    parts = {s: set(permutation_split(keys, s, seed=3, unit="file")[0].tolist()) for s in SPLITS}
    assert (
        not parts["train"] & parts["val"]
        and not parts["train"] & parts["test"]
        and not parts["val"] & parts["test"]
    )
    assert set.union(*parts.values()) == set(range(57))
    other_seed = set(permutation_split(keys, "val", seed=4, unit="file")[0].tolist())
    assert other_seed != parts["val"]
    train, rule = holdout_split(100, 30, "train", seed=0)
    val, _ = holdout_split(100, 30, "val", seed=0)
    assert len(train) == 90 and len(val) == 10 and not set(train.tolist()) & set(val.tolist())
    assert rule["counts"] == {"train": 90, "val": 10, "test": 30}
    assert holdout_split(100, 30, "test", seed=0)[0].tolist() == list(range(30))


@pytest.mark.parametrize("split", ["training", "Train", "", None])
def test_split_rules_reject_an_unknown_split(split: object) -> None:
    # D6: an unknown name used to fall through to the train rows.
    message = rf"split: expected one of \['train', 'val', 'test'\], got {re.escape(repr(split))}"
    with pytest.raises(ValueError, match=message):
        permutation_split([f"file{i}" for i in range(20)], split, seed=0, unit="file")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        holdout_split(100, 30, split, seed=0)  # type: ignore[arg-type]


def test_split_order_is_pinned() -> None:
    # BLAKE2b keyed order: the same on every platform and library version; a change here changes every split.
    assert permutation_split([str(i) for i in range(20)], "val", seed=0, unit="item")[0].tolist() == [10, 11]


def test_digits_matches_scikit_learn_and_splits() -> None:
    from sklearn.datasets import load_digits

    reference = load_digits()
    splits = {s: load_dataset("digits", s) for s in SPLITS}
    assert {s: len(d) for s, d in splits.items()} == {"train": 1437, "val": 180, "test": 180}
    everything = torch.cat([torch.stack([d[i] for i in range(len(d))]) for d in splits.values()])
    assert everything.shape == (1797, 1, 8, 8) and everything.dtype == torch.float32
    assert float(everything.min()) == 0.0 and float(everything.max()) == 1.0
    # the three splits together are the whole set, each image once (compare as sorted byte strings)
    ours = sorted(x.numpy().tobytes() for x in everything)
    theirs = sorted((img[None] / 16.0).astype(np.float32).tobytes() for img in reference.images)
    assert ours == theirs
    label_of: dict[bytes, set[int]] = {}
    for img, target in zip(reference.images, reference.target, strict=True):
        label_of.setdefault((img[None] / 16.0).astype(np.float32).tobytes(), set()).add(int(target))
    for ds in splits.values():
        assert ds.labels is not None and ds.labels.shape == (len(ds),)
        assert all(int(ds.labels[i]) in label_of[ds[i].numpy().tobytes()] for i in range(len(ds)))


def test_digits_resize_and_channels() -> None:
    ds = load_dataset("digits", "val", size=28, channels=3)
    x = ds[0]
    assert ds.item_shape == (3, 28, 28) and x.shape == (3, 28, 28)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x[0], x[2])
    small = load_dataset("digits", "val", size=4)[0]
    assert small.shape == (1, 4, 4)


def test_items_are_deterministic_and_indexable() -> None:
    a, b = load_dataset("digits", "test"), load_dataset("digits", "test")
    assert torch.equal(a[7], b[7]) and torch.equal(a[-1], a[len(a) - 1])
    with pytest.raises(IndexError, match="index: expected an integer in"):
        a[len(a)]
    assert torch.equal(pickle.loads(pickle.dumps(a))[3], a[3])
    batch = next(iter(torch.utils.data.DataLoader(a, batch_size=4)))
    assert batch.shape == (4, 1, 8, 8)


def test_info_is_json_and_complete() -> None:
    ds = load_dataset("digits", "train", seed=7, size=16)
    info = json.loads(json.dumps(ds.info()))
    assert info["name"] == "digits" and info["split"] == "train" and info["num_items"] == len(ds)
    assert info["item_shape"] == [1, 16, 16] and info["modality"] == "image" and info["sample_rate"] is None
    assert info["sources"][0].endswith("digits.csv.gz")
    assert (
        info["seed"] == 7
        and info["split_rule"]["seed"] == 7
        and info["split_rule"]["rule"] == "seeded_permutation"
    )
    assert info["options"] == {"size": 16, "channels": 1}
    assert "digits" in repr(ds) and isinstance(ds, VQDataset)


def test_gaussian_clusters() -> None:
    splits = {s: load_dataset("gaussian_clusters", s, dim=3) for s in SPLITS}
    assert {s: len(d) for s, d in splits.items()} == {"train": 8000, "val": 1000, "test": 1000}
    x, _ = gaussian_clusters(3)
    rows = {tuple(r) for r in x.tolist()}
    seen: set[tuple[float, ...]] = set()
    for ds in splits.values():
        assert ds.modality == "vector" and ds.item_shape == (3,)
        items = {tuple(ds[i].tolist()) for i in range(len(ds))}
        assert items <= rows and not items & seen
        seen |= items
    assert seen == rows
    val = splits["val"]
    assert val.labels is not None and set(val.labels.tolist()) == set(range(10))
    other = load_dataset("gaussian_clusters", "val", dim=3, seed=1)
    assert {tuple(other[i].tolist()) for i in range(len(other))} != {
        tuple(val[i].tolist()) for i in range(len(val))
    }
