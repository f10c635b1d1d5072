"""Test helper: ``python tests/kill_after_step.py STEP CONFIG RUN_DIR [OVERRIDE ...]``.

Trains like ``vqkit train CONFIG OVERRIDE ... --run-dir RUN_DIR --no-report``, but the process SIGKILLs itself
(no cleanup, no ``finally``) right after step STEP has finished, through ``train``'s ``on_step`` hook: a crash at
a known point, for the kill-and-resume test. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import os
import signal
import sys

from vqkit.train.config import load_config
from vqkit.train.loop import train


def main(argv: list[str]) -> None:
    step, config_path, run_dir, *overrides = argv

    def kill_after(finished: int) -> None:
        if finished == int(step):
            os.kill(os.getpid(), signal.SIGKILL)

    train(load_config(config_path, overrides), run_dir, on_step=kill_after)


if __name__ == "__main__":
    main(sys.argv[1:])
