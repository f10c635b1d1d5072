"""Argument checks with messages that name the argument, what was expected and what was given.

Every integer check goes through ``is_int`` (``bool`` is an ``int`` subclass, and ``True`` must not pass for a
count) and every number check through ``is_number``, so each rule is written once.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import torch


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool`` (NaN and infinities included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    return "" if maximum is None else f" <= {maximum}"


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    choices: Collection[int] | None = None,
    expected: str | None = None,
) -> int:
    """``value`` if it is an integer in ``[minimum, maximum]`` (either bound optional) and among ``choices``.

    The message says ``expected <expected>``; by default ``an integer`` with its bounds, or ``one of [...]``.
    """
    ok = is_int(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    ok = ok and (choices is None or value in choices)
    if not ok:
        if expected is None:
            expected = f"one of {list(choices)}" if choices is not None else "an integer"
            expected += _bounds(minimum, maximum) if choices is None else ""
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    return check_int(name, value, minimum=1, expected="a positive integer")


def check_nonnegative_int(name: str, value: Any) -> int:
    return check_int(name, value, minimum=0)


def check_nonnegative_number(name: str, value: Any) -> float:
    """``float(value)`` for a finite number >= 0 (a loss weight, a bit count, a rate)."""
    if not (is_number(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected a bool, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return str(value)


def check_range(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    ok = is_number(value)
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name}: expected a number in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


def check_divisible(name: str, value: int, divisor_name: str, divisor: int) -> None:
    if value % divisor != 0:
        raise ValueError(
            f"{name}: expected a multiple of {divisor_name}={divisor}, got {name}={value} "
            f"({value} % {divisor} = {value % divisor})"
        )


def check_int_list(name: str, value: Any, *, minimum: int = 1, scalar: bool = True) -> list[int]:
    """A non-empty list or tuple of integers >= ``minimum``; a bare integer is a list of one when ``scalar``."""
    if scalar and is_int(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name}: expected a non-empty list of integers >= {minimum}, got {value!r}")
    if not all(is_int(v) and v >= minimum for v in value):
        raise ValueError(f"{name}: expected integers >= {minimum}, got {list(value)!r}")
    return [int(v) for v in value]


def check_codes_in_range(flat_codes: torch.Tensor, alphabet_sizes: Sequence[int]) -> None:
    """``flat_codes`` ``[N, C]``: column ``j`` must lie in ``[0, alphabet_sizes[j])``; names the first bad column."""
    if not flat_codes.numel() or torch.compiler.is_compiling():  # the check syncs: eager mode only
        return
    sizes = torch.tensor(list(alphabet_sizes), device=flat_codes.device)
    bad = ((flat_codes < 0) | (flat_codes >= sizes)).any(0)
    if bool(bad.any()):
        j = int(bad.nonzero()[0])
        column = flat_codes[:, j]
        raise ValueError(
            f"codes: code {j} must lie in [0, {alphabet_sizes[j]}), "
            f"got values in [{int(column.min())}, {int(column.max())}]"
        )
