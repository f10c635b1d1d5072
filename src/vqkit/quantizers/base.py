"""The quantizer contract shared by every vqkit quantizer.

Subclasses work on flat float32 vectors ``[N, D]`` and implement four things:

* ``alphabet_sizes``: the size of each code's alphabet (one entry per code of a vector);
* ``_quantize(z)``: the training/eval forward on ``[N, D]`` returning a flat ``QuantizerOutput`` whose
  ``quantized`` **value equals** ``_decode(codes)`` exactly (use ``straight_through``);
* ``_encode(z)``: codes ``[N, C]`` without side effects;
* ``_decode(codes)``: ``[N, C] -> [N, D]`` from the effective codebook.

The base class does everything else once: layout conversion, input validation, float32 compute with autocast
off (outputs return in the input dtype), batch usage metrics, rate accounting, config capture, save/load.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from vqkit._validate import check_choice, check_codes_in_range, check_positive_int
from vqkit.distributed import ProcessGroup
from vqkit.functional.stats import batch_usage
from vqkit.types import LAYOUTS, Layout, QuantizerOutput

_HALF_TYPES = (torch.float16, torch.bfloat16)

CONFIG_FORMAT = "vqkit.quantizer"
CONFIG_VERSION = 1

Q = TypeVar("Q", bound="Quantizer")


def straight_through(hard: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Value of ``hard``, gradient of ``surrogate``: ``hard.detach() + (surrogate - surrogate.detach())``.

    Unlike ``surrogate + (hard - surrogate).detach()`` the value is *exactly* ``hard`` (``s - s`` is exactly 0
    for finite ``s``), which is what makes ``decode(encode(x)) == forward(x).quantized`` hold bit for bit.
    """
    return hard.detach() + (surrogate - surrogate.detach())


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config values must be JSON types, got {type(value).__name__}: {value!r}")


def _all_finite(x: torch.Tensor) -> bool:
    """One reduction pass: ``aminmax`` propagates NaN and an infinity is an extreme (16x faster on CPU than
    ``isfinite(x).all()``, which materializes a mask; still one device sync)."""
    return bool(torch.isfinite(torch.stack(torch.aminmax(x))).all())


@contextmanager
def _fp32_compute(device: torch.device) -> Iterator[None]:
    """Disable autocast for the enclosed code (distances and codebook updates must run in float32)."""
    try:
        ctx = torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        yield
        return
    with ctx:
        yield


class Quantizer(nn.Module, ABC):
    """Base class of every quantizer.

    Args:
        dim: D, the size of each input vector.
        layout: ``"channels_last"`` for ``[..., D]`` input, ``"channels_first"`` for ``[B, D, *spatial]``
            (``[B, D, T]``, ``[B, D, H, W]``).
        allow_nonfinite: skip the NaN/Inf input check (it costs one device sync per call).

    Attributes:
        process_group: the group codebook statistics are all-reduced over; ``None`` is the default group,
            looked up at each call. Set it with ``set_process_group``.
    """

    registry_name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def capture(self: Quantizer, *args: Any, **kw: Any) -> None:
            # Only the outermost constructor records the config (a subclass calling super().__init__ must not
            # overwrite its own arguments with its parent's).
            if "_config_kwargs" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop("self")
                for name, param in signature.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(arguments.pop(name))
                try:
                    config: Any = _jsonable(arguments)
                except TypeError as err:  # built from modules (e.g. a composite of given stages)
                    config = str(err)
                object.__setattr__(self, "_config_kwargs", config)
            init(self, *args, **kw)

        cls.__init__ = capture  # type: ignore[method-assign]

    def __init__(self, dim: int, *, layout: Layout = "channels_last", allow_nonfinite: bool = False) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.layout: Layout = check_choice("layout", layout, LAYOUTS)  # type: ignore[assignment]
        self.allow_nonfinite = bool(allow_nonfinite)
        self.process_group: ProcessGroup | None = None

    # ------------------------------------------------------------------ subclass interface
    @property
    @abstractmethod
    def alphabet_sizes(self) -> tuple[int, ...]:
        """Size of each code's alphabet, one entry per code of a vector."""

    @abstractmethod
    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """``[N, D]`` float32 -> flat output (codes ``[N, C]``); may update codebook state when training."""

    @abstractmethod
    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` float32 -> codes ``[N, C]`` int64, without side effects."""

    @abstractmethod
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` int64 -> ``[N, D]`` float32 from the effective codebook."""

    def init_codebook(self, vectors: torch.Tensor) -> None:
        """Initialize the codebook(s) by k-means on ``vectors`` ``[N, D]`` (e.g. a pretrained encoder's outputs:
        the pretrain-then-finetune recipe). Quantizers without a learned codebook raise ``TypeError``."""
        raise TypeError(f"{type(self).__name__} has no codebook to initialize from data")

    @property
    def loss_weights(self) -> dict[str, float]:
        """Configured weight of each loss name (the terms themselves are returned unweighted)."""
        return {}

    @property
    def num_codebook_parameters(self) -> int:
        """Number of stored scalars that define the codebook (learned or frozen), projections included."""
        return 0

    # ------------------------------------------------------------------ rate accounting
    @property
    def codes_per_vector(self) -> int:
        return len(self.alphabet_sizes)

    @property
    def bits_per_vector(self) -> float:
        """Nominal rate: the sum over codes of log2 of each code's alphabet size."""
        return float(sum(math.log2(k) for k in self.alphabet_sizes))

    @property
    def codebook_size(self) -> str:
        """The codebook size as the papers write it: codes per vector × alphabet, e.g. ``"1×4096"``, ``"4×64"``
        (``"64+128"`` when the alphabets differ)."""
        sizes = self.alphabet_sizes
        if len(set(sizes)) == 1:
            return f"{len(sizes)}×{sizes[0]}"
        return "+".join(str(s) for s in sizes)

    # ------------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """Quantize ``x`` (``[..., D]`` or ``[B, D, *S]`` by ``layout``). See ``QuantizerOutput``."""
        z, lead = self._flatten(x, "x")
        with _fp32_compute(z.device):
            flat = self._quantize(z.to(self.compute_dtype))
        return self._output(flat, x.dtype, lead)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of ``x``: ``[..., C]`` int64 (``[B, *S, C]`` for channels-first input). No state changes."""
        z, lead = self._flatten(x, "x")
        with _fp32_compute(z.device):
            codes = self._encode(z.to(self.compute_dtype))
        return codes.reshape(*lead, self.codes_per_vector)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Vectors for ``codes`` ``[..., C]``: ``[..., D]`` (``[B, D, *S]`` for channels-first), float32."""
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise TypeError(f"codes: expected an integer tensor, got {got}")
        c = self.codes_per_vector
        if codes.dim() < 1 or codes.shape[-1] != c:
            raise ValueError(
                f"codes: expected shape [..., {c}] (codes_per_vector={c}), got {tuple(codes.shape)}"
            )
        flat = codes.reshape(-1, c).long()
        check_codes_in_range(flat, self.alphabet_sizes)
        with _fp32_compute(flat.device):
            out = self._decode(flat)
        return self._unflatten(out, codes.shape[:-1])

    def set_process_group(self, group: ProcessGroup | None) -> None:
        """Sync codebook statistics over ``group`` (``None``: the default group, looked up at call time)."""
        for module in self.modules():
            if isinstance(module, Quantizer) or hasattr(module, "process_group"):
                setattr(module, "process_group", group)  # noqa: B010  (typed as Module attribute)

    @property
    def compute_dtype(self) -> torch.dtype:
        """float32, or float64 when the module was cast with ``.double()``; never a half type (see ``_apply``)."""
        for tensor in self._floating_tensors():
            return torch.float64 if tensor.dtype == torch.float64 else torch.float32
        return torch.float32

    def _floating_tensors(self) -> Iterator[torch.Tensor]:
        for tensor in (*self.parameters(), *self.buffers()):
            if tensor.is_floating_point():
                yield tensor

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Quantizer:
        """``.half()`` / ``.to(torch.bfloat16)`` move the quantizer but keep its state in float32.

        Codebooks, EMA statistics and projections stay float32 so distances and updates keep their precision
        (and a model-wide ``.half()`` works); inputs of any dtype are accepted and outputs return in it.
        ``.double()`` is honoured: the quantizer then computes in float64.
        """
        super()._apply(fn, recurse)
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None and param.dtype in _HALF_TYPES:
                    param.data = param.data.float()
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.dtype in _HALF_TYPES:
                    module._buffers[name] = buffer.float()
        return self

    # ------------------------------------------------------------------ config and persistence
    def to_config(self) -> dict[str, Any]:
        """``{"name": registry name, "kwargs": constructor arguments}``; ``from_config`` rebuilds it."""
        kwargs = self.__dict__["_config_kwargs"]
        if isinstance(kwargs, str):
            raise TypeError(
                f"{type(self).__name__} has no JSON config ({kwargs}); build it from the registry"
            )
        return {"name": self.registry_name or type(self).__name__, "kwargs": dict(kwargs)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Quantizer:
        from vqkit.registry import create_quantizer

        if not isinstance(config, dict) or "name" not in config:
            raise ValueError(f"config: expected a dict with 'name' and 'kwargs', got {config!r}")
        return create_quantizer(config["name"], **dict(config.get("kwargs", {})))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path/`` with ``config.json`` and ``weights.safetensors``, atomically (no pickle)."""
        from vqkit.io import save_quantizer

        return save_quantizer(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Quantizer:
        from vqkit.io import load_quantizer

        return load_quantizer(path, map_location=map_location)

    # ------------------------------------------------------------------ helpers
    def _flatten(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Size]:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
        shape = tuple(x.shape)
        if self.layout == "channels_first":
            if x.dim() < 2:
                raise ValueError(f"{name}: layout='channels_first' expects [B, D, *spatial], got {shape}")
            x = x.movedim(1, -1)
        if x.dim() < 1 or x.shape[-1] != self.dim:
            axis = "dim 1" if self.layout == "channels_first" else "the last dim"
            raise ValueError(
                f"{name}: expected size dim={self.dim} on {axis} (layout={self.layout!r}), got shape {shape}"
            )
        if not self.allow_nonfinite and x.numel() and not _all_finite(x):
            raise ValueError(f"{name}: contains NaN or Inf (pass allow_nonfinite=True to skip this check)")
        lead = x.shape[:-1]
        return x.reshape(-1, self.dim), lead

    def _output(self, flat: QuantizerOutput, dtype: torch.dtype, lead: torch.Size) -> QuantizerOutput:
        """The public result from a flat one: input dtype and shape, usage metrics, loss weights."""
        metrics = dict(self._usage_metrics(flat.codes))
        metrics.update(flat.metrics)
        return QuantizerOutput(
            quantized=self._unflatten(flat.quantized.to(dtype), lead),
            codes=flat.codes.reshape(*lead, self.codes_per_vector),
            losses=flat.losses,
            metrics=metrics,
            loss_weights=self.loss_weights,
        )

    def _unflatten(self, flat: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        out = flat.reshape(*lead, self.dim)
        return out.movedim(-1, 1) if self.layout == "channels_first" else out

    def _usage_metrics(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        utils, perps = [], []
        for j, size in enumerate(self.alphabet_sizes):
            u, p = batch_usage(codes[:, j], size)
            utils.append(u)
            perps.append(p)
        metrics = {"utilization": torch.stack(utils).mean(), "perplexity": torch.stack(perps).mean()}
        if len(utils) > 1:
            for j, (u, p) in enumerate(zip(utils, perps, strict=True)):
                metrics[f"utilization/{j}"] = u
                metrics[f"perplexity/{j}"] = p
        return metrics


class SingleCodebookQuantizer(Quantizer):
    """A quantizer with one code per vector from ``num_codes`` codes and the VQ-VAE loss pair
    (``codebook`` weight 1, ``commitment`` weight ``beta``). Subclasses set ``num_codes`` and ``beta``."""

    num_codes: int
    beta: float

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return (self.num_codes,)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.beta, "codebook": 1.0}


def load_config_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"path: cannot read quantizer config {str(path)!r}: {err}") from err
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise ValueError(
            f"path: {str(path)!r} is not a vqkit quantizer config (format={CONFIG_FORMAT!r} expected)"
        )
    return config


QuantizerFactory = Callable[..., Quantizer]
