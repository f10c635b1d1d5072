"""``vqkit.functional.estimators``: the rotation trick against the paper's formula, and the exact value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vqkit
from vqkit.functional.estimators import estimate, rotated, straight_through


def _reference_gradient(e: np.ndarray, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``lambda R^T g`` per row, with ``R = I - 2 r r^T + 2 q_hat e_hat^T`` formed as a matrix (float64)."""
    out = np.empty_like(g)
    for i in range(e.shape[0]):
        e_hat = e[i] / np.linalg.norm(e[i])
        q_hat = q[i] / np.linalg.norm(q[i])
        r = (e_hat + q_hat) / np.linalg.norm(e_hat + q_hat)
        rotation = np.eye(e.shape[1]) - 2 * np.outer(r, r) + 2 * np.outer(q_hat, e_hat)
        np.testing.assert_allclose(rotation @ e_hat, q_hat, atol=1e-12)  # it takes e's direction onto q's
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(e.shape[1]), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)  # a rotation, not a reflection
        out[i] = np.linalg.norm(q[i]) / np.linalg.norm(e[i]) * rotation.T @ g[i]
    return out


def test_rotation_gradient_is_the_papers_formula_and_the_value_is_exact() -> None:
    g0 = torch.Generator().manual_seed(0)
    e = torch.randn(64, 7, generator=g0, dtype=torch.float64, requires_grad=True)
    q = torch.randn(64, 7, generator=g0, dtype=torch.float64)
    g = torch.randn(64, 7, generator=g0, dtype=torch.float64)
    out = estimate(q, e, "rotation")
    assert torch.equal(out, q)  # the value is the code, bit for bit
    (out * g).sum().backward()
    assert e.grad is not None
    expected = _reference_gradient(e.detach().numpy(), q.numpy(), g.numpy())
    np.testing.assert_allclose(e.grad.numpy(), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rotated(e.detach(), q), q)  # lambda R e is the code (up to rounding)


def test_straight_through_passes_the_gradient_unchanged() -> None:
    e = torch.randn(5, 3, requires_grad=True)
    q = torch.randn(5, 3)
    g = torch.randn(5, 3)
    (estimate(q, e, "ste") * g).sum().backward()
    assert e.grad is not None and torch.equal(e.grad, g)


@pytest.mark.parametrize("fresh", [False, True])
def test_straight_through_copies_hard_unless_it_is_fresh(fresh: bool) -> None:
    e, q, g = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3), torch.randn(5, 3)
    out = straight_through(q, e, fresh=fresh)
    assert torch.equal(out, q) and (out.data_ptr() == q.data_ptr()) == fresh
    (out * g).sum().backward()
    assert e.grad is not None and torch.equal(e.grad, g)


def test_rotation_is_finite_for_zero_and_opposite_vectors() -> None:
    e = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [1.0, 0.0, 0.0], [0.0, 3.0, 4.0]], requires_grad=True)
    q = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 3.0, 4.0]])
    g = torch.ones(4, 3)
    out = estimate(q, e, "rotation")
    assert torch.equal(out, q)
    (out * g).sum().backward()
    assert e.grad is not None and torch.isfinite(e.grad).all()
    # Zero input or zero code: the rotation is undefined and the estimator falls back to straight-through.
    assert torch.equal(e.grad[:2], g[:2])
    # Opposite directions: a half turn, scaled by |q| / |e| = 2.
    torch.testing.assert_close(e.grad[2], torch.tensor([-2.0, 2.0, 2.0]))
    # The code is the input: R = I and lambda = 1.
    torch.testing.assert_close(e.grad[3], g[3])


@pytest.mark.parametrize("name", ["vq", "simvq"])
def test_quantizers_carry_the_rotation_to_their_input(name: str) -> None:
    """VQ and SimVQ without projections: ``x.grad`` row by row is the formula with ``q`` the decoded code."""
    torch.manual_seed(0)
    ste = vqkit.create_quantizer(name, dim=6, codebook_size=16)
    rot = vqkit.create_quantizer(name, dim=6, codebook_size=16, gradient="rotation")
    rot.load_state_dict(ste.state_dict())
    x = torch.randn(40, 6, dtype=torch.float32)
    g = torch.randn(40, 6)
    x_rot = x.clone().requires_grad_(True)
    out = rot(x_rot)
    assert torch.equal(out.quantized, ste(x).quantized)  # same value, only the gradient differs
    (out.quantized * g).sum().backward()
    q = rot.decode(out.codes).detach()
    expected = _reference_gradient(x.double().numpy(), q.double().numpy(), g.double().numpy())
    assert x_rot.grad is not None
    np.testing.assert_allclose(x_rot.grad.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_residual_vq_rotates_onto_the_summed_levels() -> None:
    torch.manual_seed(0)
    q = vqkit.create_quantizer("residual_vq", dim=6, codebook_size=8, num_quantizers=3, gradient="rotation")
    x = torch.randn(30, 6, requires_grad=True)
    g = torch.randn(30, 6)
    out = q(x)
    (out.quantized * g).sum().backward()
    expected = _reference_gradient(
        x.detach().double().numpy(), out.quantized.detach().double().numpy(), g.double().numpy()
    )
    assert x.grad is not None
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert q.to_config()["kwargs"]["gradient"] == "rotation"
