"""Argument checks with messages that name the argument, what was expected and what was given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return str(value)


def check_range(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
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


def check_int_list(name: str, value: Any, *, minimum: int = 1) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name}: expected a non-empty list of integers >= {minimum}, got {value!r}")
    out: list[int] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"{name}: expected integers >= {minimum}, got {list(value)!r}")
        out.append(int(v))
    return out


def check_codes_in_range(flat_codes: torch.Tensor, alphabet_sizes: Sequence[int]) -> None:
    """``flat_codes`` ``[N, C]``: column ``j`` must lie in ``[0, alphabet_sizes[j])``; names the first bad column."""
    if not flat_codes.numel():
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
