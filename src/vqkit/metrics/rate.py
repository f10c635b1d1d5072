"""Rate arithmetic: bits per item from the latent grid and the quantizer's nominal bits, bitrate, bits per pixel.

All figures are nominal (``bits_per_vector = sum(log2(alphabet))``, no entropy coding); ``CodebookUsage``'s
``effective_bits`` gives the entropy-coded bound next to it.
"""

from __future__ import annotations

import math
from typing import Any


def _check_nonnegative(name: str, value: Any) -> float:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
    if not ok:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def bits_per_item(latent_positions: int, bits_per_vector: float) -> float:
    """Bits to code one item: ``latent_positions × bits_per_vector``.

    Args:
        latent_positions: quantized vectors per item (e.g. 7 × 7 = 49 for a 28×28 image at stride 4, or the frame
            count of a clip).
        bits_per_vector: the quantizer's ``bits_per_vector``.
    """
    if isinstance(latent_positions, bool) or not isinstance(latent_positions, int) or latent_positions < 1:
        raise ValueError(f"latent_positions: expected a positive integer, got {latent_positions!r}")
    return latent_positions * _check_nonnegative("bits_per_vector", bits_per_vector)


def bitrate_kbps(bits_per_item: float, items_per_second: float) -> float:
    """Bitrate in kbit/s (1 kbit = 1000 bits): ``bits_per_item × items_per_second / 1000``.

    For a codec, an item is usually one latent frame: ``bitrate_kbps(bits_per_vector, sample_rate / hop)``.
    """
    return (
        _check_nonnegative("bits_per_item", bits_per_item)
        * _check_nonnegative("items_per_second", items_per_second)
        / 1000.0
    )


def bits_per_pixel(bits_per_item: float, height: int, width: int) -> float:
    """Bits per pixel (bpp) of an image coded with ``bits_per_item`` bits (channels are not counted)."""
    for name, side in (("height", height), ("width", width)):
        if isinstance(side, bool) or not isinstance(side, int) or side < 1:
            raise ValueError(f"{name}: expected a positive integer, got {side!r}")
    return _check_nonnegative("bits_per_item", bits_per_item) / (height * width)
