"""A reader for the IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), gzipped or raw.

Layout: two zero bytes, a type byte, the number of dimensions ``n``, then ``n`` big-endian uint32 sizes, then the
values, big-endian, row-major. Any mismatch (magic, type, a size that the data does not fill exactly, a broken
gzip stream) raises ``CorruptDataError`` naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import BinaryIO

import numpy as np

from vqkit.data.base import CorruptDataError

IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzip detected from the content, not the name), native byte order."""
    return _open(path, header_only=False)[2]


def read_idx_header(path: str | os.PathLike[str]) -> tuple[np.dtype, tuple[int, ...]]:
    """``(dtype, shape)`` of the IDX file ``path``, reading only its header."""
    dtype, shape, _ = _open(path, header_only=True)
    return dtype, shape


def _open(path: str | os.PathLike[str], *, header_only: bool) -> tuple[np.dtype, tuple[int, ...], np.ndarray]:
    name = os.fspath(path)
    with open(name, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    try:
        if compressed:
            with gzip.open(name, "rb") as handle:
                return _read(handle, name, "gzipped ", header_only)
        with open(name, "rb") as handle:
            return _read(handle, name, "", header_only)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise CorruptDataError(
            f"{name}: broken gzip stream ({error}); the file is truncated or damaged"
        ) from error


def _read(
    handle: BinaryIO | gzip.GzipFile, name: str, kind: str, header_only: bool
) -> tuple[np.dtype, tuple[int, ...], np.ndarray]:
    header = handle.read(4)
    if len(header) < 4:
        raise CorruptDataError(
            f"{name}: not an IDX file: {len(header)} bytes, shorter than the 4-byte header"
        )
    if header[:2] != b"\x00\x00" or header[2] not in IDX_TYPES:
        raise CorruptDataError(
            f"{name}: not an IDX file: expected the magic 00 00 <type in "
            f"{[f'{t:02x}' for t in IDX_TYPES]}> <ndim>, got {header.hex(' ')}"
        )
    dtype = np.dtype(IDX_TYPES[header[2]])
    ndim = header[3]
    if ndim == 0:
        raise CorruptDataError(f"{name}: IDX header declares 0 dimensions")
    dims_bytes = handle.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise CorruptDataError(
            f"{name}: truncated IDX header: {ndim} dimensions declared, the file ends first"
        )
    shape = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
    native = dtype.newbyteorder("=")
    if header_only:
        return native, shape, np.empty(0, dtype=native)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data = _read_up_to(handle, expected)
    if len(data) < expected:
        raise CorruptDataError(
            f"{name}: truncated {kind}IDX data: shape {list(shape)} of {native.name} needs {expected} bytes "
            f"after the header, got {len(data)}"
        )
    if handle.read(1):
        raise CorruptDataError(f"{name}: {kind}IDX file has bytes after the {list(shape)} {native.name} data")
    return native, shape, np.frombuffer(data, dtype=dtype).reshape(shape).astype(native)  # a writable copy


def _read_up_to(handle: BinaryIO | gzip.GzipFile, size: int, block: int = 1 << 26) -> bytes:
    """Up to ``size`` bytes, read in blocks: a corrupt header that declares terabytes fails as truncated,
    without allocating them first."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        part = handle.read(min(block, remaining))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)
