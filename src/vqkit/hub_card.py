"""The model card (``README.md``) of a hub-style folder, generated from ``TEMPLATE`` with the module's facts.

The YAML front matter is what the Hugging Face hub reads (``huggingface_hub.ModelCard.load`` parses it):
``library_name: vqkit``, ``tags`` (vqkit, the kind, the registry names, a tokenizer's modality),
``datasets`` and ``license`` when given. The body gives the facts read from the module: registry name and
class, codebook (as the papers write it, ``"4×1024"``), codes and bits per vector, and for audio tokenizers
the sample rate, frames and bits per second; then the training data and the held-out metrics when the caller
knows them (``model_card_kwargs`` of ``save_pretrained``; a saved module does not record them itself).

Core: the module is read by duck typing (``codebook_label``, ``bits_per_vector``, ``frame_rate()``...), so
nothing here imports a quantizer or a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any

from torch import nn

from vqkit._validate import is_number
from vqkit._version import __version__

CARD_KEYS = ("datasets", "metrics", "split", "license", "description", "repo_id", "tags")
"""What ``model_card_kwargs`` may give."""

TEMPLATE = Template(
    """---
$front_matter
---

# $title
$description
A vqkit $kind, saved by `save_pretrained` (vqkit $version). Load it with vqkit (a hub repo id also needs
`pip install 'vqkit[hub]'`):

```python
import vqkit

$variable = $loader.from_pretrained("$repo_id")
```

## Facts

| | |
|---|---|
$facts

## Training data

$training

## Held-out metrics

$metrics

## Files

* `config.json`: the registry name and every constructor argument (JSON);
* `model.safetensors`: the weights (safetensors: no pickle, nothing executed on load);
* `README.md`: this card.
"""
)


@dataclass(frozen=True)
class CardInfo:
    """What the saver knows beyond the module (``model_card_kwargs``); every field is optional.

    Attributes:
        datasets: the training data (hub dataset ids or vqkit dataset names); front matter ``datasets``.
        metrics: held-out metrics, name -> value (e.g. ``vqkit eval``'s ``{"psnr": 27.1, "mse": 0.002}``).
        split: the split the metrics are of (``"test"``).
        license: an SPDX-style id for the front matter (``"mit"``, ``"apache-2.0"``).
        description: a paragraph under the title.
        repo_id: the hub repo the folder is for, used in the card's loading example.
        tags: extra tags.
    """

    datasets: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    split: str | None = None
    license: str | None = None
    description: str | None = None
    repo_id: str | None = None
    tags: tuple[str, ...] = ()


def card_info(kwargs: Mapping[str, Any] | None) -> CardInfo:
    """``model_card_kwargs`` checked: unknown keys and wrong types raise a ``ValueError`` naming them."""
    if kwargs is None:
        return CardInfo()
    if not isinstance(kwargs, Mapping):
        raise ValueError(
            f"model_card_kwargs: expected a dict with keys from {list(CARD_KEYS)}, got {kwargs!r}"
        )
    unknown = sorted(set(kwargs) - set(CARD_KEYS))
    if unknown:
        raise ValueError(
            f"model_card_kwargs: unknown key {unknown[0]!r}; expected keys from {list(CARD_KEYS)}"
        )
    metrics = kwargs.get("metrics") or {}
    if not isinstance(metrics, Mapping) or not all(
        isinstance(k, str) and is_number(v) and math.isfinite(v) for k, v in metrics.items()
    ):
        raise ValueError(
            f"model_card_kwargs.metrics: expected a dict of name -> finite number, got {metrics!r}"
        )
    texts = {key: _text(key, kwargs.get(key)) for key in ("split", "license", "description", "repo_id")}
    return CardInfo(
        datasets=_texts("datasets", kwargs.get("datasets")),
        metrics={k: float(v) for k, v in metrics.items()},
        tags=_texts("tags", kwargs.get("tags")),
        **texts,
    )


def render_card(module: nn.Module, kind: str, config: Mapping[str, Any], info: CardInfo) -> str:
    """The card of ``module`` (a ``kind`` of ``"quantizer"`` or ``"tokenizer"``) saved with the flat
    ``config`` (the ``config.json`` payload: ``"name"`` and the constructor arguments)."""
    name = str(config.get("name"))
    if kind == "tokenizer":
        spec = config.get("quantizer")
        qname = str(spec.get("name")) if isinstance(spec, Mapping) else "?"
        facts, tags, title = _tokenizer_facts(module, name, qname)
        variable = "tokenizer"
    else:
        facts, tags, title = _quantizer_facts(module, name), [name], _quantizer_title(module, name)
        variable = "quantizer"
    front: list[tuple[str, str | list[str] | None]] = [("library_name", "vqkit"), ("license", info.license)]
    front += [("tags", _unique(["vqkit", "vector-quantization", kind, *tags, *info.tags]))]
    front += [("datasets", list(info.datasets) or None)]
    return TEMPLATE.substitute(
        front_matter=_yaml(front),
        title=title,
        description=f"\n{info.description}\n" if info.description else "",
        kind=kind,
        version=__version__,
        variable=variable,
        loader=f"vqkit.{'Tokenizer' if kind == 'tokenizer' else 'Quantizer'}",
        repo_id=info.repo_id or "path/to/this-folder",
        facts="\n".join(f"| {key} | {value} |" for key, value in facts),
        training=", ".join(f"`{d}`" for d in info.datasets) if info.datasets else "Not recorded.",
        metrics=_metrics_table(info),
    )


def _quantizer_title(q: Any, name: str) -> str:
    return f"`{name}` quantizer: {q.codebook_label} codebook, {q.bits_per_vector:g} bits per vector"


def _quantizer_facts(q: Any, name: str, prefix: str = "") -> list[tuple[str, str]]:
    facts = [
        (f"{prefix}registry name", f"`{name}`"),
        (f"{prefix}class", f"`{type(q).__name__}` (`{type(q).__module__}`)"),
        (f"{prefix}input dimension", str(q.dim)),
        (f"{prefix}codebook", str(q.codebook_label)),
        (f"{prefix}codes per vector", str(q.codes_per_vector)),
        (f"{prefix}bits per vector", f"{q.bits_per_vector:g}"),
    ]
    if q.num_levels > 1:
        facts.append((f"{prefix}residual levels", str(q.num_levels)))
    facts.append((f"{prefix}codebook parameters", str(q.num_codebook_parameters)))
    return facts


def _tokenizer_facts(model: Any, name: str, qname: str) -> tuple[list[tuple[str, str]], list[str], str]:
    """``(facts, tags, title)`` of a tokenizer; audio models add their rates per second."""
    q = model.quantizer
    facts = [
        ("model", f"`{name}` (`{type(model).__name__}`)"),
        ("modality", str(model.modality)),
        ("latent dimension", str(model.latent_dim)),
        *_quantizer_facts(q, qname, prefix="quantizer "),
        ("parameters", str(sum(p.numel() for p in model.parameters()))),
    ]
    title = f"`{name}` {model.modality} tokenizer: `{qname}` quantizer, {q.codebook_label} codebook"
    frame_rate = getattr(model, "frame_rate", None)
    sample_rate = getattr(model, "sample_rate", None)
    if callable(frame_rate) and is_number(sample_rate):
        frames = float(frame_rate())
        bits = frames * q.bits_per_vector
        facts += [
            ("sample rate", f"{sample_rate:g} Hz"),
            ("frames per second", f"{frames:g}"),
            ("codes per second", f"{frames * q.codes_per_vector:g}"),
            ("bits per second", f"{bits:g} ({bits / 1000:g} kbps)"),
        ]
        if q.num_levels > 1:  # the rates of the first k levels (encode(x, num_quantizers=k))
            levels = [f"{frames * q.bits_per_vector_at(k):g}" for k in range(1, q.num_levels + 1)]
            facts.append(("bits per second of the first 1, 2, ... levels", ", ".join(levels)))
        title += f", {bits / 1000:g} kbps at {sample_rate:g} Hz"
    return facts, [name, qname, str(model.modality)], title


def _metrics_table(info: CardInfo) -> str:
    if not info.metrics:
        return "Not recorded."
    split = f" on the `{info.split}` split" if info.split else ""
    rows = [f"| {key} | {value:.4g} |" for key, value in sorted(info.metrics.items())]
    return "\n".join([f"Measured{split}:", "", "| metric | value |", "|---|---|", *rows])


def _yaml(items: Sequence[tuple[str, str | list[str] | None]]) -> str:
    """YAML of the given keys (``None`` left out); strings written as JSON strings, which YAML reads as they
    are (no value can turn into a number, a boolean or a new key)."""
    lines = []
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, list):
            lines += [f"{key}:", *(f"- {json.dumps(v)}" for v in value)]
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines)


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _text(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"model_card_kwargs.{key}: expected a non-empty string, got {value!r}")
    return value


def _texts(key: str, value: Any) -> tuple[str, ...]:
    """A string or a list of strings, as a tuple."""
    values = [value] if isinstance(value, str) else value
    if value is None:
        return ()
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f"model_card_kwargs.{key}: expected a string or a list of strings, got {value!r}")
    return tuple(values)
