"""``bsq``: codes on the unit sphere, losses against brute force, the options and their errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vqkit
from vqkit.functional import lfq as lfq_math
from vqkit.quantizers.bsq import BSQ


def brute_force_terms(u: np.ndarray, tau: float) -> tuple[float, float]:
    """Per-sample and codebook entropy of ``q(c | u) ∝ exp(-|u - c|^2 / tau)`` over every corner."""
    bits = u.shape[1]
    c = np.array(list(itertools.product([-1.0, 1.0], repeat=bits))) / math.sqrt(bits)
    logits = -((u[:, None, :] - c[None]) ** 2).sum(-1) / tau
    q = np.exp(logits - logits.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    avg = q.mean(0)
    return float(-(q * np.log(q)).sum(1).mean()), float(-(avg * np.log(avg)).sum())


def test_codes_are_the_signs_of_the_normalized_projection() -> None:
    q = BSQ(16, bits=6).eval()
    x = torch.randn(200, 16)
    linear = q.input_linear()
    assert linear is not None
    u = F.normalize(linear(x), dim=-1)
    assert torch.equal(q.encode(x)[:, 0], lfq_math.signs_to_index(u))
    # The decoded code before the out projection: sign(u) / sqrt(bits), a point of the unit sphere.
    bits = lfq_math.index_to_bits(q.encode(x)[:, 0], 6)
    torch.testing.assert_close(q.decode(q.encode(x)), q.project_out(torch.sign(u) / math.sqrt(6)))
    torch.testing.assert_close((bits * 2 - 1).float(), torch.sign(u))


def test_without_projection_codes_are_scale_free_and_on_the_sphere() -> None:
    q = BSQ(8, bits=8).eval()
    assert q.input_linear() is None and q.num_codebook_parameters == 0
    x = torch.randn(100, 8)
    assert torch.equal(q.encode(x), q.encode(3.7 * x))
    torch.testing.assert_close(q.decode(q.encode(x)).norm(dim=-1), torch.ones(100))


def test_gradient_passes_through_the_normalization() -> None:
    """The output depends on the direction of ``h`` alone, and so does the gradient: no radial component."""
    q = BSQ(8, bits=8).eval()
    x = torch.randn(50, 8, requires_grad=True)
    (q(x).quantized * torch.randn(50, 8)).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close((x.grad * x).sum(-1), torch.zeros(50), rtol=0, atol=1e-5)


@pytest.mark.parametrize("group_size", [5, 16])
def test_losses_match_brute_force(group_size: int) -> None:
    tau, gamma = 0.5, 0.7
    q = BSQ(5, bits=5, group_size=group_size, temperature=tau, diversity=gamma, beta=0.3, entropy_weight=0.2)
    x = torch.randn(40, 5, dtype=torch.float64)
    out = q.train()(x)  # no floating state: it computes in float32
    u = F.normalize(x, dim=-1).numpy()
    code = np.where(u > 0, 1.0, -1.0) / math.sqrt(5)
    np.testing.assert_allclose(float(out.losses["commitment"]), ((u - code) ** 2).sum(1).mean(), rtol=1e-6)
    per_sample, codebook = brute_force_terms(u, tau)
    np.testing.assert_allclose(float(out.losses["entropy"]), per_sample - gamma * codebook, rtol=0, atol=1e-6)
    assert out.loss_weights == {"commitment": 0.3, "entropy": 0.2}
    torch.testing.assert_close(out.loss, 0.3 * out.losses["commitment"] + 0.2 * out.losses["entropy"])
    assert "entropy" not in q.eval()(x).losses  # the penalty is a training term


def test_rate_and_defaults() -> None:
    assert BSQ.at_rate(64, 8) == {"bits": 8}
    q = vqkit.create_quantizer("bsq", dim=64, **BSQ.at_rate(64, 8))  # type: ignore[arg-type]
    assert q.bits_per_vector == 8 and q.codebook_label == "1×256" and q.search_cost() is None
    default = BSQ(32)
    assert (default.bits, default.group_size, default.temperature, default.diversity) == (18, 9, 1.0, 1.0)
    assert default.loss_weights == {"commitment": 0.0, "entropy": 0.1} and default.data_init is False


def test_data_init_standardizes_the_linear_map_on_the_first_training_batch() -> None:
    q = BSQ(16, bits=6, data_init=True)
    x = 0.3 + 0.01 * torch.randn(256, 16)  # an offset far larger than the spread, as a fresh encoder's
    q.eval()(x)
    assert not bool(q.initialized)  # eval changes nothing
    q.train()(x)
    linear = q.input_linear()
    assert linear is not None and bool(q.initialized)
    with torch.no_grad():
        h = linear(x)
    torch.testing.assert_close(h.mean(0), torch.zeros(6), rtol=0, atol=1e-4)
    torch.testing.assert_close(h.std(0), torch.ones(6), rtol=1e-4, atol=0)
    before = linear.weight.detach().clone()
    q(x)  # once only
    assert torch.equal(before, linear.weight.detach())
    assert q.encode(x).unique().numel() > 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_size": 0}, r"group_size: expected an integer in \[1, 16\]"),
        ({"group_size": 17}, r"group_size: expected an integer in \[1, 16\]"),
        ({"bits": 63}, r"bits: expected at most 62"),
        ({"bits": 0}, r"bits: expected a positive integer"),
        ({"temperature": 0.0}, r"temperature: expected a number in \(0.0, inf\]"),
        ({"beta": -1.0}, r"beta: expected a number in \[0.0, inf\]"),
        ({"data_init": "yes"}, r"data_init: expected a bool, got 'yes'"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BSQ(8, **kwargs)  # type: ignore[arg-type]
