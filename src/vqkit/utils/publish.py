"""Write a tool's files into an output folder without ever losing a file the tool did not write.

The rules (``plan_write`` decides, ``publish_folder`` carries them out):

* **A new or empty folder, or a previous output** (it holds nothing but files the same tool wrote, as its
  ``Owner`` recognizes them by their markers): the new files are staged beside it and the folder is swapped
  whole (``atomic_directory``), so a reader sees the old output or the new one, never a mixture.
* **A folder holding anything else** is refused with ``FileExistsError`` naming the argument, the folder
  and what was found, unless the caller passes ``overwrite`` (``overwrite=True``, ``--force``).
* **With overwrite**, the tool's own files are replaced in place, one by one, each atomically (the file
  that identifies the output, given last, is written last), and its stale earlier outputs are removed; every
  other file is left as it is. A file in the way that the tool did not write (same name, not recognized as
  its own) is refused even then: nothing is deleted that the tool cannot prove it wrote. Only a crash between
  two of those renames can leave a mixture of old and new files of the tool's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from vqkit.utils.atomic import FileWriter, atomic_directory, atomic_write_with, fsync_dir


@dataclass(frozen=True)
class Owner:
    """Who writes an output folder, how errors name it, and how its own files are recognized.

    Attributes:
        writer: what writes it, as errors name it (``"save_quantizer"``, ``"vqkit decode"``).
        argument: the argument that names the folder (``"path"``, ``"-o/--output"``).
        force: how the caller asks to write into a folder holding other files (``"overwrite=True"``).
        owned: the names in a folder that ``writer`` wrote there, checked by their markers (never by name
            alone).
    """

    writer: str
    argument: str
    force: str
    owned: Callable[[Path], set[str]]


@dataclass(frozen=True)
class Plan:
    folder: Path
    swap: bool  # replace the folder whole (it holds only our files) or write into it beside other files
    owned: frozenset[str]


def plan_write(
    path: str | os.PathLike[str], names: Collection[str], owner: Owner, *, overwrite: bool
) -> Plan:
    """Check that ``names`` may be written into the folder ``path`` by ``owner``; raise ``FileExistsError``
    (naming ``owner.argument``, the folder and what is in the way) when they may not."""
    folder = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{owner.argument}: expected a folder (or nothing), got the file {str(path)!r}")
    present = set(os.listdir(folder)) if folder.is_dir() else set()
    # Only plain entries present here: a name from a marker file (a manifest) can never reach outside.
    owned = frozenset(owner.owned(folder)) & present if present else frozenset()
    others = sorted(present - owned)
    if not others:
        return Plan(folder, swap=True, owned=owned)
    if not overwrite:
        raise FileExistsError(
            f"{owner.argument}: expected a new or empty folder or one written by {owner.writer}, got "
            f"{str(path)!r} holding {_listing(others)}; pass {owner.force} to write {_listing(sorted(names))} "
            "there and keep the other files, or choose another folder"
        )
    in_the_way = [name for name in others if name in names]
    if in_the_way:
        raise FileExistsError(
            f"{owner.argument}: {str(Path(path) / in_the_way[0])!r} was not written by {owner.writer}, and "
            f"{owner.force} replaces only its own files; move it away or choose another folder"
        )
    return Plan(folder, swap=False, owned=owned)


def publish_folder(
    path: str | os.PathLike[str], files: Mapping[str, FileWriter], owner: Owner, *, overwrite: bool = False
) -> Path:
    """Write ``files`` (name -> writer, in writing order) into the folder ``path`` by the module's rules."""
    plan = plan_write(path, files, owner, overwrite=overwrite)
    if plan.swap:
        with atomic_directory(plan.folder, replaceable=plan.owned) as staging:
            for name, write in files.items():
                write(staging / name)
        return Path(path)
    for name, write in files.items():
        atomic_write_with(plan.folder / name, write)
    for name in sorted(plan.owned - set(files)):  # our earlier outputs that this write does not renew
        os.unlink(plan.folder / name)
    fsync_dir(plan.folder)
    return Path(path)


def _listing(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    more = len(names) - limit
    return f"{shown} and {more} more" if more > 0 else shown
