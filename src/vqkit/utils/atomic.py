"""Atomic writes: a reader sees the old file (or folder) or the complete new one, never a half-written one.

A write that fails (disk full, permission denied, a read-only folder) removes its temporary file or folder,
leaves the target as it was, and raises the ``OSError`` again naming the target, not the temporary name (same
errno, so a ``PermissionError`` stays one). A process killed mid-write leaves at most a hidden temporary
``.<name>.*.tmp`` beside the target, which no reader opens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

FileWriter = Callable[[Path], None]
"""Writes one file at the path it is given (a temporary name; the caller renames it into place)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_with(path: str | os.PathLike[str], write: FileWriter) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise write_error(err, target) from err
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.close(fd)
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and _part(err, tmp) is not None:
            raise write_error(err, target) from err
        raise
    return target


def write_error(err: OSError, target: Path, part: str = "") -> OSError:
    """``err``, raised while writing ``target`` (``part``: which file inside a folder), as an error that names
    ``target``: its temporary name means nothing to the user and is gone by now. The errno is kept, so
    ``OSError(errno, ...)`` gives back the same class (``PermissionError``, ...)."""
    where = f"{str(target)!r}" + (f" ({part})" if part else "")
    message = f"cannot write {where}: {err.strerror or err}; it is left as it was"
    return OSError(err.errno, message) if err.errno is not None else OSError(message)


def _part(err: OSError, temporary: Path) -> str | None:
    """Where under ``temporary`` ``err`` happened (``""``: ``temporary`` itself, or no file named, as for a
    failed ``write`` or ``fsync``); ``None`` when it is about another file (an input the writer read)."""
    if err.filename is None:
        return ""
    name = Path(os.fsdecode(err.filename)) if isinstance(err.filename, (str, bytes, os.PathLike)) else None
    if name is None or name == temporary:
        return ""
    return str(name.relative_to(temporary)) if temporary in name.parents else None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    return atomic_write_with(path, bytes_writer(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def bytes_writer(data: bytes) -> FileWriter:
    """A ``FileWriter`` that writes ``data``."""

    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str], *, replaceable: Collection[str] | None = None
) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces ``path`` whole, on error it is removed.

    The staged files are fsynced first. An existing ``path`` is moved aside and deleted only after the new
    folder is in place; if the second rename fails, the old folder is moved back. An interruption leaves the
    old folder or the new one (plus at most a hidden leftover), never a mixture. (A hard kill exactly between
    the two renames leaves the old folder under its hidden ``.old`` name.)

    ``replaceable=None`` replaces whatever ``path`` holds (a folder only this code writes, e.g. a checkpoint).
    Otherwise ``path`` may hold only files of those names: anything else found once the old folder is moved
    aside (written there since the caller looked) puts it back untouched and raises ``FileExistsError``, and
    the old folder is then emptied name by name, never removed wholesale.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as err:
        raise write_error(err, target) from err
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        try:
            yield staging
            _fsync_tree(staging)
        except OSError as err:
            part = _part(err, staging)
            if part is None:
                raise
            raise write_error(err, target, part) from err
        backup = _move_aside(target, replaceable)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.replace(staging, target)
    except BaseException as err:
        # Put the old folder back: an interruption between the two renames must not lose it.
        if backup is not None and not target.exists():
            os.replace(backup, target)
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):
            raise write_error(err, target) from err
        raise
    fsync_dir(target.parent)
    if backup is not None:
        _remove_old(backup, replaceable)


def _move_aside(target: Path, replaceable: Collection[str] | None) -> Path | None:
    """Rename an existing ``target`` to a hidden sibling (``None`` when there is none), checked first."""
    if not target.exists():
        return None
    if not target.is_dir():
        raise FileExistsError(f"path: expected a folder (or nothing) at {str(target)!r}, found a file")
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    backup.rmdir()
    os.replace(target, backup)
    unexpected = sorted(set(os.listdir(backup)) - set(replaceable)) if replaceable is not None else []
    if unexpected:
        os.replace(backup, target)
        raise FileExistsError(
            f"path: {str(target)!r} gained {unexpected[:3]} while it was being written; nothing was replaced"
        )
    return backup


def _remove_old(backup: Path, replaceable: Collection[str] | None) -> None:
    if replaceable is None:
        shutil.rmtree(backup, ignore_errors=True)
        return
    for name in replaceable:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(backup / name)
    try:
        os.rmdir(backup)
    except OSError:  # a file appeared in the moved-aside folder after the check: keep it, say where
        warnings.warn(f"kept {str(backup)!r}: it holds files written there during the save", stacklevel=4)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and the folders themselves, so a rename publishes complete data."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(folder, name))
        fsync_dir(Path(folder))
