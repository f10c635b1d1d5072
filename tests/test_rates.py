"""``vqkit.rates``: every registered quantizer can be set to a common rate, and the rate is what it says."""

from __future__ import annotations

import pytest

import vqkit
from vqkit.quantizers.presets import PAPER_RECIPES
from vqkit.rates import kwargs_at_rate, standalone_quantizers

COMPOSITIONS = {"residual", "product", "grouped_residual"}
"""Registered so that compositions save as configs; built from given stages, so no rate of their own."""


def test_every_registered_name_but_the_compositions_builds_from_dim_alone() -> None:
    # The papers' recipes build from dim alone too, but "every quantizer" of a bench leaves them out.
    assert set(vqkit.list_quantizers()) - set(standalone_quantizers()) == COMPOSITIONS | set(PAPER_RECIPES)
    for name in COMPOSITIONS:
        note = kwargs_at_rate(name, 64, 8)
        assert isinstance(note, str) and "no rule reaches 8 bits" in note


@pytest.mark.parametrize("quantizer_name", standalone_quantizers())
@pytest.mark.parametrize("bits", [4, 8, 12])
def test_every_quantizer_reaches_multiples_of_four_bits(quantizer_name: str, bits: int) -> None:
    kwargs = kwargs_at_rate(quantizer_name, 64, bits)
    assert isinstance(kwargs, dict), kwargs
    q = vqkit.create_quantizer(quantizer_name, dim=64, **kwargs)
    assert q.bits_per_vector == bits


def test_unreachable_rates_come_with_a_reason() -> None:
    note = kwargs_at_rate("ivq", 64, 6)
    assert isinstance(note, str) and "ivq" in note and "6 bits" in note


def test_kmeans_init_only_where_a_codebook_takes_it() -> None:
    """``init`` reaches classes with codebooks (directly, as a codebook option, or through their stages) and no
    other: residual LFQ hands its ``**lfq_kwargs`` to LFQ, which has no ``init``."""
    from vqkit.rates import accepts
    from vqkit.registry import quantizer_class

    takes = {name for name in vqkit.list_quantizers() if accepts(quantizer_class(name), "init")}
    assert takes == {
        *("vq", "ema_vq", "cvq", "factorized_vq", "residual_vq", "product_vq", "ivq", "looc"),
        *("grouped_residual_vq", "qinco", "multiscale_vq"),  # grouped: through ResidualVQ, then VQ
        *("ivq_paper", "looc_paper", "collapse_baseline"),  # the papers' recipes of those classes
    }
    assert not accepts(quantizer_class("residual_lfq"), "temperature_of_nothing")
