"""Per-model pictures for the reports: a few fixed test items reconstructed, code usage, audio clips.

A run's report (``vqkit eval``: its one model) and a bench's (one model per method) draw the same pictures:

* ``reconstructions.png``: the originals on the top row, one row per model below (images: the items
  themselves; audio: their log-magnitude spectrograms, on the originals' colour scale), the same items for
  every model, so rows compare column by column;
* ``usage.png``: each model's code frequencies over the first ``USAGE_ITEMS`` test items, sorted from the most
  used code down, one line per code position (a flat line at ``1/K`` is a uniformly used codebook; a cliff is
  where the dead codes start);
* for audio, the clips as WAV files (``audio/original_<k>.wav``, ``audio/<model>_<k>.wav``, mono, at most
  ``CLIP_SECONDS`` at the model's rate) and the table of them that the HTML report turns into players.

Each model sees the items once, in eval mode, so the pictures cost a forward pass over a handful of items
and an encode of ``USAGE_ITEMS``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqkit.functional.spectral import magnitude_stft
from vqkit.metrics.codes.usage import CodebookUsage
from vqkit.models.base import Tokenizer
from vqkit.train.files import audio_bytes
from vqkit.train.plots import method_colors, pyplot, save_png
from vqkit.utils.atomic import atomic_write_bytes

USAGE_ITEMS = {"image": 256, "audio": 16, "vector": 1024}
"""Items encoded for the usage histograms, by modality (Fashion-MNIST's 7x7 latents: 12,544 vectors; 16
one-second clips at 50 frames per second: 800)."""
MAX_USAGE_CODES = 1 << 16
"""Alphabets up to this size are counted; a larger one gets no histogram."""
CLIP_SECONDS = 2.0
AUDIO_CLIPS = 3


@dataclass
class ModelSamples:
    """What one model's pictures need: its reconstructions ``[n, *item]`` of the fixed items (clamped as
    written to a file) and its code counts, ``[K_j]`` for each code position ``j`` (None: alphabet too large)."""

    label: str
    reconstructions: torch.Tensor
    usage: list[torch.Tensor] | None


@dataclass
class SampleSet:
    """A report's pictures' inputs: the fixed items ``[n, *item]`` and each model's samples, by (method, bits)."""

    modality: str
    sample_rate: int | None
    originals: torch.Tensor
    models: dict[tuple[str, float], ModelSamples]


def fixed_items(dataset: Any, count: int) -> torch.Tensor:
    """The first ``count`` items of ``dataset`` (in the split's order: the same for every model of a bench)."""
    return torch.stack([dataset[i] for i in range(min(count, len(dataset)))])


def as_written(x: torch.Tensor, modality: str) -> torch.Tensor:
    """Images clamped to [0, 1] and audio to [-1, 1], as a decoder's output is when written to a file."""
    return x.clamp(0.0, 1.0) if modality == "image" else x.clamp(-1.0, 1.0) if modality == "audio" else x


@torch.no_grad()
def model_samples(
    model: Tokenizer,
    items: torch.Tensor,
    usage_items: torch.Tensor,
    label: str,
    modality: str,
    num_quantizers: int | None = None,
) -> ModelSamples:
    """``model``'s reconstructions of ``items`` and code counts over ``usage_items`` (the first
    ``num_quantizers`` residual levels when given)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = items.to(device)
    out = model(x) if num_quantizers is None else model.forward_levels(x, num_quantizers)
    recon = as_written(out.reconstruction, modality).float().cpu()
    usage = None
    sizes = model.quantizer.alphabet_sizes
    if num_quantizers is None and max(sizes) <= MAX_USAGE_CODES:
        counter = CodebookUsage(sizes).to(device)
        counter.update(model.encode(usage_items.to(device)))
        usage = [counter.counts[j, :k].cpu() for j, k in enumerate(sizes)]
    model.train(was_training)
    return ModelSamples(label, recon, usage)


def _mosaic(tiles: list[list[np.ndarray]], pad: int, fill: float) -> np.ndarray:
    """Rows of equal-shape 2-D (or HxWx3) tiles as one array, ``pad`` pixels of ``fill`` between them."""
    h, w = tiles[0][0].shape[:2]
    extra = tiles[0][0].shape[2:]
    rows, cols = len(tiles), max(len(r) for r in tiles)
    canvas = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, *extra), fill, dtype=np.float32)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            canvas[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = tile
    return canvas


def _image_tile(x: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] as ``[H, W]`` (grey) or ``[H, W, 3]``."""
    array = x.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array[..., :3]


def _spectrogram(wave: torch.Tensor) -> np.ndarray:
    return torch.log10(magnitude_stft(wave.reshape(-1).float(), 512, 128) + 1e-5).numpy()


def reconstruction_grid(
    originals: torch.Tensor, samples: Sequence[ModelSamples], modality: str, path: Path
) -> str | None:
    """``reconstructions.png`` (see the module docstring); None for vector data."""
    if modality not in ("image", "audio") or not samples:
        return None
    labels = ["original", *[s.label for s in samples]]
    rows = [originals, *[s.reconstructions for s in samples]]
    if modality == "image":
        tiles, pad = [[_image_tile(x) for x in row] for row in rows], 2
        canvas = _mosaic(tiles, pad, 1.0)
        cell = max(0.45, originals.shape[-1] / 60)  # inches per item: small images drawn 2x their pixels
        size = (
            1.6 + cell * len(tiles[0]),
            0.3 + cell * len(rows) * originals.shape[-2] / originals.shape[-1],
        )
        kwargs: dict[str, Any] = {"cmap": "gray" if canvas.ndim == 2 else None, "vmin": 0.0, "vmax": 1.0}
    else:  # low frequencies at the bottom of each tile; NaN between tiles draws as the background
        tiles, pad = [[np.flipud(_spectrogram(x)) for x in row[:AUDIO_CLIPS]] for row in rows], 4
        canvas = _mosaic(tiles, pad, math.nan)
        low, high = float(np.percentile(tiles[0][0], 1)), float(tiles[0][0].max())
        size = (1.6 + 3.2 * len(tiles[0]), 0.3 + 1.1 * len(rows))
        kwargs = {"cmap": "magma", "vmin": low, "vmax": high, "aspect": "auto"}
    fig, ax = pyplot().subplots(figsize=size)
    ax.imshow(canvas, interpolation="nearest", **kwargs)
    step = tiles[0][0].shape[0] + pad
    ax.set_yticks([i * step + (step - pad) / 2 for i in range(len(rows))], labels, fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    kind = ", log spectrograms (time →, frequency ↑)" if modality == "audio" else ""
    ax.set_title(f"originals (top row) and reconstructions{kind}", fontsize=9)
    return save_png(fig, path)


def usage_plot(
    samples: Sequence[ModelSamples], path: Path, colors: dict[str, Any] | None = None
) -> str | None:
    """``usage.png``: a small panel per model, its sorted code frequencies per position (log scale)."""
    counted = [s for s in samples if s.usage is not None]
    if not counted:
        return None
    cols = min(3, len(counted))  # 3 panels wide: the picture fits a column of report.html, beside another
    rows = math.ceil(len(counted) / cols)
    title = textwrap.wrap(
        "code usage: frequencies sorted from the most used code, one line per code position (dotted: uniform "
        "use; shaded: unused codes)",
        int(15 * 2.6 * cols),
    )
    height = 0.4 + 0.15 * len(title) + 1.9 * rows
    fig, axes = pyplot().subplots(rows, cols, figsize=(2.6 * cols, height), squeeze=False)
    # Fixed margins (inches turned into fractions): tight_layout would measure every panel's text.
    top = 1 - (0.5 + 0.15 * len(title)) / height  # inches: the title's lines, then two lines of panel title
    fig.subplots_adjust(left=0.32 / cols, right=1 - 0.05 / cols, bottom=0.35 / height, top=top)
    fig.subplots_adjust(wspace=0.32, hspace=0.95)
    colors = colors or method_colors([s.label for s in counted])
    for ax, sample in zip(axes.flat, counted, strict=False):
        _usage_panel(ax, sample, colors[sample.label])
    for ax in list(axes.flat)[len(counted) :]:
        ax.axis("off")
    fig.suptitle("\n".join(title), fontsize=8, y=1 - 0.08 / height, va="top")
    return save_png(fig, path, tight=False)


def _usage_panel(ax: Any, sample: ModelSamples, color: Any) -> None:
    """Sorted frequencies over the whole alphabet (unused codes shaded), against the uniform ``1/K`` (dotted)."""
    assert sample.usage is not None
    used, sizes = [], []
    for counts in sample.usage[:8]:  # at most 8 positions drawn (a 16-bit binary code would be 16 lines)
        freq = counts / max(float(counts.sum()), 1.0)
        ordered = torch.sort(freq, descending=True).values
        k = int((ordered > 0).sum())
        ranks = np.arange(1, k + 1)
        marker = "." if k <= 32 else None  # a few codes: a step of two points would hide in the frame
        ax.step(
            ranks, ordered[:k].numpy(), where="mid", color=color, linewidth=1.1, alpha=0.85, marker=marker
        )
        used.append(k)
        sizes.append(len(counts))
    largest = max(sizes)
    ax.axhline(1 / largest, color="0.5", linestyle=":", linewidth=0.8)
    if max(used) < largest:
        ax.axvspan(max(used) + 0.5, largest + 0.5, color="0.92", zorder=0)
    ax.set_xlim(0.5, largest + 0.5)
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(pyplot().NullFormatter())
    positions = f" ({len(sample.usage)} positions)" if len(sample.usage) > 1 else ""
    ax.set_title(f"{sample.label}\n{sum(used)} of {sum(sizes)} codes used{positions}", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_xlabel("code rank", fontsize=6)


def write_clips(
    originals: torch.Tensor, samples: Sequence[ModelSamples], sample_rate: int, folder: Path
) -> list[tuple[str, list[str]]]:
    """The first ``AUDIO_CLIPS`` items and each model's reconstructions as WAVs under ``folder``, cut to
    ``CLIP_SECONDS``; returns ``[(row label, [file names])]``, the originals first."""
    length = int(CLIP_SECONDS * sample_rate)
    rows = [("original", originals), *[(s.label, s.reconstructions) for s in samples]]
    table = []
    for label, waves in rows:
        stem = slug(label)
        names = []
        for k, wave in enumerate(waves[:AUDIO_CLIPS]):
            name = f"{stem}_{k}.wav"
            atomic_write_bytes(folder / name, audio_bytes(wave.reshape(-1)[:length], sample_rate))
            names.append(name)
        table.append((label, names))
    return table


def clip_table(table: list[tuple[str, list[str]]], prefix: str) -> list[str]:
    """A markdown table of the clips, a row per model, a link per clip (players in ``report.html``)."""
    width = max(len(names) for _, names in table)
    lines = ["| | " + " | ".join(f"clip {k + 1}" for k in range(width)) + " |", "|---" * (width + 1) + "|"]
    for label, names in table:
        lines.append(f"| {label} | " + " | ".join(f"[{n}]({prefix}{n})" for n in names) + " |")
    return lines


def slug(text: str) -> str:
    """A file-name-safe form of a label (``"RVQ (1/3 levels)"`` -> ``"RVQ__1_3_levels_"``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
