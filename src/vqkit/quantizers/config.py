"""A quantizer's JSON config, read back from its constructor's signature (``Quantizer.to_config``).

The convention is scikit-learn's: every constructor parameter is stored on the instance under its own name (a
``**name`` parameter as a dict or an options dataclass under ``name``). Nothing is captured behind the reader's
back, and a class that forgets to store an argument gets an error that names it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def constructor_config(module: Any) -> dict[str, Any]:
    """``{"name": the class's own registry name, "kwargs": its constructor arguments as JSON values}``.

    Raises:
        TypeError: the class is not registered itself (a subclass does not inherit its parent's name), or an
            argument is not stored under its name, or is not a JSON value. Quantizer modules among the values
            (a composite's stages) are written as their own configs, tensors as nested lists.
    """
    cls = type(module)
    name = cls.__dict__.get("registry_name")
    if not name:
        raise TypeError(
            f"{cls.__name__} is not registered, so it has no config to save; decorate it with "
            f"@vqkit.register_quantizer('<name>')"
        )
    kwargs: dict[str, Any] = {}
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(f"{cls.__name__}.__init__ takes *{param.name}, which a config cannot hold")
        if not hasattr(module, param.name):
            raise TypeError(
                f"{cls.__name__}.__init__ takes {param.name!r} but does not store it as self.{param.name} "
                "(every constructor argument is stored under its own name; see Quantizer)"
            )
        value = getattr(module, param.name)
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(_keyword_values(param.name, value))
        else:
            kwargs[param.name] = value
    return {"name": name, "kwargs": _jsonable(cls.__name__, kwargs)}


def _jsonable(name: str, value: Any) -> Any:
    if callable(getattr(value, "to_config", None)):  # a stage of a composite: its own config, nested
        return value.to_config()
    if isinstance(value, torch.Tensor):  # factors given as a tensor (a composite's stage scales)
        return value.tolist()
    if isinstance(value, (tuple, list, nn.ModuleList)):
        return [_jsonable(name, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(name, v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{name}: config values must be JSON types, got {type(value).__name__}: {value!r}")


def _keyword_values(name: str, value: Any) -> dict[str, Any]:
    """The stored value of a ``**name`` parameter: a mapping, or a dataclass of options."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"**{name}: expected the attribute {name!r} to hold a dict, got {type(value).__name__}")
