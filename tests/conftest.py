"""Shared fixtures: seeded, CPU-only, small."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import vqkit

DIM = 16


def small_kwargs(name: str) -> dict[str, object]:
    """Small, valid constructor arguments for every registered quantizer at ``dim=DIM``."""
    special: dict[str, dict[str, object]] = {
        "fsq": {"levels": [4, 4, 3]},
        "latent_quantize": {"levels": [4, 4, 3]},
        "ivq": {"lines": 4, "levels": "bottom-up"},
        "ivq_paper": {"lines": 4},
        # scale=1 here: the name-only contract tests feed flat [N, D] and 2-D grids; OPTION_GRID runs scale 2.
        "looc_paper": {"codebook_size": 32, "codebook_dim": 4, "scale": 1},
        "residual_fsq": {"levels": [4, 3], "num_quantizers": 2},
        "lfq": {"bits": 6},
        "bsq": {"bits": 6},
        "looc": {"codebook_size": 32, "codebook_dim": 4},
        "multiscale_vq": {"codebook_size": 32, "factors": [4, 2, 1], "spatial_dims": 1},
        "residual_lfq": {"bits": 4, "num_quantizers": 2},
        "residual_vq": {"codebook_size": [16, 8], "num_quantizers": 2},
        "product_vq": {"codebook_size": 8, "num_groups": 4},
        # network_init="default": the zero init (the class default, exact RVQ at step 0) leaves the blocks' U_l
        # without gradient until D_l moves, which the gradient contract test forbids; tests/test_qinco.py
        # covers the zero init.
        "qinco": {"codebook_size": 16, "num_quantizers": 2, "hidden_dim": 16, "network_init": "default"},
        "residual": {
            "stages": [
                {"name": "vq", "kwargs": {"dim": 8, "codebook_size": 16}},
                {"name": "fsq", "kwargs": {"dim": 8, "levels": [3] * 8}},
            ],
            "project": True,
            "stage_scales": [[1.0], [0.5]],
        },
        "product": {
            "stages": [
                {"name": "vq", "kwargs": {"dim": 8, "codebook_size": 16}},
                {"name": "lfq", "kwargs": {"dim": 8, "bits": 4}},
            ]
        },
        "grouped_residual": {
            "stages": [
                {"name": "residual_vq", "kwargs": {"dim": 8, "codebook_size": [8, 4]}},
                {"name": "residual_vq", "kwargs": {"dim": 8, "codebook_size": [8, 4], "update": "ema"}},
            ]
        },
        "grouped_residual_vq": {"codebook_size": 8, "num_quantizers": 2},
        "grouped_residual_fsq": {"levels": [4, 3], "num_quantizers": 2},
        "grouped_residual_lfq": {"bits": 3, "num_quantizers": 2},
    }
    return (
        {"dim": DIM, "codebook_size": 32, **special.get(name, {})}
        if name not in special
        else {"dim": DIM, **special[name]}
    )


OPTION_GRID: dict[str, list[dict[str, object]]] = {
    "vq": [
        {"codebook_dim": 4},
        {"update": "ema", "init": "kmeans"},
        {"distance": "cosine", "restart": "anchor"},
        {"restart": "dead", "init": "gaussian"},
        {"restart": "dead", "restart_measure": "share", "restart_threshold": 0.1},
        {"codebook_dim": 4, "l2_normalize": True},
        {"gradient": "rotation"},
        {"gradient": "rotation", "codebook_dim": 4, "distance": "cosine"},
        {"orthogonal_weight": 0.1, "orthogonal_codes": 8},
        {"sampling": "softmax", "sampling_temperature": 0.5},
        {"sampling": "gumbel", "codebook_dim": 4},
        {"entropy_weight": 0.1, "diversity": 0.5},
        {"affine": "learned", "sync_nu": 0.2},
        {"affine": "running", "update": "ema", "init": "kmeans", "restart": "dead"},
    ],
    "fsq": [{"levels": [3] * DIM}],
    "latent_quantize": [{"levels": [3] * DIM, "beta": 0.5}],
    "lfq": [{"bits": DIM, "entropy_mode": "factorized"}],
    "bsq": [
        {"group_size": 1, "beta": 0.25},
        {"bits": DIM, "group_size": 3, "temperature": 0.1},
        {"data_init": True, "diversity": 0.5},
    ],
    "residual_vq": [
        {"codebook_dim": 4},
        {"codebook_dim": 4, "l2_normalize": True},
        {"update": "ema", "restart": "dead"},
        {"codebook_size": 8, "num_quantizers": 3, "init": "kmeans"},
        {"gradient": "rotation", "codebook_dim": 4},
        {"shared_codebook": True, "codebook_size": 16},
        {"shared_codebook": True, "codebook_size": 16, "update": "ema", "restart": "dead", "codebook_dim": 4},
        {"sampling": "softmax", "entropy_weight": 0.1, "affine": "running"},
    ],
    "grouped_residual_vq": [
        {"num_groups": 4, "shared_codebook": True, "update": "ema", "init": "kmeans"},
    ],
    "product_vq": [{"codebook_dim": 2}, {"update": "ema"}, {"gradient": "rotation"}],
    "residual_fsq": [{"levels": [3, 3, 3, 3], "num_quantizers": 3}],
    "residual_lfq": [{"bits": DIM, "num_quantizers": 2}],
    "simvq": [
        {"train_codebook": True},
        {"gradient": "rotation"},
        {"codebook_init": "uniform", "codebook_weight": 2.0},
    ],
    "looc_paper": [{"scale": 2, "spatial_dims": 1}],
    "qinco": [
        {"candidates": 4, "num_quantizers": 3, "num_blocks": 1},
        {"codebook_size": [16, 8], "restart": "dead", "init": "gaussian", "candidates": 4},
    ],
    "looc": [
        {"scale": 2, "spatial_dims": 1},
        {"distance": "l2", "restart": "dead", "update": "ema"},
        {"split": "unshuffle", "scale": 2, "spatial_dims": 1},
        {"gradient": "rotation", "scale": 2, "spatial_dims": 1},
    ],
    "multiscale_vq": [  # sequences only: the contract tests feed [B, T, D] (T = 20) and flat [N, D] batches
        {"upsample": "linear", "phi_count": 1},
        {"upsample": "nearest", "phi_count": None},
        {"phi_ratio": 0.0, "update": "ema", "init": "kmeans", "restart": "dead"},
        {"distance": "cosine", "restart": "anchor"},
        {"factors": [8, 3, 1]},
    ],
    "ivq": [
        {"lines": 4, "levels": "yin-yang"},
        {"lines": 4, "levels": "top-down", "codebooks": "per_block"},
        {"lines": 4, "distance": "cosine", "similarity": "dot", "temperature": 1.0},
        {"lines": 4, "update": "ema", "hierarchy_weight": 0.0, "relation_weight": 0.0},
        {"lines": 4, "gradient": "rotation"},
        {"lines": 4, "levels": "yin-yang", "zong_flip": "blocks"},
        {"lines": 4, "codebooks": "per_block", "zong_flip": "blocks"},
    ],
}
"""Options beyond ``small_kwargs`` that the contract tests run for each registered name (presets run theirs)."""


def option_cases() -> list[tuple[str, dict[str, object]]]:
    """Every registered name with its small kwargs, and again with each of its ``OPTION_GRID`` overrides."""
    cases: list[tuple[str, dict[str, object]]] = []
    for name in vqkit.list_quantizers():
        for overrides in [{}, *OPTION_GRID.get(name, [])]:
            cases.append((name, {**small_kwargs(name), **overrides}))
    return cases


def case_id(case: tuple[str, dict[str, object]]) -> str:
    name, kwargs = case
    extra = {k: v for k, v in kwargs.items() if small_kwargs(name).get(k, object()) != v}
    return name + "".join(f"-{k}={v}" for k, v in extra.items()).replace(" ", "")


@pytest.fixture(params=option_cases(), ids=case_id)
def quantizer_case(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """``(registry name, kwargs)`` over the option grid."""
    return request.param


def load_script(path: Path, name: str) -> ModuleType:
    """Import the script at ``path`` (a benchmark) as module ``name`` (registered in ``sys.modules``, where
    dataclasses look their module up while it executes)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_codec(quantizer: dict[str, object], latent_dim: int = 8) -> vqkit.Tokenizer:
    """A SEANet codec small enough for a unit test (8 kHz, hop 4, no LSTM) around ``quantizer``."""
    return vqkit.build_model(
        {
            "name": "seanet_codec",
            "sample_rate": 8000,
            "n_filters": 2,
            "ratios": [2, 2],
            "lstm": 0,
            "stft_sizes": [32, 64],
            "mel_n_fft": 64,
            "n_mels": 16,
            "latent_dim": latent_dim,
            "quantizer": quantizer,
        }
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
