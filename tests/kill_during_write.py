"""Test helper: a process SIGKILLed in the middle of a write (``kill -9`` at the worst moment, deterministically).

* ``python tests/kill_during_write.py checkpoint STEP CONFIG RUN_DIR [OVERRIDE ...]`` trains like ``vqkit train
  CONFIG OVERRIDE ... --run-dir RUN_DIR --no-report``, but the writer of checkpoint ``STEP`` writes the first
  half of its first safetensors file, flushes it to disk, and SIGKILLs the process (no cleanup, no
  ``finally``);
* ``python tests/kill_during_write.py encode RUN FILE OUTPUT`` runs ``vqkit encode RUN FILE -o OUTPUT``, and the
  writer of the codes archive writes half of it, flushes it, and SIGKILLs the process.

The dying writers are patched in here, in the child process: the production code has no test hooks. Not
collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import save

from vqkit.utils import atomic, folders


def _die_after_half(data: bytes, path: str | os.PathLike[str]) -> None:
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _checkpoint(step: int, config_path: str, run_dir: str, overrides: list[str]) -> None:
    from vqkit.train.config import load_config
    from vqkit.train.loop import train

    real = folders.save_file
    staging = f".step_{step:07d}."  # atomic_directory's staging folder of that checkpoint

    def save_file(
        tensors: dict[str, Any], filename: str | os.PathLike[str], metadata: dict[str, str] | None = None
    ) -> None:
        if Path(filename).parent.name.startswith(staging):
            _die_after_half(save(tensors, metadata=metadata), filename)
        real(tensors, filename, metadata=metadata)

    folders.save_file = save_file
    train(load_config(config_path, overrides), run_dir)


def _encode(run: str, file: str, output: str) -> None:
    from vqkit.cli import main

    def bytes_writer(data: bytes) -> Callable[[Path], None]:
        return lambda path: _die_after_half(data, path)

    atomic.bytes_writer = bytes_writer
    main(["encode", run, file, "-o", output])


def main(argv: list[str]) -> None:
    what, *rest = argv
    if what == "checkpoint":
        step, config_path, run_dir, *overrides = rest
        _checkpoint(int(step), config_path, run_dir, overrides)
    elif what == "encode":
        _encode(*rest)
    else:
        raise SystemExit(f"kill_during_write: unknown mode {what!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
