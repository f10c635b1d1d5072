"""Rate arithmetic: bits per item from the latent grid and the quantizer's nominal bits, bitrate, bits per pixel.

All figures are nominal (``bits_per_vector = sum(log2(alphabet))``, no entropy coding); ``CodebookUsage``'s
``effective_bits`` gives the entropy-coded bound next to it.
"""

from __future__ import annotations

from vqkit._validate import check_nonnegative_number, check_positive_int


def bits_per_item(latent_positions: int, bits_per_vector: float) -> float:
    """Bits to code one item: ``latent_positions × bits_per_vector``.

    Args:
        latent_positions: quantized vectors per item (e.g. 7 × 7 = 49 for a 28×28 image at stride 4, or the frame
            count of a clip).
        bits_per_vector: the quantizer's ``bits_per_vector``.
    """
    check_positive_int("latent_positions", latent_positions)
    return latent_positions * check_nonnegative_number("bits_per_vector", bits_per_vector)


def bitrate_kbps(bits_per_item: float, items_per_second: float) -> float:
    """Bitrate in kbit/s (1 kbit = 1000 bits): ``bits_per_item × items_per_second / 1000``.

    For a codec, an item is usually one latent frame: ``bitrate_kbps(bits_per_vector, sample_rate / hop)``.
    """
    return (
        check_nonnegative_number("bits_per_item", bits_per_item)
        * check_nonnegative_number("items_per_second", items_per_second)
        / 1000.0
    )


def bits_per_pixel(bits_per_item: float, height: int, width: int) -> float:
    """Bits per pixel (bpp) of an image coded with ``bits_per_item`` bits (channels are not counted)."""
    check_positive_int("height", height)
    check_positive_int("width", width)
    return check_nonnegative_number("bits_per_item", bits_per_item) / (height * width)
