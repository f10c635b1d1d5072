"""Runs on disk: load a trained model from a run directory or an exported tokenizer, spawn DDP workers.

A **run directory** (``vqkit train``) holds ``config.yaml``, ``data.json``, ``metrics.csv`` and
``checkpoints/step_*``; an **exported tokenizer** (``vqkit export``) is what ``vqkit.load_tokenizer`` reads.
``load_run_model`` accepts either.
"""

from __future__ import annotations

import gc
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from vqkit.data.base import Split
from vqkit.models.base import Tokenizer
from vqkit.train import checkpoint as ckpt
from vqkit.train.config import RunConfig, build_config, read_config_file


class RunPaths:
    """Where a run directory keeps each thing: ``vqkit train`` writes them, ``eval``, ``report`` and ``bench``
    read them. One place for the names, so a writer and its readers cannot drift apart."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"  # the resolved config (``dump_config``)
        self.data = self.root / "data.json"  # each split's ``info()``
        self.checkpoints = self.root / "checkpoints"  # ``step_XXXXXXX/`` (``vqkit.train.checkpoint``)
        self.metrics = self.root / "metrics.csv"  # the training log (``vqkit.train.log``)
        self.eval = self.root / "eval.json"  # ``vqkit eval``'s result
        self.report = self.root / "report.md"
        self.plots = self.root / "plots"


def is_run_dir(path: Path) -> bool:
    paths = RunPaths(path)
    return paths.config.is_file() and paths.checkpoints.is_dir()


def run_config(path: Path) -> RunConfig:
    return build_config(read_config_file(RunPaths(path).config))


def load_run_model(
    path: str | os.PathLike[str], checkpoint: str | None = None
) -> tuple[Tokenizer, dict[str, Any]]:
    """The model of a run directory (its latest or the given checkpoint), of an exported tokenizer or of a shipped
    model's name (``vqkit.list_pretrained``), in eval mode, with what is known about its input: ``{"modality",
    "item_shape", "sample_rate", "config"?}``."""
    from vqkit.models import build_model, load_tokenizer
    from vqkit.pretrained import is_pretrained_name, load_pretrained, pretrained_entry

    if is_pretrained_name(path):  # a shipped model's name (``vqkit.list_pretrained``)
        entry = pretrained_entry(os.fspath(path))
        shipped: dict[str, Any] = {"modality": entry.modality, "item_shape": entry.item_shape}
        shipped |= {"sample_rate": entry.sample_rate, "pretrained": entry.name}
        return load_pretrained(entry.name), shipped
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"run: {str(root)!r} does not exist")
    if not is_run_dir(root):
        model = load_tokenizer(root)
        meta = getattr(model, "io_info", None) or {}
        return model.eval(), {"modality": getattr(model, "modality", None), **meta}
    config = run_config(root)
    paths = RunPaths(root)
    try:
        model = build_model(dict(config.model))
    except (ValueError, TypeError, KeyError) as err:  # e.g. a config.yaml cut short, yet still valid YAML
        raise ValueError(f"run: the model config in {str(paths.config)!r} is invalid: {err}") from err
    chosen = Path(checkpoint) if checkpoint else ckpt.latest_checkpoint(paths.checkpoints)
    if chosen is None:
        raise FileNotFoundError(f"run: {str(root)!r} has no complete checkpoint yet")
    ckpt.load_checkpoint(chosen, model, restore_rng=False)
    info = read_run_json(paths.data) if paths.data.exists() else {}
    train_info = info.get("train", {})
    meta = {
        "modality": getattr(model, "modality", None),
        "item_shape": train_info.get("item_shape"),
        "sample_rate": train_info.get("sample_rate"),
        "config": config,
        "checkpoint": str(chosen),
    }
    return model.eval(), meta


def read_run_json(file: Path) -> dict[str, Any]:
    """A JSON mapping a run keeps (``data.json``, ``eval.json``); ``ValueError`` names the file and the fault."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON, or not UTF-8 text
        raise ValueError(f"run: cannot read {str(file)!r}: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"run: {str(file)!r} must hold a JSON object, got {type(value).__name__}")
    return value


def load_split(config: RunConfig, split: Split) -> Any:
    """The dataset a run's ``data`` section names, for ``split`` (``"train"``, ``"val"`` or ``"test"``),
    split with ``data.split_seed`` where given, else with the run's seed.

    ``split_seed`` keeps the split of a backbone's training while the seed of a fine-tune varies (with the
    run's seed, another seed would test on items the backbone was trained on)."""
    from vqkit.data import load_dataset

    options = dict(config.data)
    name, data_dir = options.pop("name"), options.pop("data_dir", None)
    seed = options.pop("split_seed", config.seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"data.split_seed: expected an integer, got {seed!r}")
    return load_dataset(name, split, data_dir=data_dir, seed=seed, **options)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, size: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(size),
            "LOCAL_RANK": str(rank),
        }
    )
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    try:
        fn(*args)
        if torch.distributed.is_initialized():
            # No rank tears its group down while another still talks to it (rank 0 hosts the store).
            torch.distributed.barrier()
    finally:
        # DDP wrappers left in reference cycles hold the group: freed now, not by gloo's threads during
        # interpreter shutdown, which aborts the process ("terminate called without an active exception").
        gc.collect()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def spawn(size: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``size`` processes joined by ``torch.distributed`` (gloo on CPU, nccl on GPU;
    ``fn`` calls ``init_process_group`` from the environment, as under ``torchrun``)."""
    mp.start_processes(
        _worker, args=(size, _free_port(), fn, args), nprocs=size, join=True, start_method="spawn"
    )
