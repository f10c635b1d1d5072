"""The files of a tokenized dataset (``vqkit tokenize``): shards of codes, the index, and reading them back.

A tokenized folder holds

* ``shard-rRRR-BBBBBB.npz`` (or ``.parquet``): the codes of block ``BBBBBB`` of the source (``shard_size``
  consecutive items), written by rank ``RRR``. An ``.npz`` shard holds ``names`` (``[n]`` unicode) and
  ``codes`` (``[n, *latent, C]``); a Parquet shard one row per item: ``name`` (string), ``codes`` (the item's
  codes flattened in C order, a list) and ``shape`` (``[*latent, C]``). Codes are stored in the smallest
  unsigned integer type that holds every code (``code_dtype``: ``uint8`` up to 256 codes per position,
  ``uint16`` up to 65,536). Both formats load without pickle.
* ``index.json``: ``{"format": "vqkit.tokenized", "version", "vqkit_version", "settings" (the source, the
  tokenizer's config and weights hash, the shard format and size), "dtype", "code_shape", "num_items",
  "shards": [{"file", "rank", "block", "num_items", "bytes", "sha256"}], "items": [{"name", "shard", "row",
  "shape"}]}``, the items in source order. It is written last, atomically, so its presence means complete.
* while the work is in progress, ``.tokenize/``: ``settings.json`` (the settings and the blocks planned) and
  one record per finished block, ``block-BBBBBB.json`` (its shard's file, rank, names, code shape, size and
  SHA-256), written atomically after the shard. ``finished_blocks`` reads them; ``write_index`` merges them
  into ``index.json`` and removes the folder.

>>> from vqkit.train.shards import read_shards
>>> codes = read_shards("tokens/")          # {item name: codes [*latent, C]}, in source order
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

ShardFormat = Literal["npz", "parquet"]
SHARD_FORMATS: tuple[ShardFormat, ...] = ("npz", "parquet")
INDEX_FILE = "index.json"
INDEX_FORMAT = "vqkit.tokenized"
INDEX_VERSION = 1
RECORDS = ".tokenize"
PLAN = "settings.json"
_SHARD = re.compile(r"^shard-r(\d{3,})-(\d{6,})\.(npz|parquet)$")
_LEFTOVER = re.compile(r"^\.(shard-r\d{3,}-\d{6,}\.(npz|parquet)|index\.json)\..*\.tmp$")


def shard_name(rank: int, block: int, format: ShardFormat) -> str:
    """``shard-r001-000003.npz``: block 3, written by rank 1."""
    return f"shard-r{rank:03d}-{block:06d}.{format}"


def is_shard_name(name: str) -> bool:
    return _SHARD.match(name) is not None


def is_leftover_name(name: str) -> bool:
    """The temporary file of an atomic shard or index write that a hard kill left behind."""
    return _LEFTOVER.match(name) is not None


def code_dtype(alphabet_sizes: Sequence[int]) -> np.dtype[Any]:
    """The smallest unsigned integer dtype holding codes ``0 .. max(alphabet_sizes) - 1``."""
    return np.dtype(np.min_scalar_type(max(int(a) for a in alphabet_sizes) - 1))


def require_pyarrow(argument: str = "format") -> Any:
    """``pyarrow.parquet``, or an ``ImportError`` that names the ``parquet`` extra."""
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError(
            f"{argument}: Parquet shards need pyarrow, the 'parquet' extra (pip install 'vqkit[parquet]'); "
            "the default npz shards need nothing"
        ) from error
    return pq


def write_shard(path: Path, names: Sequence[str], codes: np.ndarray, format: ShardFormat) -> dict[str, Any]:
    """Write one shard atomically: ``names[i]`` has ``codes[i]`` (``codes``: ``[n, *latent, C]``, one shape for
    every item of a shard). Returns ``{"bytes", "sha256"}`` of the file."""
    from vqkit.utils.atomic import atomic_write_bytes

    if len(names) != len(codes):
        raise ValueError(f"names: expected one name per item ({len(codes)}), got {len(names)}")
    data = _npz_bytes(names, codes) if format == "npz" else _parquet_bytes(names, codes)
    atomic_write_bytes(path, data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _npz_bytes(names: Sequence[str], codes: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, names=np.array(list(names), dtype=np.str_), codes=codes)
    return buffer.getvalue()


def _parquet_bytes(names: Sequence[str], codes: np.ndarray) -> bytes:
    import pyarrow as pa

    pq = require_pyarrow()
    n, shape = len(codes), list(codes.shape[1:])
    size = int(np.prod(shape, dtype=np.int64))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * size)
    table = pa.table(
        {
            "name": pa.array(list(names), type=pa.string()),
            "codes": pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(codes).reshape(-1))),
            "shape": pa.array([shape] * n, type=pa.list_(pa.int32())),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def read_shard(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """``(names, codes [n, *latent, C])`` of one shard file (either format, by its suffix)."""
    file = Path(path)
    if file.suffix == ".parquet":
        pq = require_pyarrow()
        table = pq.read_table(file)
        names = [str(s) for s in table.column("name").to_pylist()]
        shapes = table.column("shape").to_pylist()
        flat = np.concatenate([chunk.flatten().to_numpy() for chunk in table.column("codes").chunks])
        shape = tuple(shapes[0]) if shapes else (0,)
        return names, flat.reshape(len(names), *shape)
    with np.load(file, allow_pickle=False) as archive:
        return [str(s) for s in archive["names"]], archive["codes"]


def read_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``index.json`` of a finished tokenized folder, checked."""
    file = Path(path) / INDEX_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"path: {str(path)!r} has no {INDEX_FILE}: not a finished vqkit tokenize output "
            "(an interrupted one continues with vqkit tokenize --resume)"
        )
    index = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ValueError(f"path: {str(file)!r} is not a vqkit tokenize index (format {INDEX_FORMAT!r})")
    if int(index.get("version", 0)) > INDEX_VERSION:
        raise ValueError(f"path: {str(file)!r} has index version {index['version']}; this vqkit reads 1")
    return index


def iter_shards(path: str | os.PathLike[str]) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(names, codes)`` of each shard of a tokenized folder, in source order (one shard in memory at once).

    Raises ``ValueError`` naming the shard if its items are not those the index lists for it."""
    index = read_index(path)
    listed: dict[str, list[str]] = {}
    for item in index["items"]:
        listed.setdefault(item["shard"], []).append(item["name"])
    for shard in index["shards"]:
        names, codes = read_shard(Path(path) / shard["file"])
        if names != listed.get(shard["file"], []):
            raise ValueError(f"path: shard {shard['file']!r} does not hold the items the index lists for it")
        yield names, codes


def read_shards(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every item's codes, ``{name: codes [*latent, C]}`` in source order (the dtype the index records)."""
    return {name: row for names, codes in iter_shards(path) for name, row in zip(names, codes, strict=True)}


# ---------------------------------------------------------------------------------------------- in progress
def write_plan(out: Path, settings: dict[str, Any], todo: list[int]) -> None:
    """Record a tokenize's ``settings`` and the blocks it has ``todo`` (written by rank 0, read by every rank)."""
    from vqkit.utils.atomic import atomic_write_text

    atomic_write_text(out / RECORDS / PLAN, json.dumps({"settings": settings, "todo": todo}))


def read_plan(out: Path) -> dict[str, Any] | None:
    """``{"settings", "todo"}`` of the tokenize in progress in ``out``, or ``None``."""
    try:
        plan = json.loads((out / RECORDS / PLAN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and {"settings", "todo"} <= set(plan) else None


def recorded_settings(out: Path) -> dict[str, Any] | None:
    """The settings an earlier tokenize recorded in ``out`` (its plan, else its index), or ``None``."""
    plan = read_plan(out)
    if plan is not None:
        return dict(plan["settings"])
    try:
        return dict(read_index(out)["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(
    out: Path, block: int, rank: int, file: str, names: Sequence[str], shard: dict[str, Any]
) -> None:
    """Record block ``block`` as finished: its shard ``file`` (``shard``: ``write_shard``'s result plus
    ``shape``, the code shape) holds ``names``. Written after the shard, so a record means a complete shard."""
    from vqkit.utils.atomic import atomic_write_text

    record = {
        "block": block,
        "rank": rank,
        "file": file,
        "num_items": len(names),
        **shard,
        "names": list(names),
    }
    atomic_write_text(out / RECORDS / f"block-{block:06d}.json", json.dumps(record))


def finished_blocks(out: Path) -> dict[int, dict[str, Any]]:
    """``block -> record`` of every block whose shard is on disk as recorded (by the index or a record)."""
    found: dict[int, dict[str, Any]] = {}
    try:
        index = read_index(out)
    except (OSError, ValueError):
        index = {"shards": [], "items": []}
    rows: dict[str, list[dict[str, Any]]] = {}
    for item in index["items"]:
        rows.setdefault(item["shard"], []).append(item)
    for shard in index["shards"]:
        mine = rows.get(shard["file"], [])
        shape = mine[0]["shape"] if mine else index.get("code_shape")
        found[int(shard["block"])] = {**shard, "names": [r["name"] for r in mine], "shape": shape}
    for file in sorted((out / RECORDS).glob("block-*.json")):
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
            found[int(record["block"])] = record
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: its block is redone
    return {b: r for b, r in found.items() if _on_disk(out / str(r.get("file")), r.get("bytes"))}


def _on_disk(path: Path, size: Any) -> bool:
    return path.is_file() and path.stat().st_size == size


def remove_unfinished(out: Path, keep: set[str]) -> None:
    """Shards not in ``keep`` (a kill between a shard and its record) and atomic-write leftovers."""
    for name in os.listdir(out) if out.is_dir() else []:
        if (is_shard_name(name) and name not in keep) or is_leftover_name(name):
            (out / name).unlink()
    for leftover in (out / RECORDS).glob(".*.tmp"):
        leftover.unlink()


def write_index(out: Path, settings: dict[str, Any]) -> Path:
    """Merge every block's record into ``index.json`` (once all are finished), then remove ``.tokenize/``.

    ``settings`` (``vqkit.train.tokenize_dataset``) gives the item count, shard size, names hash and dtype."""
    from vqkit._version import __version__
    from vqkit.utils.atomic import atomic_write_text

    finished = finished_blocks(out)
    num_blocks = -(-settings["source"]["num_items"] // settings["shard_size"])
    missing = [b for b in range(num_blocks) if b not in finished]
    if missing:
        raise RuntimeError(
            f"--out: blocks {missing[:5]} of {str(out)!r} have no finished shard; run again with --resume"
        )
    records = [finished[b] for b in range(num_blocks)]
    items = [
        {"name": name, "shard": r["file"], "row": row, "shape": r["shape"]}
        for r in records
        for row, name in enumerate(r["names"])
    ]
    names = "\n".join(item["name"] for item in items).encode("utf-8")
    if hashlib.sha256(names).hexdigest() != settings["source"]["names_sha256"]:
        raise RuntimeError(f"--out: the shards in {str(out)!r} do not hold the source's items in order")
    keys = ("file", "rank", "block", "num_items", "bytes", "sha256")
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "vqkit_version": __version__,
        "settings": settings,
        "dtype": settings["dtype"],
        "code_shape": settings["code_shape"],
        "num_items": len(items),
        "shards": [{k: r[k] for k in keys} for r in records],
        "items": items,
    }
    path = atomic_write_text(out / INDEX_FILE, json.dumps(index, indent=1))
    shutil.rmtree(out / RECORDS, ignore_errors=True)
    return path
