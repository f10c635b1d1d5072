"""Rates of codes shared by a grid's cells (multi-scale VQ): counted once per cell in evaluation and bits/item."""

from __future__ import annotations

import math

import torch

import vqkit
from vqkit.train.cell_rates import CellRates


def _trained_codes() -> tuple[vqkit.MultiScaleVQ, torch.Tensor]:
    q = vqkit.MultiScaleVQ(8, codebook_size=16, factors=(6, 2, 1), layout="channels_first")
    x = torch.randn(120, 8, 7, 7)
    q.init_codebook(x.movedim(1, -1).reshape(-1, 8))
    return q.eval(), q.encode(x)


def test_effective_bits_count_each_cell_once() -> None:
    q, codes = _trained_codes()
    rates = CellRates(q, 3, lambda sizes: None)
    for batch in codes.split(50):
        rates.update(batch)
    out = rates.compute()
    # Oracle: each scale's token-map entropy (bits per cell) times its cells, per position of the 7 x 7 map.
    bits = 0.0
    for tokens in q.scale_codes(codes):
        p = torch.bincount(tokens.flatten(), minlength=16).double()
        p = p[p > 0] / p.sum()
        bits += float(-(p * p.log2()).sum()) * tokens[0].numel()
    assert math.isclose(out["codebook/effective_bits"], bits / 49, rel_tol=1e-12)
    assert "coded_bits_per_item" not in out  # no coder given


def test_coded_bits_are_the_scales_token_maps_coded() -> None:
    from vqkit.train.evaluate import _coded_rate

    q, codes = _trained_codes()
    rates = CellRates(q, 3, lambda sizes: _coded_rate(sizes, False))
    rates.update(codes)
    out = rates.compute()
    cells = sum(math.prod(shape) for shape in q.scale_shapes((7, 7)))  # 1 + 9 + 49 = 59 symbols per map
    assert cells == 59
    # Within a few percent of the cells' nominal 59 x 4 bits (near-uniform codes), far below the per-position
    # count of the redundant storage (3 codes at each of 49 positions: 588 bits).
    assert 0.9 * 59 * 4 <= out["coded_bits_per_item"] <= 1.05 * 59 * 4
    assert math.isclose(out["codebook/coded_bits"], out["coded_bits_per_item"] / 49, rel_tol=1e-12)


def test_a_tokenizer_counts_a_grid_quantizers_cells() -> None:
    model = vqkit.build_model(
        {
            "name": "image_vqvae",
            "in_channels": 1,
            "hidden": 8,
            "res_hidden": 4,
            "num_res_layers": 1,
            "downsample": 4,
            "latent_dim": 8,
            "quantizer": {"name": "multiscale_vq", "kwargs": {"codebook_size": 16, "factors": [6, 2, 1]}},
        }
    )
    q = model.quantizer
    assert isinstance(q, vqkit.MultiScaleVQ)
    assert model.bits_per_item((1, 28, 28)) == q.bits_per_map((7, 7)) == 59 * 4
    assert model.bits_per_item((1, 28, 28), num_quantizers=2) == (1 + 9) * 4
