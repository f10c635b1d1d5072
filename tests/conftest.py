"""Shared fixtures: seeded, CPU-only, small."""

from __future__ import annotations

import pytest
import torch

import vqkit

DIM = 16


def small_kwargs(name: str) -> dict[str, object]:
    """Small, valid constructor arguments for every registered quantizer at ``dim=DIM``."""
    special: dict[str, dict[str, object]] = {
        "fsq": {"levels": [4, 4, 3]},
        "ivq": {"lines": 4, "levels": "bottom-up"},
        "residual_fsq": {"levels": [4, 3], "num_quantizers": 2},
        "lfq": {"bits": 6},
        "looc": {"codebook_size": 32, "codebook_dim": 4},
        "residual_lfq": {"bits": 4, "num_quantizers": 2},
        "residual_vq": {"codebook_size": [16, 8], "num_quantizers": 2},
        "product_vq": {"codebook_size": 8, "num_groups": 4},
    }
    return (
        {"dim": DIM, "codebook_size": 32, **special.get(name, {})}
        if name not in special
        else {"dim": DIM, **special[name]}
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=vqkit.list_quantizers())
def quantizer_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
