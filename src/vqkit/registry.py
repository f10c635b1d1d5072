"""The quantizer registry, the one factory: ``create_quantizer(name, **kwargs)``, ``quantizer_from_config``,
``list_quantizers()``.

A registered name maps to a class, or to a preset (a class plus default keyword arguments, e.g. ``ema_vq`` is
``VQ`` with ``update="ema"``). Keyword arguments given to ``create_quantizer`` override a preset's defaults.

``@register_quantizer("name")`` records the name on the class itself (``registry_name`` in the class's own
``__dict__``), so ``Quantizer.to_config`` can name it without importing this module, and an unregistered
subclass never borrows its parent's name. This module imports no quantizer: the quantizer modules register
themselves when ``vqkit.quantizers`` is imported.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from vqkit.quantizers.base import Quantizer

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class _Entry:
    cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, _Entry] = {}


def register_quantizer(name: str, **defaults: Any) -> Callable[[T], T]:
    """Class decorator: register ``cls`` under ``name`` (with optional preset defaults).

    Without defaults ``name`` becomes the class's own ``registry_name``, the name ``to_config`` writes."""

    def decorate(cls: T) -> T:
        _add(name, cls, defaults)
        if not defaults:
            cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def register_preset(name: str, cls: type, description: str = "", **defaults: Any) -> None:
    """Register ``name`` as ``cls`` with ``defaults`` (a named configuration of an existing quantizer)."""
    _add(name, cls, defaults, description)


def unregister_quantizer(name: str) -> None:
    """Remove ``name`` (tests and plugins that register temporarily); the class keeps working unregistered."""
    _entry(name)  # a KeyError that lists the registered names
    entry = _REGISTRY.pop(name)
    if not entry.defaults and entry.cls.__dict__.get("registry_name") == name:
        delattr(entry.cls, "registry_name")


def _add(name: str, cls: type, defaults: dict[str, Any], description: str = "") -> None:
    if name in _REGISTRY and _REGISTRY[name].cls is not cls:
        warnings.warn(f"register_quantizer: overwriting quantizer {name!r}", stacklevel=3)
    _REGISTRY[name] = _Entry(cls, dict(defaults), description)


def list_quantizers() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def quantizer_class(name: str) -> type[Quantizer]:
    """The class registered as ``name`` (a preset's class)."""
    cls: type[Quantizer] = _entry(name).cls
    return cls


def preset_defaults(name: str) -> dict[str, Any]:
    return dict(_entry(name).defaults)


def preset_description(name: str) -> str:
    return _entry(name).description


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise KeyError(f"name: unknown quantizer {name!r}; registered: {', '.join(list_quantizers())}")
    return _REGISTRY[name]


def create_quantizer(name: str, **kwargs: Any) -> Quantizer:
    """Build the quantizer registered as ``name``; ``kwargs`` override a preset's defaults."""
    entry = _entry(name)
    quantizer: Quantizer = entry.cls(**{**entry.defaults, **kwargs})
    return quantizer


def quantizer_from_config(config: Mapping[str, Any]) -> Quantizer:
    """Rebuild a quantizer from ``Quantizer.to_config()``'s ``{"name": ..., "kwargs": {...}}``."""
    if not isinstance(config, Mapping) or not isinstance(config.get("name"), str):
        raise ValueError(f"config: expected a dict with 'name' and 'kwargs', got {config!r}")
    kwargs = config.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"config.kwargs: expected a dict of constructor arguments, got {kwargs!r}")
    return create_quantizer(config["name"], **dict(kwargs))
