"""``vqkit tokenize``: every item of a dataset or folder to codes, in shards, on one process or many, resumable.

Work is cut into **blocks** of ``shard_size`` consecutive items of the source (``vqkit.train.tokenize_source``
says what a SOURCE is and how its items are named); block ``j`` becomes one shard, ``shard-rRRR-{j:06d}``,
written by rank ``RRR`` (``vqkit.train.shards`` describes the files). The unfinished blocks are dealt out in
turn: the ``r``-th, ``(r + world)``-th, ... go to rank ``r``. Each block is encoded in batches of ``batch_size``
counted from its own start, so a shard holds the same items, encoded in the same batches, whatever the number of
processes: one process and several produce the same items with the same codes.

**Resuming.** A shard is written atomically, then its record (``.tokenize/block-{j:06d}.json``: file, rank,
names, size, SHA-256), also atomically; a block whose record exists and whose shard is on disk with the recorded
size is finished. With ``resume=True`` the finished blocks are skipped and the others redone, on any number of
processes: a shard written but not recorded (the one being finished when the run was killed), or a temporary
file an atomic write left, is removed first. The source (its item count, names and options), the tokenizer's
weights and config, and the shard format and size must be those the folder was started with
(``.tokenize/settings.json``); anything else is refused, naming what changed. Once every block is finished,
rank 0 writes ``index.json`` after a barrier and removes ``.tokenize/``; resuming a finished folder does nothing.

**Processes.** ``nproc > 1`` spawns that many processes on this machine (``torch.multiprocessing``; gloo on
CPU, nccl on GPUs, as ``vqkit train --nproc``); under ``torchrun`` every rank calls ``tokenize_dataset`` with
``nproc=1`` and joins the group from the environment. Every rank reads the source itself; ``out`` must be one
folder they all see (a shared file system across machines).

Errors name the command-line argument at fault (``source``, ``--out``, ``--resume``, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqkit import distributed
from vqkit._validate import check_choice, check_positive_int
from vqkit.train import shards
from vqkit.train.shards import INDEX_FILE, PLAN, RECORDS, SHARD_FORMATS, ShardFormat
from vqkit.train.tokenize_source import TokenSource, resolve_source

DEVICES = ("auto", "cpu", "cuda")
PROGRESS_INTERVAL_S = 10.0


@dataclass(frozen=True)
class TokenizeJob:
    """The arguments of one ``tokenize_dataset`` call (what each spawned process receives)."""

    tokenizer: str
    source: str
    out: Path
    format: ShardFormat = "npz"
    shard_size: int = 1024
    batch_size: int = 64
    resume: bool = False
    force: bool = False
    data_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    progress: bool = False


def tokenize_dataset(
    tokenizer: str | os.PathLike[str],
    source: str,
    out: str | os.PathLike[str],
    *,
    format: ShardFormat = "npz",
    shard_size: int = 1024,
    batch_size: int = 64,
    nproc: int = 1,
    resume: bool = False,
    force: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    options: dict[str, Any] | None = None,
    device: str = "auto",
    progress: bool = False,
) -> Path:
    """Tokenize every item of ``source`` with ``tokenizer`` into shards under ``out``; returns ``out/index.json``.

    Args:
        tokenizer: a run directory (its latest checkpoint) or a tokenizer written by ``save_tokenizer``.
        source: ``NAME:SPLIT``, an image or audio folder, or ``FOLDER:SPLIT`` (``vqkit.train.tokenize_source``).
        out: a new or empty folder; one holding files needs ``resume`` (continue the tokenize there) or
            ``force`` (start over: the files an earlier tokenize wrote there are replaced, others kept).
        format: ``"npz"`` or ``"parquet"`` (needs pyarrow, the ``parquet`` extra).
        shard_size: items per shard (the unit of work and of resuming); batch_size: items per encoder call.
        nproc: processes to spawn on this machine (1 under ``torchrun``, which starts them itself).
        data_dir, options: the dataset's folder and options (``load_dataset``); ``options`` override the
            tokenizer's own values (image channels and size, audio sample rate).
        device: ``"auto"`` (this rank's GPU if there is one), ``"cpu"`` or ``"cuda"``.
        progress: a progress bar on a terminal, else a line every ``PROGRESS_INTERVAL_S`` (rank 0).

    Raises:
        ValueError: a bad argument or ``source``, or settings that differ from the folder's on ``resume``.
        FileExistsError: ``out`` holds files and neither ``resume`` nor ``force`` was given, or files in the
            way that vqkit did not write. ImportError: ``format="parquet"`` without pyarrow.
    """
    check_choice("--format", format, SHARD_FORMATS)
    for name, value in (("--shard-size", shard_size), ("--batch-size", batch_size), ("--nproc", nproc)):
        check_positive_int(name, value)
    check_choice("--device", device, DEVICES)
    if resume and force:
        raise ValueError("--resume, --force: expected at most one (continue, or start over), got both")
    if format == "parquet":
        shards.require_pyarrow("--format")
    data = None if data_dir is None else os.fspath(data_dir)
    job = TokenizeJob(tokenizer=str(tokenizer), source=str(source), out=Path(out), format=format,
                      shard_size=shard_size, batch_size=batch_size, resume=resume, force=force, data_dir=data,
                      options=dict(options or {}), device=device, progress=progress)  # fmt: skip
    if nproc == 1:
        _run(job, False)
        return job.out / INDEX_FILE
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"--nproc: expected 1 under torchrun (it starts the processes), got {nproc}")
    from vqkit.train.run import spawn

    _prepare(job, _settings(job, *_load(job, torch.device("cpu"))))  # errors here, not in a worker
    spawn(nproc, _run, job, True)
    return job.out / INDEX_FILE


# ---------------------------------------------------------------------------------------------- one rank
def _run(job: TokenizeJob, prepared: bool) -> None:
    """One rank's part: (rank 0) check and prepare ``out``, encode this rank's blocks, (rank 0) the index."""
    from vqkit.train.runtime import barrier, init_distributed_from_env, resolve_device

    device = resolve_device(job.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    joined = init_distributed_from_env(device)
    try:
        model, meta, source = _load(job, device)
        settings = _settings(job, model, meta, source)
        rank, world = distributed.rank(), distributed.world_size()
        if rank == 0 and not prepared:
            _prepare(job, settings)
        barrier()
        plan = shards.read_plan(job.out)
        if plan is None:
            raise RuntimeError(
                f"--out: rank {rank} cannot read the plan rank 0 wrote in {str(job.out)!r}; every rank "
                "must see the same --out folder (a shared file system across machines)"
            )
        blocks = [int(b) for b in plan["todo"]][rank::world]
        _encode_blocks(job, model, source, blocks, settings)
        barrier()
        if rank == 0:
            shards.write_index(job.out, settings)
    finally:
        if joined:
            torch.distributed.destroy_process_group()


def _load(job: TokenizeJob, device: torch.device) -> tuple[Any, dict[str, Any], TokenSource]:
    from vqkit.train.run import load_run_model

    if not Path(job.tokenizer).exists():
        raise FileNotFoundError(f"tokenizer: {job.tokenizer!r} does not exist")
    model, meta = load_run_model(job.tokenizer)
    modality = str(meta.get("modality") or model.modality)
    defaults: dict[str, Any] = {}
    if modality == "image":
        defaults["channels"] = int(getattr(model, "in_channels", 1))
        if meta.get("item_shape"):
            defaults["size"] = int(meta["item_shape"][-1])
    rate = meta.get("sample_rate") or getattr(model, "sample_rate", None)
    if modality == "audio" and rate:
        defaults["sample_rate"] = int(rate)
    source = resolve_source(
        job.source, modality=modality, defaults=defaults, options=job.options, data_dir=job.data_dir
    )
    return model.to(device), meta, source


def _settings(job: TokenizeJob, model: Any, meta: dict[str, Any], source: TokenSource) -> dict[str, Any]:
    """What the folder records about its making (JSON types only): checked on resume, kept in the index."""
    q = model.quantizer
    settings = {
        "source": {**source.info(), "data_dir": job.data_dir},
        "tokenizer": {"path": job.tokenizer, "checkpoint": meta.get("checkpoint")},
        "tokenizer_sha256": _weights_sha256(model),
        "tokenizer_config": model.to_config(),
        "modality": model.modality,
        "alphabet_sizes": [int(a) for a in q.alphabet_sizes],
        "bits_per_item": float(model.bits_per_item(source.item_shape)),
        "item_shape": list(source.item_shape),
        "code_shape": [*model.latent_shape(source.item_shape), int(q.codes_per_vector)],
        "dtype": shards.code_dtype(q.alphabet_sizes).name,
        "shard_format": job.format,
        "shard_size": job.shard_size,
    }
    return dict(json.loads(json.dumps(settings)))  # tuples as lists: as it reads back from the file


def _weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _compared(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with the folder (not paths: the folder or data may have moved)."""
    source = settings["source"]
    return {
        "source items": source["num_items"],
        "source item names": source["names_sha256"],
        "source options": source["options"],
        "tokenizer weights": settings["tokenizer_sha256"],
        "tokenizer config": settings["tokenizer_config"],
        "--format": settings["shard_format"],
        "--shard-size": settings["shard_size"],
    }


# ---------------------------------------------------------------------------------------------- the folder
def _prepare(job: TokenizeJob, settings: dict[str, Any]) -> None:
    """Check ``out`` against ``resume`` / ``force``, clear what must go, record the settings and the plan."""
    out = job.out
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out: expected a folder (or nothing), got the file {str(out)!r}")
    entries = sorted(os.listdir(out)) if out.is_dir() else []
    recorded = shards.recorded_settings(out)
    if entries and job.resume:
        if recorded is None:
            raise FileExistsError(
                f"--resume: {str(out)!r} holds no vqkit tokenize output to continue "
                f"(no {RECORDS}/{PLAN} or {INDEX_FILE} of its own)"
            )
        old, new = _compared(recorded), _compared(settings)
        changed = [key for key in new if old.get(key) != new[key]]
        if changed:
            raise ValueError(
                f"--resume: {str(out)!r} was started with other settings ({', '.join(changed)} differ); "
                "choose another --out, or --force to start over"
            )
    elif entries and job.force:
        _clear(out, entries, ours=recorded is not None)
    elif entries:
        raise FileExistsError(
            f"--out: {str(out)!r} exists and is not empty; pass --resume to continue a tokenize there, or "
            "--force to start over (only the files vqkit tokenize wrote are replaced)"
        )
    finished = shards.finished_blocks(out)
    shards.remove_unfinished(out, {record["file"] for record in finished.values()})
    num_blocks = -(-settings["source"]["num_items"] // job.shard_size)
    shards.write_plan(out, settings, [b for b in range(num_blocks) if b not in finished])


def _clear(out: Path, entries: list[str], *, ours: bool) -> None:
    """``force``: remove an earlier tokenize's files; refuse if files of those names are someone else's."""
    mine = [n for n in entries if shards.is_shard_name(n) or shards.is_leftover_name(n) or n == INDEX_FILE]
    clashes = mine + [RECORDS] * (RECORDS in entries)
    if not ours and clashes:
        raise FileExistsError(
            f"--force: {str(out)!r} holds {clashes[:3]}, which vqkit tokenize did not write (no "
            f"{INDEX_FILE} or {RECORDS}/{PLAN} of its own there); remove them or choose another --out"
        )
    for name in mine:
        (out / name).unlink()
    shutil.rmtree(out / RECORDS, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- the work
def _encode_blocks(
    job: TokenizeJob, model: Any, source: TokenSource, blocks: list[int], settings: dict[str, Any]
) -> None:
    size, n, rank = job.shard_size, len(source), distributed.rank()
    dtype = np.dtype(settings["dtype"])
    device = next(model.parameters()).device
    bounds = [(b, b * size, min(n, (b + 1) * size)) for b in blocks]
    progress = _Progress(sum(hi - lo for _, lo, hi in bounds), job.progress and rank == 0)
    with torch.no_grad():
        for block, lo, hi in bounds:
            parts = []
            for start in range(lo, hi, job.batch_size):
                stop = min(hi, start + job.batch_size)
                x = torch.stack([source.item(i) for i in range(start, stop)]).to(device)
                parts.append(model.encode(x).cpu().numpy().astype(dtype))
                progress.update(stop - start)
            _write_block(job, block, rank, source.names[lo:hi], np.concatenate(parts))
    progress.close()


def _write_block(job: TokenizeJob, block: int, rank: int, names: list[str], codes: np.ndarray) -> None:
    """The shard, then its record: a block counts as finished only once both are on disk."""
    file = shards.shard_name(rank, block, job.format)
    written = shards.write_shard(job.out / file, names, codes, job.format)
    shards.write_record(job.out, block, rank, file, names, {**written, "shape": list(codes.shape[1:])})


class _Progress:
    """tqdm on a terminal (the ``train`` extra); otherwise one line every ``PROGRESS_INTERVAL_S``."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.done = total, enabled, 0
        self.started = self.last = time.perf_counter()
        self.bar: Any = None
        if enabled and sys.stdout.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="item", desc="tokenize", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last >= PROGRESS_INTERVAL_S:
            self.last = time.perf_counter()
            print(self._line(), flush=True)

    def _line(self) -> str:
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        return f"tokenize: {self.done}/{self.total} items of this rank ({rate:.1f} items/s)"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------- the command
def add_tokenize_parser(sub: Any) -> None:
    """The ``vqkit tokenize`` subcommand (called by ``vqkit.cli``)."""
    p = sub.add_parser(
        "tokenize",
        help="tokenize a dataset or folder into shards of codes (resumable, multi-process)",
        description="Tokenize every item of a dataset or folder into shards of codes plus index.json.",
    )
    p.add_argument("tokenizer", type=Path, metavar="TOKENIZER", help="run directory or exported tokenizer")
    p.add_argument("source", metavar="SOURCE", help="NAME:SPLIT (fashion_mnist:test), a folder, FOLDER:SPLIT")
    p.add_argument("--out", type=Path, required=True, help="folder for the shards and index.json")
    p.add_argument("--format", choices=SHARD_FORMATS, default="npz", help="parquet needs the parquet extra")
    p.add_argument("--shard-size", type=int, default=1024, help="items per shard (default 1024)")
    p.add_argument("--batch-size", type=int, default=64, help="items per encoder call (default 64)")
    p.add_argument("--nproc", type=int, default=1, help="processes on this machine (or run under torchrun)")
    p.add_argument("--data-dir", help="the dataset's folder, for datasets that read one (mnist, cifar10)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a dataset option")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: this rank's GPU if there is one")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted tokenize in --out")
    again.add_argument("--force", action="store_true", help="start over in --out (other files are kept)")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["size=28", "channels=3"]`` -> ``{"size": 28, "channels": 3}`` (values read as YAML scalars)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option: expected KEY=VALUE (e.g. size=28), got {pair!r}")
        options[key.strip()] = yaml.safe_load(value)
    return options


def tokenize_command(args: argparse.Namespace) -> int:
    """``vqkit tokenize``: run, then print what was written and how fast."""
    started = time.perf_counter()
    path = tokenize_dataset(
        args.tokenizer, args.source, args.out, format=args.format, shard_size=args.shard_size,
        batch_size=args.batch_size, nproc=args.nproc, resume=args.resume, force=args.force,
        data_dir=args.data_dir, options=parse_options(args.option), device=args.device, progress=True,
    )  # fmt: skip
    index = shards.read_index(args.out)
    seconds = time.perf_counter() - started
    print(
        f"wrote {args.out}: {index['num_items']} items in {len(index['shards'])} {args.format} shards, "
        f"codes {tuple(index['code_shape'])} {index['dtype']} per item; {seconds:.1f} s "
        f"({index['num_items'] / seconds:.0f} items/s); index: {path}"
    )
    return 0
