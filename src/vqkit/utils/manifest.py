"""Output folders of many files that a tool recognizes as its own by a manifest.

The manifest (a small JSON file written last, into the same folder) records the SHA-256 of every file the
tool wrote. A file counts as the tool's own only while its content still has that hash, so an output the user
edited, or a file of the same name the user put there, is never replaced (``vqkit.utils.publish``'s rules).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqkit._version import __version__
from vqkit.utils.atomic import FileWriter, bytes_writer
from vqkit.utils.publish import Owner, plan_write, publish_folder


@dataclass(frozen=True)
class Manifest:
    """One kind of manifest-marked output folder.

    Attributes:
        name: the manifest's file name in the folder (e.g. ``"vqkit-decode.json"``).
        format: its ``"format"`` marker.
        writer: the tool, as errors name it.
    """

    name: str
    format: str
    writer: str

    def owner(self, argument: str, force: str) -> Owner:
        return Owner(self.writer, argument, force, self.owned)

    def owned(self, folder: Path) -> set[str]:
        """The manifest and each file it lists whose content is still what was written."""
        try:
            manifest = json.loads((folder / self.name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return set()
        if not isinstance(manifest, dict) or manifest.get("format") != self.format:
            return set()
        files = manifest.get("files")
        listed = files.items() if isinstance(files, dict) else []
        return {self.name} | {name for name, digest in listed if _sha256(folder / str(name)) == digest}

    def check(self, path: str | os.PathLike[str], names: list[str], owner: Owner, *, overwrite: bool) -> None:
        """Raise now, before any work, if ``names`` could not be written to ``path``."""
        plan_write(path, [*names, self.name], owner, overwrite=overwrite)

    def publish(
        self,
        path: str | os.PathLike[str],
        files: Mapping[str, bytes],
        owner: Owner,
        *,
        overwrite: bool,
        info: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``files`` and then the manifest (with ``info``) into ``path``."""
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        manifest = {"format": self.format, "version": 1, "vqkit_version": __version__, **(info or {})}
        manifest["files"] = digests
        writers: dict[str, FileWriter] = {name: bytes_writer(data) for name, data in files.items()}
        writers[self.name] = bytes_writer(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
        return publish_folder(path, writers, owner, overwrite=overwrite)


def _sha256(file: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
