"""Quantizer state that stays float32 under ``.half()``, and the dtype a quantizer computes in.

``Float32State`` is the ``nn.Module`` every ``Quantizer`` derives from: a cast to a half type moves the module
but keeps its parameters and buffers float32 (distances and codebook updates need the precision, and a
model-wide ``.half()`` still works), ``.double()`` is honoured, and ``compute_dtype`` is found once and kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["Float32State"]

_HALF_TYPES = (torch.float16, torch.bfloat16)


class Float32State(nn.Module):
    """``nn.Module`` with float32 (or float64) state and a kept ``compute_dtype``."""

    def __init__(self) -> None:
        super().__init__()
        # After a state dict is loaded into this module and its children (``assign=True`` may bring float64).
        self.register_load_state_dict_post_hook(Float32State._forget_compute_dtype)

    @property
    def compute_dtype(self) -> torch.dtype:
        """float32, or float64 when the module was cast with ``.double()``; never a half type (see ``_apply``).

        Found once and kept (walking every parameter and buffer was a third of a small batch's forward): the
        kept value is dropped by ``_apply`` (``.to()``, ``.double()``, ``.cuda()``) and by assigning a tensor or
        module to the quantizer, and after a state dict is loaded into it. Casting only a submodule that is not
        itself a quantizer (``q.project_in.double()``) is not seen: cast the quantizer."""
        dtype: torch.dtype | None = self.__dict__.get("_compute_dtype")
        if dtype is None:
            tensor = next((t for t in (*self.parameters(), *self.buffers()) if t.is_floating_point()), None)
            dtype = torch.float64 if tensor is not None and tensor.dtype == torch.float64 else torch.float32
            self.__dict__["_compute_dtype"] = dtype
        return dtype

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (torch.Tensor, nn.Module)):
            self._forget_compute_dtype()
        super().__setattr__(name, value)

    def _forget_compute_dtype(self, *_hook_args: object) -> None:
        """Drop the kept ``compute_dtype`` (also the state-dict post-hook: ``(module, incompatible_keys)``)."""
        self.__dict__.pop("_compute_dtype", None)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Float32State:
        """``.half()`` / ``.to(torch.bfloat16)`` move the quantizer but keep its state in float32.

        Codebooks, EMA statistics and projections stay float32 so distances and updates keep their precision
        (and a model-wide ``.half()`` works); inputs of any dtype are accepted and outputs return in it.
        ``.double()`` is honoured: the quantizer then computes in float64.
        """
        super()._apply(fn, recurse)
        self._forget_compute_dtype()
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None and param.dtype in _HALF_TYPES:
                    param.data = param.data.float()
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.dtype in _HALF_TYPES:
                    module._buffers[name] = buffer.float()
        return self
