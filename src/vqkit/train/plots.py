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


def save_png(fig: Any, path: Path) -> str:
    """Write ``fig`` to ``path`` as a PNG, atomically, and close it; returns the file name (for the report)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path.name
