"""Progress of the long commands: plain lines with counts and an ETA off a terminal, a bounded number of them,
nested reporters silent, tqdm on a terminal; and the lines ``vqkit train``, ``eval`` and ``bench`` print."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from vqkit.cli import main
from vqkit.train.progress import NoProgress, Reporter, duration, progress

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(\w+): (\d+)/(\d+) (\w+) \((\d+)%\), elapsed (\S+)(, ETA (\S+))?$")


class Clock:
    """A fake monotonic clock the test advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_durations_read_as_a_log_line_writes_them() -> None:
    assert [duration(s) for s in (0, 45.4, 60, 470, 3599, 7380)] == [
        "0s",
        "45s",
        "1m00s",
        "7m50s",
        "59m59s",
        "2h03m",
    ]


def test_plain_lines_count_and_estimate_and_stay_few() -> None:
    """10,000 updates at 1 s each: a line per tenth (and none per update), each with the count and the ETA of
    the remaining steps at the rate so far; the last line on close has no ETA."""
    stream, clock = io.StringIO(), Clock()
    with Reporter(10_000, desc="train", unit="step", stream=stream, clock=clock, interval_s=1e9) as bar:
        for _ in range(10_000):
            clock.now += 1.0
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # 10%, 20%, ..., 100%
    first = LINE.match(lines[0])
    assert first is not None and first.groups()[:5] == ("train", "1000", "10000", "steps", "10")
    assert first.group(6) == "16m40s" and first.group(8) == "2h30m"  # 1,000 s done, 9,000 s to go
    assert lines[-1] == "train: 10000/10000 steps (100%), elapsed 2h46m"


def test_time_interval_adds_lines_between_tenths() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = Reporter(100, desc="eval", unit="batch", stream=stream, clock=clock, interval_s=30.0)
    for _ in range(5):  # 5 batches of 20 s: a line after each 30 s, none per tenth crossed yet
        clock.now += 20.0
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "eval: 2/100 batches (2%), elapsed 40s, ETA 32m40s",
        "eval: 4/100 batches (4%), elapsed 1m20s, ETA 32m00s",
        "eval: 5/100 batches (5%), elapsed 1m40s, ETA 31m40s",  # on close
    ]


def test_initial_work_is_counted_but_not_in_the_rate() -> None:
    """A resumed run at step 500 of 1,000: 100 steps in 100 s leave 400 steps, 400 s."""
    stream, clock = io.StringIO(), Clock()
    bar = Reporter(1000, desc="train", unit="step", initial=500, stream=stream, clock=clock, every=0.1)
    for _ in range(100):
        clock.now += 1.0
        bar.update(1)
    assert stream.getvalue().splitlines()[-1] == "train: 600/1000 steps (60%), elapsed 1m40s, ETA 6m40s"
    bar.close()


def test_every_zero_prints_each_update_and_no_eta_before_work() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = Reporter(3, desc="bench", unit="run", stream=stream, clock=clock, every=0.0)
    assert bar.line() == "bench: 0/3 runs (0%), elapsed 0s, ETA ?"
    bar.note("bench: vq at 8 bits, seed 0")
    clock.now = 72.0
    bar.update(1)
    bar.close()
    assert stream.getvalue().splitlines() == [
        "bench: vq at 8 bits, seed 0",
        "bench: 1/3 runs (33%), elapsed 1m12s, ETA 2m24s",
    ]


def test_nested_reporters_print_nothing_and_outer_ones_go_on() -> None:
    outer_stream, inner_stream = io.StringIO(), io.StringIO()
    with Reporter(2, desc="bench", unit="run", stream=outer_stream, every=0.0) as outer:
        with Reporter(50, desc="train", unit="step", stream=inner_stream) as inner:
            inner.note("not shown")
            for _ in range(50):
                inner.update(1)
        outer.update(1)
    assert inner_stream.getvalue() == ""
    assert outer_stream.getvalue().startswith("bench: 1/2 runs (50%)")
    with Reporter(1, desc="after", unit="run", stream=inner_stream) as again:  # nothing is left open
        again.update(1)
    assert inner_stream.getvalue().startswith("after: 1/1 runs")


def test_a_terminal_gets_a_tqdm_bar_and_no_plain_lines() -> None:
    pytest.importorskip("tqdm")
    stream = Terminal()
    bar = Reporter(10, desc="train", unit="step", stream=stream)
    assert bar.bar is not None
    for _ in range(10):
        bar.update(1)
    bar.close()
    text = stream.getvalue()
    assert "10/10" in text and "train" in text and "ETA" not in text  # tqdm's own format
    assert isinstance(progress(5, desc="x", unit="y", enabled=False), NoProgress)


def _lines(err: str, desc: str) -> list[re.Match[str]]:
    return [m for m in (LINE.match(line) for line in err.splitlines()) if m and m.group(1) == desc]


def test_train_eval_and_bench_report_progress_in_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal (pytest captures stderr): ``train`` prints a line per tenth of its steps, ``eval`` per
    tenth of its batches, ``bench`` one per run, each with counts and an ETA; a bench's runs print none."""
    run = tmp_path / "run"
    tiny = ["train.steps=20", "train.eval_every=20", "train.checkpoint_every=20", "train.tensorboard=false"]
    assert (
        main(
            [
                "train",
                str(ROOT / "configs" / "digits.yaml"),
                *tiny,
                "eval.batch_size=16",
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    train, evaluation = _lines(err, "train"), _lines(err, "eval")
    assert [m.group(2) for m in train] == [str(2 * k) for k in range(1, 11)]  # 2/20 ... 20/20
    assert all(m.group(8) for m in train[:-1]) and train[-1].group(7) is None  # an ETA until the end
    assert 2 <= len(evaluation) <= 12 and evaluation[-1].group(2) == evaluation[-1].group(3)
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        f"config: {ROOT / 'configs' / 'digits.yaml'}\n"
        "overrides: [train.steps=4, train.eval_every=4, train.checkpoint_every=4, eval.max_items=40]\n"
        "methods: [vq, fsq]\nbits: [4]\n"
    )
    assert main(["bench", str(bench), "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert [(m.group(2), m.group(3), m.group(4)) for m in _lines(err, "bench")] == [
        ("1", "3", "runs"),  # the ceiling (the model trained without its quantizer), then the two methods
        ("2", "3", "runs"),
        ("3", "3", "runs"),
    ]
    assert _lines(err, "bench")[0].group(8) is not None
    assert not _lines(err, "train") and not _lines(err, "eval")  # nested in the bench's reporter
    assert "bench: vq at 4 bits, seed 0" in err
    assert main(["bench", str(bench), "--out", str(tmp_path / "b")]) == 0  # finished: read back, no lines
    assert not _lines(capsys.readouterr().err, "bench")
