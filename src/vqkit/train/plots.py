"""Matplotlib for the harness' reports: the headless backend, and PNGs written atomically.

One place for both, so every report (a run's ``report.md``, a bench's) draws and saves the same way: the Agg
backend (no display needed), 110 dpi, tight bounding box, and a file that is either complete or absent.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from vqkit.utils.atomic import atomic_write_bytes


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is the train extra's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path, *, tight: bool = True) -> str:
    """Write ``fig`` to ``path`` as a PNG, atomically, and close it; returns the file name (for the report).
    ``tight=False`` keeps the figure's own margins (measuring a tight box costs a second on a figure of many
    axes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path.name


def method_colors(labels: list[str]) -> dict[str, Any]:
    """A distinct colour per label, in order: ``tab10`` up to 10 labels, ``tab20`` up to 20, then ``tab20``,
    ``tab20b`` and ``tab20c`` (60), cycling beyond; the same labels in the same order get the same colours in
    every plot of a report."""
    from matplotlib import colormaps

    unique = list(dict.fromkeys(labels))
    names = (
        ["tab10"] if len(unique) <= 10 else ["tab20"] if len(unique) <= 20 else ["tab20", "tab20b", "tab20c"]
    )
    palette = [colormaps[name](i) for name in names for i in range(colormaps[name].N)]
    return {label: palette[i % len(palette)] for i, label in enumerate(unique)}
