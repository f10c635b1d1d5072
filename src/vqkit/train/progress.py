"""Progress of the long commands (``vqkit train``, ``eval``, ``bench``): a tqdm bar or plain lines, with an ETA.

On a terminal (stderr is a TTY and tqdm, the ``train`` extra, is installed) a reporter is a tqdm bar. Anywhere
else (a log file, CI, ``make reproduce > log``) it prints plain lines to stderr::

    bench: 3/23 runs (13%), elapsed 1m12s, ETA 7m50s

one each time the count crosses another ``every`` of the total (default 10%) or ``interval_s`` seconds after
the previous line, and a last one on ``close``: at most ``1 / every + 2`` lines plus one per interval, whatever
the number of updates. The ETA is the remaining count at the mean rate so far, where only counted work enters
the rate (``skip`` advances the count without it: the finished runs a resumed bench reads back).

Reporters nest: one opened while another is open (a run's training bar inside the bench's bar over runs, an
evaluation inside either) is a second tqdm line that vanishes when it closes, and prints no plain lines, so a
log holds the outer reporter's lines only. The open reporters are this module's one piece of state, because
the terminal they share is one too (tqdm keeps the same list for its bars).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

EVERY = 0.1
"""A plain line each time the count crosses another tenth of the total."""
INTERVAL_S = 60.0
"""...or this many seconds after the previous line."""

_OPEN: list[Reporter] = []


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    """The progress bar where there is none (other ranks, ``train.progress=false``)."""

    def update(self, n: int = 1) -> None:
        pass

    def skip(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def duration(seconds: float) -> str:
    """``"45s"``, ``"7m50s"``, ``"2h03m"``: a duration as a log line reads it."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Reporter:
    """Progress over ``total`` units of work named ``unit``, from ``initial`` (a resumed run).

    Args:
        total: the count at the end (> 0; 0 reports nothing).
        desc: the line's prefix (``"bench"``, ``"train"``, ``"eval"``).
        unit: what is counted, singular (``"run"``, ``"step"``, ``"batch"``); lines say ``units``.
        initial: the count already done when it starts (not part of the rate).
        every, interval_s: when plain lines are printed (see the module docstring); ``every=0``: each update.
        stream: where lines go (default ``sys.stderr``); a TTY gets a tqdm bar instead.
        clock: seconds, monotonic (the tests pass a fake one).
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str,
        initial: int = 0,
        every: float = EVERY,
        interval_s: float = INTERVAL_S,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done = self.uncounted = int(initial)
        self.every, self.interval_s, self.clock = every, interval_s, clock
        self.stream = stream if stream is not None else sys.stderr
        self.started = self.last_time = clock()
        self.last_done = self.done
        self.nested = bool(_OPEN)
        self.bar: Any = _tqdm_bar(self) if _is_terminal(self.stream) else None
        _OPEN.append(self)

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self._line_due():
            self._print()

    def skip(self, n: int = 1) -> None:
        """``n`` units that were already done (read back, not worked): counted, but left out of the rate."""
        self.uncounted += n
        self.update(n)

    def note(self, text: str) -> None:
        """A line about what comes next (``"bench: vq at 8 bits, seed 0"``), above the bar on a terminal."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        elif not self.nested:
            print(text, file=self.stream, flush=True)

    def line(self) -> str:
        """``"bench: 3/23 runs (13%), elapsed 1m12s, ETA 7m50s"`` (no ETA before the first counted unit)."""
        elapsed = self.clock() - self.started
        percent = 100 * self.done / self.total if self.total else 100.0
        units = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")
        text = f"{self.desc}: {self.done}/{self.total} {units} ({percent:.0f}%), elapsed {duration(elapsed)}"
        worked = self.done - self.uncounted
        if self.done >= self.total:
            return text
        if worked > 0:
            return text + f", ETA {duration(elapsed / worked * (self.total - self.done))}"
        return text + ", ETA ?"

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self in _OPEN:
            _OPEN.remove(self)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.done != self.last_done:
            self._print()

    def _line_due(self) -> bool:
        if self.nested or self.total <= 0:
            return False
        step = max(1, round(self.every * self.total))
        crossed = self.done // step > self.last_done // step or self.done >= self.total
        return crossed or self.clock() - self.last_time >= self.interval_s

    def _print(self) -> None:
        if self.nested:
            return
        self.last_done, self.last_time = self.done, self.clock()
        print(self.line(), file=self.stream, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _tqdm_bar(reporter: Reporter) -> Any:
    """A tqdm bar for ``reporter`` (nested ones vanish on close), or None without tqdm (plain lines then)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=reporter.total,
        initial=reporter.done,
        desc=reporter.desc,
        unit=reporter.unit,
        leave=not reporter.nested,
        file=reporter.stream,
        dynamic_ncols=True,
    )


def progress(
    total: int, *, desc: str, unit: str, initial: int = 0, enabled: bool = True, every: float = EVERY
) -> Reporter | NoProgress:
    """A ``Reporter`` (see its arguments), or ``NoProgress`` when not ``enabled``."""
    if not enabled:
        return NoProgress()
    return Reporter(total, desc=desc, unit=unit, initial=initial, every=every)
