"""The README's examples run: every ```python block in order, and every ``vqkit ...`` command line parses.

Python blocks run in one namespace (later blocks use what earlier ones defined), in a temporary working
folder, with the few long loops shortened by ``SMALL``. A block preceded by ``<!-- readme-test: skip -->`` is
left out (none is: prefer a runnable example). Command lines, from ```bash blocks and from inline code, are
parsed by the real ``vqkit`` parser without running them, the config files they name must exist, and
``vqkit <command> --help`` succeeds for every command the README mentions.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from vqkit.cli import COMMANDS, main, parse_args

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SKIP = "<!-- readme-test: skip -->"
# Shortened for the test (each must still occur, so the table notices when the README changes).
SMALL = {"for _ in range(300):": "for _ in range(20):"}

BLOCK = re.compile(r"(?P<before>[^\n]*\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


def blocks(lang: str) -> list[str]:
    return [
        m["body"] for m in BLOCK.finditer(README) if m["lang"] == lang and SKIP not in (m["before"] or "")
    ]


def command_lines() -> list[list[str]]:
    """``vqkit <command> ...`` from bash blocks (one a line, comments dropped) and from inline code."""
    lines = [line for body in blocks("bash") for line in body.splitlines()]
    prose = BLOCK.sub("", README)
    lines += re.findall(r"`(vqkit\s+[a-z][^`]*)`", prose)
    commands = [shlex.split(line, comments=True) for line in lines]
    return [argv[1:] for argv in commands if argv and argv[0] == "vqkit"]


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # blocks that save write here
    source = "\n".join(blocks("python"))
    for long, short in SMALL.items():
        assert long in source, f"README no longer has {long!r}: update SMALL"
        source = source.replace(long, short)
    torch.manual_seed(0)
    exec(compile(source, str(ROOT / "README.md"), "exec"), {"__name__": "readme"})


def test_the_first_example_is_examples_train_toy() -> None:
    """The README says the example is ``examples/train_toy.py``: it must be that file's text."""
    example = (ROOT / "examples" / "train_toy.py").read_text(encoding="utf-8")
    assert blocks("python")[0] in example


def test_documented_commands_parse() -> None:
    commands = command_lines()
    assert len(commands) >= 6, commands  # the extraction still finds the CLI section
    for argv in commands:
        if len(argv) == 1:  # a command named in prose (`vqkit bench`): its help is checked below
            assert argv[0] in COMMANDS, argv
            continue
        args = parse_args(argv)
        assert args.command in COMMANDS
        for arg in argv:
            if arg.startswith("configs/"):
                assert (ROOT / arg).is_file(), f"{arg} (in `vqkit {' '.join(argv)}`) does not exist"


def test_help_of_every_mentioned_command(capsys: pytest.CaptureFixture[str]) -> None:
    mentioned = sorted({argv[0] for argv in command_lines()})
    assert {"train", "eval", "encode", "decode", "export", "bench"} <= set(mentioned)
    for command in mentioned:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0, command
        assert f"usage: vqkit {command}" in capsys.readouterr().out
