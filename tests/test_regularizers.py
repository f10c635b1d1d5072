"""Codebook regularizers (``vqkit.functional.regularizers``) and their use in ``VQ``."""

from __future__ import annotations

import pytest
import torch

import vqkit
from vqkit.functional.regularizers import orthogonal_penalty


def test_the_orthogonal_penalty_is_zero_for_orthogonal_codes_and_counts_only_weighted_pairs() -> None:
    assert float(orthogonal_penalty(3.0 * torch.eye(4))) == 0.0  # norms do not matter, directions do
    twins = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    # Gram of the directions: [[1, 1], [1, 1]]; deviation from I: 1 off the diagonal, twice, over 4 entries.
    assert float(orthogonal_penalty(twins)) == pytest.approx(0.5)
    codes = torch.cat([torch.eye(3), torch.tensor([[1.0, 0.0, 0.0]])])  # the fourth duplicates the first
    assert float(orthogonal_penalty(codes, torch.tensor([1, 1, 1, 0]))) == 0.0  # the unused twin is left out
    assert float(orthogonal_penalty(codes, torch.tensor([1, 1, 1, 1]))) > 0.0


@pytest.mark.parametrize("codes", [1024, 4])  # the whole used set, or a sample of it
def test_vq_adds_the_term_only_when_weighted_and_it_trains_the_codebook_alone(codes: int) -> None:
    torch.manual_seed(0)
    plain = vqkit.create_quantizer("vq", dim=6, codebook_size=16)
    assert "orthogonal" not in plain(torch.randn(40, 6)).losses and "orthogonal" not in plain.loss_weights
    q = vqkit.create_quantizer("vq", dim=6, codebook_size=16, orthogonal_weight=0.5, orthogonal_codes=codes)
    x = torch.randn(40, 6, requires_grad=True)
    out = q(x)
    assert q.loss_weights["orthogonal"] == 0.5 and float(out.losses["orthogonal"]) > 0
    out.losses["orthogonal"].backward()
    assert x.grad is None or float(x.grad.abs().sum()) == 0.0  # the encoder is not pushed by it
    assert q.codebook.weight.grad is not None and float(q.codebook.weight.grad.abs().sum()) > 0
    assert q.to_config()["kwargs"]["orthogonal_weight"] == 0.5
