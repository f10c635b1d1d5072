"""Rate arithmetic: bits per item, kbit/s, bits per pixel, and their argument errors."""

from __future__ import annotations

import math

import pytest

from vqkit.metrics.codes.rate import bitrate_kbps, bits_per_item, bits_per_pixel


def test_rate_arithmetic() -> None:
    assert bits_per_item(7 * 7, 24.0) == 1176.0  # a 28×28 image at stride 4, IVQ's 24 bits per vector
    assert bitrate_kbps(24.0, 16000 / 320) == pytest.approx(1.2)  # 50 frames/s × 24 bits
    assert bitrate_kbps(bits_per_item(75, 80.0), 1.0) == pytest.approx(
        6.0
    )  # Encodec 6 kbps: 75 frames × 8 × 10
    assert bits_per_pixel(1176.0, 28, 28) == pytest.approx(1.5)
    assert bitrate_kbps(0, 50) == 0.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: bits_per_item(0, 8.0), "latent_positions: expected a positive integer, got 0"),
        (lambda: bits_per_item(4, -1.0), "bits_per_vector: expected a finite number >= 0, got -1.0"),
        (lambda: bitrate_kbps(math.inf, 50.0), "bits_per_item: expected a finite number >= 0, got inf"),
        (lambda: bitrate_kbps(8.0, True), "items_per_second: expected a finite number >= 0, got True"),
        (lambda: bits_per_pixel(8.0, 28, 0), "width: expected a positive integer, got 0"),
    ],
)
def test_rate_errors_name_the_argument(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
