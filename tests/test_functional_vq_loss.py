"""``loss_pair`` and the eager straight-through estimator against the formulas they replace."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqkit.functional.estimators import straight_through
from vqkit.functional.vq_loss import loss_pair


def _grads(fn, z: torch.Tensor, q: torch.Tensor, w: tuple[float, float]) -> list[torch.Tensor]:
    z, q = z.detach().clone().requires_grad_(True), q.detach().clone().requires_grad_(True)
    commitment, codebook = fn(z, q)
    (w[0] * commitment + w[1] * codebook).backward()
    return [commitment.detach(), codebook.detach(), z.grad, q.grad]


def test_loss_pair_matches_two_mse_losses() -> None:
    g = torch.Generator().manual_seed(0)
    z, q = torch.randn(100, 16, generator=g), torch.randn(100, 16, generator=g)
    reference = lambda a, b: (F.mse_loss(a, b.detach()), F.mse_loss(b, a.detach()))  # noqa: E731
    for weights in ((0.25, 1.0), (1.0, 0.0), (0.0, 3.0)):
        for got, want in zip(_grads(loss_pair, z, q, weights), _grads(reference, z, q, weights), strict=True):
            torch.testing.assert_close(got, want)


def test_loss_pair_only_where_gradients_are_asked() -> None:
    z = torch.randn(8, 4, requires_grad=True)
    q = torch.randn(8, 4)  # an EMA codebook's lookup: no gradient
    commitment, codebook = loss_pair(z, q)
    assert torch.equal(commitment, codebook)
    codebook.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))  # the codebook term never moves the input


def test_straight_through_value_is_hard_and_gradient_goes_to_the_surrogate() -> None:
    g = torch.Generator().manual_seed(1)
    hard = torch.randn(30, 8, generator=g).round()
    s = torch.randn(30, 8, generator=g, requires_grad=True)
    out = straight_through(hard, s)
    assert torch.equal(out, hard) and out.data_ptr() != hard.data_ptr()
    weights = torch.randn(30, 8, generator=g)
    (out * weights).sum().backward()
    assert torch.equal(s.grad, weights)
    with torch.no_grad():
        assert torch.equal(straight_through(hard, s), hard)
