"""Beam-search encoding of residual quantizers (``vqkit.quantizers.beam``)."""

from __future__ import annotations

import itertools

import pytest
import torch

import vqkit


def _error(q: vqkit.Quantizer, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return (q.decode(codes).detach() - x).square().sum(-1)


def test_a_wide_beam_is_the_exhaustive_search_and_never_worse_than_greedy() -> None:
    torch.manual_seed(0)
    q = vqkit.create_quantizer("residual_vq", dim=4, codebook_size=[6, 5, 4], init="gaussian").eval()
    x = torch.randn(300, 4)
    # Exhaustive: every one of the 6 * 5 * 4 code combinations decoded, the best per vector.
    combos = torch.tensor(list(itertools.product(range(6), range(5), range(4))))  # [120, 3]
    decoded = q.decode(combos).detach()  # [120, 4]
    best = torch.cdist(x, decoded).argmin(1)
    exhaustive = combos[best]
    wide = q.encode(x, beam_size=120)
    torch.testing.assert_close(_error(q, x, wide), _error(q, x, exhaustive))
    greedy = q.encode(x)
    assert torch.equal(q.encode(x, beam_size=1), greedy)
    errors = [_error(q, x, q.encode(x, beam_size=b)).mean() for b in (1, 2, 4, 16)]
    assert all(later <= earlier + 1e-6 for earlier, later in itertools.pairwise(errors))
    assert bool((_error(q, x, q.encode(x, beam_size=4)) <= _error(q, x, greedy) + 1e-5).all())
    assert errors[-1] < errors[0]  # on random codebooks the beam finds better combinations


@pytest.mark.parametrize("name", ["residual_vq", "residual_fsq", "ivq"])
def test_beam_search_works_on_residual_quantizers_and_with_prefixes(name: str) -> None:
    kwargs = {
        "residual_vq": {"codebook_size": 8, "num_quantizers": 3, "codebook_dim": 4},
        "residual_fsq": {"levels": [3, 3], "num_quantizers": 3},
        "ivq": {"lines": 4},
    }[name]
    q = vqkit.create_quantizer(name, dim=8, **kwargs)
    x = torch.randn(4, 20, 8)
    q(x)
    q.eval()
    codes = q.encode(x, beam_size=3)
    assert codes.shape == q.encode(x).shape
    prefix = q.encode(x, beam_size=3, num_quantizers=2)
    assert prefix.shape[-1] == q.level_widths()[1]
    assert q.decode(prefix).shape == x.shape


def test_beam_size_errors_are_named() -> None:
    q = vqkit.create_quantizer("residual_vq", dim=4, codebook_size=8, num_quantizers=2)
    with pytest.raises(ValueError, match="beam_size: expected a positive integer, got 0"):
        q.encode(torch.randn(3, 4), beam_size=0)
    with pytest.raises(TypeError, match="beam_size: VQ is not a residual quantizer"):
        vqkit.create_quantizer("vq", dim=4, codebook_size=8).encode(torch.randn(3, 4), beam_size=2)
    with pytest.raises(ValueError, match=r"beam_size: beam search needs one code of at most 65536 values"):
        vqkit.create_quantizer("residual_lfq", dim=4, bits=20, num_quantizers=2).encode(
            torch.randn(3, 4), beam_size=2
        )
