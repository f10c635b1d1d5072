"""vqkit._validate: the shared argument checks, their messages, and ``bool`` never passing for an integer."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from vqkit._validate import (
    check_bool,
    check_int,
    check_int_list,
    check_nonnegative_int,
    check_nonnegative_number,
    check_positive_int,
    is_int,
    is_number,
)


def test_is_int_and_is_number_reject_bools() -> None:
    assert is_int(3) and not is_int(True) and not is_int(3.0) and not is_int("3")
    assert is_number(3) and is_number(2.5) and is_number(math.inf) and not is_number(False)


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({}, True, "n: expected an integer, got True"),
        ({}, "1", "n: expected an integer, got '1'"),
        ({"minimum": 0}, -1, "n: expected an integer >= 0, got -1"),
        ({"maximum": 9}, 10, "n: expected an integer <= 9, got 10"),
        ({"minimum": 1, "maximum": 4096}, 0, "n: expected an integer in [1, 4096], got 0"),
        ({"choices": (2, 4)}, 3, "n: expected one of [2, 4], got 3"),
        ({"choices": (2, 4)}, 4.0, "n: expected one of [2, 4], got 4.0"),
        ({"choices": (1, 3), "expected": "1 or 3"}, 2, "n: expected 1 or 3, got 2"),
    ],
)
def test_check_int_names_the_argument_the_rule_and_the_value(
    kwargs: dict[str, Any], value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_int("n", value, **kwargs)


def test_check_int_returns_the_value() -> None:
    assert check_int("n", 4, choices=(2, 4)) == 4
    assert check_int("n", 0, minimum=0, maximum=0) == 0
    assert check_positive_int("n", 7) == 7 and check_nonnegative_int("n", 0) == 0


@pytest.mark.parametrize("value", [0, -2, 1.0, True, None])
def test_check_positive_int(value: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(f"n: expected a positive integer, got {value!r}")):
        check_positive_int("n", value)


@pytest.mark.parametrize("value", [-1e-9, math.nan, math.inf, True, "1"])
def test_check_nonnegative_number(value: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(f"w: expected a finite number >= 0, got {value!r}")):
        check_nonnegative_number("w", value)
    assert check_nonnegative_number("w", 0) == 0.0 and isinstance(check_nonnegative_number("w", 2), float)


def test_check_bool() -> None:
    assert check_bool("flag", False) is False
    with pytest.raises(ValueError, match="flag: expected a bool, got 1"):
        check_bool("flag", 1)


def test_check_int_list() -> None:
    assert check_int_list("levels", 5, minimum=2) == [5]
    assert check_int_list("levels", (8, 5), minimum=2) == [8, 5]
    with pytest.raises(
        ValueError, match=re.escape("ratios: expected a non-empty list of integers >= 1, got 4")
    ):
        check_int_list("ratios", 4, scalar=False)
    with pytest.raises(ValueError, match=re.escape("ratios: expected integers >= 1, got [2, True]")):
        check_int_list("ratios", [2, True])
    with pytest.raises(
        ValueError, match=re.escape("ratios: expected a non-empty list of integers >= 1, got []")
    ):
        check_int_list("ratios", [])
