"""Tensors that depend only on a few hashable arguments (shapes, a layout, a device), made once per arguments.

``cached_constant`` is ``functools.lru_cache`` with two rules every such cache in vqkit needs: the tensor is
made outside ``inference_mode`` (a tensor first asked for under ``inference_mode`` would otherwise be an
inference tensor, and every later training step that saves it for backward would fail), and while
``torch.compile`` traces, the function runs in the graph instead of handing the trace a cached tensor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def cached_constant(maxsize: int = 64) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a function of hashable arguments that returns tensors (or tuples holding them)."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def get(*args: object) -> T:
            if torch.compiler.is_compiling():
                return fn(*args)
            with torch.inference_mode(False):
                return cached(*args)

        return get

    return wrap
