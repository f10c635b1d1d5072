"""The model registry: ``register_model`` (a class decorator), ``list_models``, ``build_model(config)``.

``build_model`` takes what ``Tokenizer.to_config`` returns; the registered classes live in ``vqkit.models``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from vqkit.models.base import Tokenizer

M = TypeVar("M", bound="type[Tokenizer]")


_MODELS: dict[str, type[Tokenizer]] = {}


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: register a ``Tokenizer`` subclass under ``name`` for ``build_model``."""

    def decorate(cls: M) -> M:
        if name in _MODELS and _MODELS[name] is not cls:
            warnings.warn(f"register_model: overwriting model {name!r}", stacklevel=2)
        _MODELS[name] = cls
        cls.registry_name = name
        return cls

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def model_class(name: str) -> type[Tokenizer]:
    if name not in _MODELS:
        raise ValueError(f"name: unknown model {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[name]


def build_model(config: Mapping[str, Any]) -> Tokenizer:
    """Build the model ``config["name"]`` with the other keys as constructor arguments.

    ``config`` is what ``Tokenizer.to_config`` returns, e.g. ``{"name": "image_vqvae", "in_channels": 1,
    "quantizer": {"name": "vq", "kwargs": {"codebook_size": 512}}}``. An unknown name, an unknown key or a
    missing required key is a ``ValueError`` that names it.
    """
    if not isinstance(config, Mapping) or "name" not in config:
        raise ValueError(f"config: expected a dict with a 'name' key, got {config!r}")
    cls = model_class(config["name"])
    params = {
        key: p
        for key, p in inspect.signature(cls.__init__).parameters.items()
        if key != "self" and p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    kwargs = {key: value for key, value in config.items() if key != "name"}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(
            f"config: unknown key {unknown[0]!r} for model {config['name']!r}; expected keys: {sorted(params)}"
        )
    missing = sorted(k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs)
    if missing:
        raise ValueError(f"config: missing required key {missing[0]!r} for model {config['name']!r}")
    return cls(**kwargs)
