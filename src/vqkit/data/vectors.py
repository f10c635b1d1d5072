"""Vector datasets: the collapse study's standardized Gaussian clusters (``vqkit.data.synthetic``) as splits."""

from __future__ import annotations

from typing import Any

import torch

from vqkit._validate import check_int, check_positive_int, check_range
from vqkit.data.base import VQDataset, permutation_split, reject_data_dir, require_nonempty
from vqkit.data.synthetic import gaussian_clusters


class VectorDataset(VQDataset):
    """Rows of a ``[N, D]`` float32 tensor."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None, record: dict[str, Any]) -> None:
        super().__init__(
            modality="vector", item_shape=(x.shape[1],), length=x.shape[0], record=record, labels=labels
        )
        self._x = x

    def _item(self, i: int) -> torch.Tensor:
        return self._x[i].clone()


def load_gaussian_clusters(
    split: str,
    *,
    data_dir: str | None,
    seed: int,
    dim: int = 2,
    num_clusters: int = 10,
    points_per_cluster: int = 1000,
    center_std: float = 5.0,
    data_seed: int = 0,
) -> VQDataset:
    """The paper's set (10 clusters of 1,000 points, standardized; dims 2, 3, 4, 8 in the paper), split 80/10/10.

    The points are drawn once with ``data_seed`` and standardized over the whole set; ``seed`` only picks the
    split, so every split seed sees the same points.
    """
    reject_data_dir("gaussian_clusters", data_dir, "is generated in memory")
    check_positive_int("dim", dim)
    check_positive_int("num_clusters", num_clusters)
    check_positive_int("points_per_cluster", points_per_cluster)
    check_range("center_std", center_std, 0.0, float("inf"))
    check_int("data_seed", data_seed)
    x, labels = gaussian_clusters(
        dim, num_clusters, points_per_cluster, center_std=center_std, seed=data_seed
    )
    indices, rule = permutation_split([str(i) for i in range(len(x))], split, seed, unit="point")
    require_nonempty("gaussian_clusters", split, indices, f"{len(x)} points")
    chosen = torch.from_numpy(indices)
    options = {
        "dim": dim,
        "num_clusters": num_clusters,
        "points_per_cluster": points_per_cluster,
        "center_std": float(center_std),
        "data_seed": data_seed,
    }
    record = {
        "name": "gaussian_clusters",
        "split": split,
        "sources": ["vqkit.data.synthetic.gaussian_clusters"],
        "split_rule": rule,
        "seed": seed,
        "options": options,
    }
    return VectorDataset(x[chosen].contiguous(), labels[chosen].contiguous(), record)
