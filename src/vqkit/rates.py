"""Quantizer settings for a target rate: the keyword arguments that make a registered quantizer spend exactly
``bits`` bits per vector, so comparisons (``vqkit.demo``, ``vqkit bench``) run every method at equal rate.

Each class says how it reaches a rate in its own ``at_rate(dim, bits)`` (so a new quantizer is one file, and a
new preset of an existing class is covered): one codebook of ``2^R`` codes; residual / product VQ in two levels
or groups of ``ceil(R/2)`` and ``floor(R/2)`` bits; FSQ levels ``[4] * (R/2)``; LFQ ``R`` sign bits; residual
FSQ / LFQ in two stages of ``R/2`` bits; IVQ in ``R/4`` yin-yang levels of four lines; LooC as two sub-vectors
from one shared codebook of ``2^(R/2)`` codes. A method that cannot reach the rate gets a note saying why
instead of settings; the caller reports it.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any

import vqkit.quantizers  # noqa: F401  (registers the quantizers)
from vqkit.quantizers.codebook import CodebookOptions
from vqkit.quantizers.presets import PAPER_RECIPES
from vqkit.registry import create_quantizer, list_quantizers, quantizer_class


def accepts(cls: type, name: str) -> bool:
    """Whether ``cls`` takes keyword ``name``: in its signature, as a codebook option (``**codebook_options``),
    or through the ``**kwargs`` it hands to every stage (a class's ``stage_class``)."""
    for param in inspect.signature(cls).parameters.values():
        if param.kind is not inspect.Parameter.VAR_KEYWORD:
            if param.name == name:
                return True
        elif param.name == "codebook_options" and name in {f.name for f in fields(CodebookOptions)}:
            return True
    stage = getattr(cls, "stage_class", None)
    return stage is not None and accepts(stage, name)


def standalone(name: str) -> bool:
    """Whether the quantizer registered as ``name`` builds from ``dim`` alone (every other constructor argument
    has a default); not so for the compositions of given stages (``residual``, ``product``, ``grouped_residual``),
    which are registered so that they save as configs, but have no quantizer of their own to compare."""
    params = list(inspect.signature(quantizer_class(name)).parameters.values())
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        or p.name == "dim"
        for p in params
    )


def standalone_quantizers() -> list[str]:
    """The registered names that build from ``dim`` alone (``standalone``): what "every quantizer" means in
    ``vqkit bench`` (``methods: all``) and ``vqkit.demo``. The papers' recipes (``PAPER_RECIPES``) are left out:
    they are settings of classes already compared (the paper's rate, layout and weights, not a rate rule), run
    by name as fixed entries."""
    return [name for name in list_quantizers() if standalone(name) and name not in PAPER_RECIPES]


def rate_config(name: str, dim: int, bits: int) -> dict[str, Any] | None:
    """Keyword arguments that make the quantizer registered as ``name`` spend ``bits`` bits per vector
    (its class's ``at_rate``); ``None`` when it cannot."""
    at_rate = getattr(quantizer_class(name), "at_rate", None)
    return None if at_rate is None else at_rate(dim, bits)


def kwargs_at_rate(name: str, dim: int, bits: int, *, kmeans_init: bool = True) -> dict[str, Any] | str:
    """Validated keyword arguments (JSON) for ``create_quantizer(name, dim=dim, **kwargs)`` at ``bits`` bits
    per vector, with k-means init on the first batch where the class takes ``init``; or a note why not.

    A class whose ``at_rate`` settings fail to build raises: that is a bug in the class, not a skipped method.
    """
    cls = quantizer_class(name)
    kwargs = rate_config(name, dim, bits)
    if kwargs is None:
        return f"skipped {name!r}: no rule reaches {bits} bits at D={dim} for {cls.__name__}"
    if kmeans_init and accepts(cls, "init"):
        kwargs = {**kwargs, "init": "kmeans"}
    q = create_quantizer(name, dim=dim, **kwargs)
    if q.bits_per_vector != bits:
        return f"skipped {name!r}: its settings give {q.bits_per_vector:g} bits, not {bits}"
    return kwargs


def levels_for(
    model: Any,
    num_quantizers: int | None = None,
    kbps: float | None = None,
    *,
    names: tuple[str, str] = ("num_quantizers", "kbps"),
) -> int | None:
    """How many residual levels a tokenizer's codes keep: ``num_quantizers``, or for an audio model the most
    levels within ``kbps``, or ``None`` (all). ``names`` are what the errors call the two arguments (a CLI
    passes its flags)."""
    q = model.quantizer
    if num_quantizers is not None:
        return int(q.check_levels(num_quantizers, names[0]))
    if kbps is None:
        return None
    if not hasattr(model, "bitrate_kbps"):
        raise ValueError(
            f"{names[1]}: only audio models have a bitrate, this model is a {model.modality} model"
        )
    rates = [model.bitrate_kbps(num_quantizers=k) for k in range(1, q.num_levels + 1)]
    fits = [k for k, rate in enumerate(rates, start=1) if rate <= kbps + 1e-9]
    if not fits:
        raise ValueError(
            f"{names[1]}: expected at least {rates[0]:g} (one level of this model), got {kbps:g}"
        )
    return fits[-1]
