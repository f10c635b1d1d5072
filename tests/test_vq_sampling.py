"""Stochastic codes of ``VQ`` (``sampling="softmax" | "gumbel"``) and ``vqkit.functional.sampling``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vqkit
from vqkit.functional.sampling import gumbel_logits
from vqkit.functional.search import pairwise_distances


def _np_distances(x: torch.Tensor, codes: torch.Tensor) -> np.ndarray:
    a, c = x.detach().double().numpy(), codes.detach().double().numpy()
    return ((a[:, None, :] - c[None, :, :]) ** 2).sum(-1)


def _np_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _fixed_vq(**kwargs: object) -> vqkit.VQ:
    q = vqkit.create_quantizer("vq", dim=3, codebook_size=5, **kwargs)
    assert isinstance(q, vqkit.VQ)
    q.codebook.set_codes(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2], [1, 1, 1]]))
    return q


def test_pairwise_distances_match_the_loop_oracle_and_carry_gradients() -> None:
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    d = pairwise_distances(x, c)
    np.testing.assert_allclose(d.detach().numpy(), _np_distances(x, c), rtol=1e-10, atol=1e-10)
    d.sum().backward()
    assert x.grad is not None and c.grad is not None
    # d/dx sum_k |x - c_k|^2 = 2 (K x - sum_k c_k)
    torch.testing.assert_close(x.grad, 2 * (5 * x - c.sum(0)).detach())
    cos = pairwise_distances(x.detach(), c.detach(), "cosine")
    unit_x = x.detach() / x.detach().norm(dim=1, keepdim=True)
    unit_c = c.detach() / c.detach().norm(dim=1, keepdim=True)
    torch.testing.assert_close(cos, 1 - unit_x @ unit_c.T)


def test_the_gumbel_max_draw_has_the_softmax_frequencies() -> None:
    torch.manual_seed(0)
    d = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0])
    n = 40_000
    codes = gumbel_logits(d.expand(n, -1).contiguous(), 0.7).argmax(1)
    freq = np.bincount(codes.numpy(), minlength=5) / n
    # Standard error sqrt(p (1 - p) / n) <= 0.0025: 0.012 is over four of them.
    np.testing.assert_allclose(freq, _np_softmax(-d.numpy() / 0.7), atol=0.012)


def test_softmax_sampling_in_training_draws_codes_with_the_softmax_frequencies() -> None:
    torch.manual_seed(0)
    q = _fixed_vq(sampling="softmax", sampling_temperature=0.8)
    x = torch.tensor([[0.4, 0.3, 0.6]]).expand(30_000, -1).contiguous()
    out = q(x)  # a grad codebook: the forward does not move the codes
    freq = np.bincount(out.codes[:, 0].numpy(), minlength=5) / x.shape[0]
    expected = _np_softmax(-_np_distances(x[:1], q.codebook.weight) / 0.8)[0]
    np.testing.assert_allclose(freq, expected, atol=0.012)
    assert torch.equal(q.decode(out.codes), out.quantized)  # the value is the drawn code, exactly


@pytest.mark.parametrize("sampling", ["softmax", "gumbel"])
def test_temperature_to_zero_is_the_nearest_code_and_eval_is_deterministic(sampling: str) -> None:
    torch.manual_seed(1)
    x = torch.randn(200, 16)
    kwargs = {"dim": 16, "codebook_size": 32, "init": "gaussian", "sampling": sampling}
    cold = vqkit.create_quantizer("vq", **kwargs, sampling_temperature=1e-7)
    assert torch.equal(cold(x).codes, cold.encode(x))
    hot = vqkit.create_quantizer("vq", **kwargs, sampling_temperature=100.0)
    assert not torch.equal(hot(x).codes, hot.encode(x))  # training draws
    hot.eval()
    first, second = hot(x), hot(x)
    assert torch.equal(first.codes, hot.encode(x)) and torch.equal(first.codes, second.codes)
    assert torch.equal(first.quantized, second.quantized)


def test_softmax_sampling_keeps_the_straight_through_gradient() -> None:
    torch.manual_seed(2)
    q = _fixed_vq(sampling="softmax", sampling_temperature=5.0)
    x = torch.randn(64, 3, requires_grad=True)
    g = torch.randn(64, 3)
    (q(x).quantized * g).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, g)
    assert q.codebook.weight.grad is None  # the output's gradient does not reach the codes


def test_gumbel_value_is_the_drawn_code_and_its_gradient_is_the_relaxations() -> None:
    """Oracle: the same Gumbel noise (same seed, same draw) on hand-written distances; the gradient of
    ``(softmax(-d / T + G) @ C * g).sum()`` to the input and to the codebook."""
    temperature = 0.6
    q = _fixed_vq(sampling="gumbel", sampling_temperature=temperature)
    x = torch.randn(50, 3, requires_grad=True)
    g = torch.randn(50, 3)
    torch.manual_seed(3)
    out = q(x)
    (out.quantized * g).sum().backward()
    assert torch.equal(q.decode(out.codes), out.quantized)
    ref_x = x.detach().clone().requires_grad_(True)
    ref_c = q.codebook.weight.detach().clone().requires_grad_(True)
    d = ((ref_x[:, None, :] - ref_c[None]) ** 2).sum(-1)
    torch.manual_seed(3)
    finfo = torch.finfo(d.dtype)
    noise = -(-torch.empty_like(d).uniform_().clamp_(min=finfo.tiny, max=1.0 - finfo.eps).log()).log()
    logits = -d / temperature + noise
    assert torch.equal(out.codes[:, 0], logits.argmax(1))  # the draw is the perturbed argmax
    ((logits.softmax(1) @ ref_c) * g).sum().backward()
    assert x.grad is not None and q.codebook.weight.grad is not None
    torch.testing.assert_close(x.grad, ref_x.grad)
    torch.testing.assert_close(q.codebook.weight.grad, ref_c.grad)


def test_given_codes_override_the_draw() -> None:
    q = _fixed_vq(sampling="softmax", sampling_temperature=100.0)
    codes = torch.randint(5, (40, 1))
    out = q.quantize_codes(torch.randn(40, 3), codes)
    assert torch.equal(out.codes, codes)


def test_residual_levels_draw_their_codes_in_training() -> None:
    torch.manual_seed(4)
    x = torch.randn(300, 16)
    q = vqkit.create_quantizer(
        "residual_vq", dim=16, codebook_size=[16, 8], sampling="softmax", sampling_temperature=100.0
    )
    assert isinstance(q, vqkit.ResidualVQ)
    assert all(isinstance(s, vqkit.VQ) and s.sampling == "softmax" for s in q.stage_list)
    assert not torch.equal(q(x).codes, q.encode(x))
    q.eval()
    assert torch.equal(q(x).codes, q.encode(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampling": "argmax"}, "sampling: expected one of"),
        ({"sampling_temperature": 0.0}, r"sampling_temperature: expected a number in \(0.0"),
        ({"sampling": "gumbel", "gradient": "rotation"}, "gradient: sampling='gumbel'"),
    ],
)
def test_bad_sampling_options_are_refused_by_name(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vqkit.create_quantizer("vq", dim=4, codebook_size=8, **kwargs)
