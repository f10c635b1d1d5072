"""Entropy-coded token files: codes range-coded under a ``CodePrior``, in a versioned, checksummed container.

``encode_codes(items, prior)`` turns a sequence of items' codes (each ``[..., C]``, e.g. ``tokenizer.encode(x)``
whose first axis runs over items) into bytes; ``decode_codes(data, prior)`` gives back the same codes, bit for
bit, or raises ``CodedFileError`` saying what is wrong. ``write_coded_file`` / ``read_coded_file`` do the
same with a file (written atomically; errors name the file).

File format, version 1 (all integers little-endian)::

    offset        size  field
    0             4     magic b"VQKC"
    4             2     format version (uint16): 1
    6             2     flags (uint16): 0, reserved
    8             4     H: header size in bytes (uint32)
    12            8     P: payload size in bytes (uint64), a multiple of 4
    20            H     header: a UTF-8 JSON object (below)
    20 + H        P     payload: the range coder's 32-bit words (uint32)
    20 + H + P    4     CRC32 (zlib) of every byte before it

The header holds ``coder`` (the coder and its model: ``constriction.stream.queue.RangeEncoder`` with
``Categorical(perfect=False)`` models, 32-bit words, 24-bit probabilities), ``identity`` (the prior's:
``tokenizer_identity`` of the tokenizer the codes belong to), ``prior`` (``CodePrior.digest`` of the prior
coded under: the first ``C`` positions' when the items keep fewer positions than the prior has),
``alphabet_sizes`` (``K_j`` of the ``C`` positions coded), ``items`` (how many), ``shapes`` (each item's code
shape ``[..., C]``, run-length encoded as ``[[shape, count], ...]``), ``codes_crc32`` (CRC32 of the codes as
int32 ``[N, C]`` rows in item order, checked after decoding: a coder or prior that differs from the encoder's
cannot pass unnoticed) and ``meta`` (the caller's JSON: ``vqkit encode`` puts its sources there).

The payload codes the ``N`` rows of all items concatenated, position by position: every row's code 0 under
``p_0``, then every row's code 1 under ``p_1``, ... Positions of one code (``K_j = 1``) are not coded. The
rows are i.i.d. under the prior (no context model across positions): the payload approaches the codes'
cross-entropy ``sum(-log2 p_j(code))`` within the coder's fixed-point loss and a final word.

Decoding checks, in order, and names the first failure: the magic bytes, the version, the sizes (a truncated
file, or bytes after the checksum), the CRC32 (a corrupt file), the header, that the prior given is the one
the file was coded under (identity, then digest), and the decoded codes' CRC32.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqkit.coding.backend import constriction
from vqkit.coding.prior import CodePrior, code_rows
from vqkit.utils.atomic import atomic_write_bytes

MAGIC = b"VQKC"
VERSION = 1
CODER = "constriction.queue.RangeEncoder/Categorical(perfect=False)"  # u32 words, 24-bit probabilities
_FIXED = struct.Struct("<4sHHIQ")  # magic, version, flags, header size, payload size: 20 bytes
_CRC = struct.Struct("<I")


class CodedFileError(ValueError):
    """Coded bytes (a file) that cannot be decoded: not such a file, truncated, corrupt, or under another
    prior. The message names the file and what is wrong."""


def _models(prior: CodePrior) -> list[tuple[int, Any]]:
    """``(position, constriction model)`` of every position that is coded (``K_j > 1``)."""
    categorical = constriction().stream.model.Categorical
    return [
        (j, categorical(prior.probabilities(j), perfect=False))
        for j, size in enumerate(prior.alphabet_sizes)
        if size > 1
    ]


def range_encode(rows: np.ndarray, prior: CodePrior) -> bytes:
    """The payload of rows ``[N, C]`` (checked codes): position by position, each under ``p_j``."""
    encoder = constriction().stream.queue.RangeEncoder()
    for j, model in _models(prior):
        encoder.encode(np.ascontiguousarray(rows[:, j], dtype=np.int32), model)
    return bytes(np.asarray(encoder.get_compressed(), dtype="<u4").tobytes())


def range_decode(payload: bytes, prior: CodePrior, num_rows: int) -> np.ndarray:
    """The rows ``[num_rows, C]`` (int64) that ``range_encode`` coded into ``payload``."""
    rows = np.zeros((num_rows, prior.codes_per_vector), dtype=np.int64)
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    decoder = constriction().stream.queue.RangeDecoder(words)
    for j, model in _models(prior):
        if num_rows:
            rows[:, j] = decoder.decode(model, num_rows)
    return rows


def payload_bits(codes: Any, prior: CodePrior) -> int:
    """Measured size, in bits, of the payload that codes ``[..., C]`` take under ``prior`` (no header)."""
    return 8 * len(range_encode(code_rows(codes, prior.alphabet_sizes), prior))


def _item_rows(items: Any, prior: CodePrior) -> tuple[np.ndarray, list[list[int]], CodePrior]:
    """All items' codes as rows ``[N, C]``, each item's shape, and the prior of their ``C`` positions."""
    arrays = [c.detach().cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c) for c in items]
    widths = {a.shape[-1] if a.ndim else 0 for a in arrays}
    if len(widths) > 1 or 0 in widths:
        raise ValueError(
            f"codes: expected items of shape [..., C] with one C, got shapes {[a.shape for a in arrays][:4]}"
        )
    width = widths.pop() if widths else prior.codes_per_vector
    if width > prior.codes_per_vector:
        raise ValueError(
            f"codes: expected at most {prior.codes_per_vector} codes per vector (the prior's), got {width}"
        )
    used = prior.prefix(width)
    rows = [code_rows(a, used.alphabet_sizes, f"codes[{i}]") for i, a in enumerate(arrays)]
    all_rows = np.concatenate(rows) if rows else np.zeros((0, width), dtype=np.int64)
    return all_rows, [list(a.shape) for a in arrays], used


def _run_lengths(shapes: list[list[int]]) -> list[list[Any]]:
    runs: list[list[Any]] = []
    for shape in shapes:
        if runs and runs[-1][0] == shape:
            runs[-1][1] += 1
        else:
            runs.append([shape, 1])
    return runs


def _crc(rows: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(rows, dtype="<i4").tobytes())


def encode_codes(items: Any, prior: CodePrior, *, meta: Mapping[str, Any] | None = None) -> bytes:
    """A coded file's bytes for ``items``: a sequence of code arrays ``[..., C]`` (tensors or numpy; a tensor
    ``[B, ..., C]`` is ``B`` items), ``C`` at most the prior's (its first ``C`` positions are used), every code
    in range (``-1`` is refused). ``meta``: JSON-serializable, kept in the header."""
    rows, shapes, used = _item_rows(items, prior)
    header = {
        "coder": CODER,
        "identity": used.identity,
        "prior": used.digest,
        "alphabet_sizes": list(used.alphabet_sizes),
        "items": len(shapes),
        "shapes": _run_lengths(shapes),
        "codes_crc32": _crc(rows),
        "meta": dict(meta or {}),
    }
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    payload = range_encode(rows, used)
    body = _FIXED.pack(MAGIC, VERSION, 0, len(head), len(payload)) + head + payload
    return body + _CRC.pack(zlib.crc32(body))


def read_header(data: bytes, source: str = "data") -> tuple[dict[str, Any], bytes]:
    """The checked header and the payload of coded ``data``; ``CodedFileError`` names ``source``."""
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        raise CodedFileError(
            f"{source}: truncated: {len(data)} bytes, less than the {_FIXED.size}-byte fixed header"
        )
    if data[: len(MAGIC)] != MAGIC:
        raise CodedFileError(f"{source}: not a vqkit entropy-coded file (it does not start with {MAGIC!r})")
    if len(data) < _FIXED.size:
        raise CodedFileError(
            f"{source}: truncated: {len(data)} bytes, less than the {_FIXED.size}-byte fixed header"
        )
    _, version, _, head_size, payload_size = _FIXED.unpack_from(data)
    if version > VERSION:
        raise CodedFileError(f"{source}: format version {version}; this vqkit reads up to version {VERSION}")
    expected = _FIXED.size + head_size + payload_size + _CRC.size
    if len(data) < expected:
        raise CodedFileError(
            f"{source}: truncated: its header announces {expected} bytes, the file has {len(data)}"
        )
    if len(data) > expected:
        raise CodedFileError(f"{source}: {len(data) - expected} unexpected bytes after the checksum")
    (stored,) = _CRC.unpack_from(data, expected - _CRC.size)
    computed = zlib.crc32(data[: expected - _CRC.size])
    if stored != computed:
        raise CodedFileError(
            f"{source}: checksum mismatch (CRC32 stored {stored:08x}, computed {computed:08x}): the file is corrupt"
        )
    try:
        header = json.loads(data[_FIXED.size : _FIXED.size + head_size].decode("utf-8"))
        _check_header(header, payload_size)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CodedFileError(f"{source}: invalid header: {err}") from err
    return header, data[_FIXED.size + head_size : expected - _CRC.size]


def _check_header(header: Any, payload_size: int) -> None:
    if not isinstance(header, dict):
        raise ValueError("expected a JSON object")
    for key in ("coder", "identity", "prior", "alphabet_sizes", "items", "shapes", "codes_crc32", "meta"):
        if key not in header:
            raise ValueError(f"no {key!r}")
    if header["coder"] != CODER:
        raise ValueError(f"coded by {header['coder']!r}; this vqkit decodes {CODER!r}")
    if payload_size % 4:
        raise ValueError(f"payload of {payload_size} bytes, not whole 32-bit words")
    width = len(header["alphabet_sizes"])
    for shape, count in header["shapes"]:
        if not (all(isinstance(n, int) and n >= 0 for n in [*shape, count]) and shape and shape[-1] == width):
            raise ValueError(f"item shape {shape!r} x {count!r}: expected [..., {width}] of counts")
    if sum(int(count) for _, count in header["shapes"]) != header["items"]:
        raise ValueError("the item shapes do not add up to the item count")


def _prior_for(header: dict[str, Any], prior: CodePrior, source: str) -> CodePrior:
    """``prior`` (or its first positions) if it is the one ``header`` was coded under."""
    sizes = [int(k) for k in header["alphabet_sizes"]]
    if header["identity"] != prior.identity:
        raise CodedFileError(
            f"{source}: coded for {header['identity'] or 'no identity'!r}, but the prior given belongs to "
            f"{prior.identity or 'no identity'!r} (another tokenizer)"
        )
    if not 1 <= len(sizes) <= prior.codes_per_vector or list(prior.alphabet_sizes[: len(sizes)]) != sizes:
        raise CodedFileError(
            f"{source}: coded with alphabet sizes {sizes}; the prior given has {list(prior.alphabet_sizes)}"
        )
    used = prior.prefix(len(sizes))
    if header["prior"] != used.digest:
        raise CodedFileError(
            f"{source}: coded under prior {header['prior']}; the prior given is {used.digest} (refitted since?)"
        )
    return used


def decode_codes(
    data: bytes, prior: CodePrior, *, source: str = "data"
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """The items' codes (int64 tensors, each of the shape it was coded with) and the ``meta`` of coded
    ``data``; ``CodedFileError`` (naming ``source``) when it cannot be decoded exactly."""
    header, payload = read_header(data, source)
    used = _prior_for(header, prior, source)
    shapes = item_shapes(header)
    sizes = [int(np.prod(shape[:-1], dtype=np.int64)) for shape in shapes]
    try:
        rows = range_decode(payload, used, sum(sizes))
    except (ValueError, KeyError, RuntimeError) as err:
        raise CodedFileError(f"{source}: the payload does not decode under this prior: {err}") from err
    if _crc(rows) != header["codes_crc32"]:
        raise CodedFileError(
            f"{source}: the decoded codes fail their checksum: the coder or prior differs from the encoder's"
        )
    bounds = np.cumsum([0, *sizes])
    codes = [
        torch.from_numpy(rows[bounds[i] : bounds[i + 1]].reshape(shape)) for i, shape in enumerate(shapes)
    ]
    return codes, dict(header["meta"])


def write_coded_file(
    path: str | os.PathLike[str], items: Any, prior: CodePrior, *, meta: Mapping[str, Any] | None = None
) -> Path:
    """``encode_codes`` into ``path``, atomically: the old file or the complete new one, never a part."""
    return atomic_write_bytes(path, encode_codes(items, prior, meta=meta))


def read_coded_file(
    path: str | os.PathLike[str], prior: CodePrior
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """``decode_codes`` of the file ``path`` (errors name it)."""
    return decode_codes(Path(path).read_bytes(), prior, source=str(path))


def is_coded_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file that starts with the coded files' magic bytes."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def item_shapes(header: Mapping[str, Any]) -> list[list[int]]:
    """Each item's code shape, from a header's run-length ``shapes``."""
    return [list(shape) for shape, count in header["shapes"] for _ in range(int(count))]
