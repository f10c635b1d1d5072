"""FSQ and LFQ math: index bijections, pinned values, entropy against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from vqkit.functional import fsq, lfq


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [2, 3], [7], [4, 4, 4]])
def test_fsq_index_bijection(levels: list[int]) -> None:
    lv = torch.tensor(levels)
    n = math.prod(levels)
    index = torch.arange(n)
    digits = fsq.index_to_digits(index, lv)
    assert torch.equal(fsq.digits_to_index(digits, lv), index)
    # numpy mixed-radix reference: the first channel is the least significant digit
    ref = np.array(list(itertools.product(*[range(v) for v in reversed(levels)])))[:, ::-1]
    np.testing.assert_array_equal(digits.numpy(), ref)


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [2, 3, 4]])
def test_fsq_bound_gives_exactly_levels_values(levels: list[int]) -> None:
    lv = torch.tensor(levels)
    z = torch.linspace(-20, 20, 20001)[:, None].expand(-1, len(levels))
    rounded = torch.round(fsq.bound(z, lv))
    for i, level in enumerate(levels):
        assert rounded[:, i].unique().numel() == level
    digits = fsq.values_to_digits(rounded, lv)
    assert int(digits.min()) == 0 and torch.equal(digits.max(0).values, lv - 1)


def test_fsq_pinned_values() -> None:
    # Odd levels are symmetric around 0; 0 maps to the middle value for odd and even level counts.
    lv = torch.tensor([5, 4])
    zero = fsq.bound(torch.zeros(1, 2), lv)
    torch.testing.assert_close(zero, torch.zeros(1, 2), atol=1e-6, rtol=0)
    values = fsq.digits_to_values(torch.tensor([[0, 0], [4, 3], [2, 2]]), lv)
    torch.testing.assert_close(values, torch.tensor([[-1.0, -1.0], [1.0, 0.5], [0.0, 0.0]]))


def test_lfq_index_bijection_and_values() -> None:
    bits = 5
    index = torch.arange(2**bits)
    b = lfq.index_to_bits(index, bits)
    values = lfq.bits_to_values(b, scale=0.5)
    assert torch.equal(lfq.signs_to_index(values), index)
    assert torch.equal(b[3], torch.tensor([1, 1, 0, 0, 0]))  # bit i is channel i
    assert set(values.unique().tolist()) == {-0.5, 0.5}


def brute_force_entropies(z: torch.Tensor, scale: float, temperature: float) -> tuple[float, float]:
    d = z.shape[1]
    codes = lfq.bits_to_values(lfq.index_to_bits(torch.arange(2**d), d), scale).double()
    logits = -torch.cdist(z.double(), codes).pow(2) / temperature
    q = logits.softmax(-1)
    per_sample = -(q * q.clamp_min(1e-300).log()).sum(-1).mean()
    avg = q.mean(0)
    codebook = -(avg * avg.clamp_min(1e-300).log()).sum()
    return float(per_sample), float(codebook)


def test_lfq_entropy_exact_matches_softmax_over_all_codes() -> None:
    z = torch.randn(64, 4) * 0.3
    per_sample, codebook = lfq.entropy_terms(z, scale=1.0, temperature=2.0, mode="exact", max_chunk_bytes=640)
    ref_ps, ref_cb = brute_force_entropies(z, 1.0, 2.0)
    assert float(per_sample) == pytest.approx(ref_ps, rel=1e-4)
    assert float(codebook) == pytest.approx(ref_cb, rel=1e-4)


def test_lfq_factorized_entropy_is_an_upper_bound() -> None:
    z = torch.randn(128, 6) * 0.3
    _, exact = lfq.entropy_terms(z, temperature=2.0, mode="exact")
    _, factorized = lfq.entropy_terms(z, temperature=2.0, mode="factorized")
    assert float(factorized) >= float(exact) - 1e-5


def test_lfq_exact_entropy_gradient_is_the_same_chunked_and_whole() -> None:
    z = (torch.randn(50, 5) * 0.3).requires_grad_(True)
    grads = []
    for chunk_bytes in (128, 1 << 30):  # 1 row per chunk (checkpointed) vs one chunk
        _, codebook = lfq.entropy_terms(z, temperature=1.0, mode="exact", max_chunk_bytes=chunk_bytes)
        (grad,) = torch.autograd.grad(codebook, z)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_lfq_entropy_of_an_empty_batch_is_zero() -> None:
    per_sample, codebook = lfq.entropy_terms(torch.zeros(0, 4))
    assert float(per_sample) == 0.0 and float(codebook) == 0.0
