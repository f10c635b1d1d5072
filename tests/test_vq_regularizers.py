"""``VQ``'s codebook regularizers and training options: the usage-entropy penalty, affine codes and
synchronized commitment (Huh et al., ICML 2023), each against a hand-written oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vqkit
from vqkit.functional.regularizers import usage_entropy
from vqkit.quantizers.code_affine import CodeAffine


def _np_usage_entropy(d: np.ndarray, tau: float, diversity: float) -> float:
    logits = -d / tau
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    per_vector = -(p * np.log(np.where(p > 0, p, 1.0))).sum(1).mean()
    mean = p.mean(0)
    return float(per_vector + diversity * (mean * np.log(np.where(mean > 0, mean, 1.0))).sum())


def _vq(**kwargs: object) -> vqkit.VQ:
    q = vqkit.create_quantizer("vq", **{"dim": 4, "codebook_size": 8, **kwargs})
    assert isinstance(q, vqkit.VQ)
    return q


# ---------------------------------------------------------------------------------------------- usage entropy
@pytest.mark.parametrize(("tau", "diversity"), [(0.5, 1.0), (2.0, 0.3), (0.05, 2.0)])
def test_usage_entropy_matches_the_numpy_oracle(tau: float, diversity: float) -> None:
    d = torch.rand(30, 6, dtype=torch.float64) * 3
    got = usage_entropy(d, tau, diversity)
    assert float(got) == pytest.approx(_np_usage_entropy(d.numpy(), tau, diversity), rel=1e-9, abs=1e-12)


def test_usage_entropy_extremes_and_the_empty_batch() -> None:
    k = 4
    assert float(usage_entropy(torch.zeros(5, k), 1.0, 1.0)) == pytest.approx(0.0, abs=1e-6)  # log K - log K
    assert float(usage_entropy(torch.zeros(5, k), 1.0, 0.0)) == pytest.approx(math.log(k), rel=1e-6)
    confident = 100.0 * (1 - torch.eye(k))  # vector i sits on code i: no doubt, every code used
    assert float(usage_entropy(confident, 1.0, 1.0)) == pytest.approx(-math.log(k), rel=1e-5)
    empty = torch.zeros(0, k, requires_grad=True)
    value = usage_entropy(empty, 1.0, 1.0)
    assert float(value.detach()) == 0.0
    value.backward()  # an empty rank still joins the backward pass


def test_vq_entropy_term_is_training_only_weighted_and_matches_the_oracle() -> None:
    torch.manual_seed(0)
    q = _vq(entropy_weight=0.3, entropy_temperature=0.5, diversity=0.7, init="gaussian")
    assert q.loss_weights["entropy"] == 0.3 and "entropy" not in _vq().loss_weights
    x = torch.randn(40, 4, requires_grad=True)
    out = q(x)
    expected = _np_usage_entropy(_np_d(x, q.codebook.weight), 0.5, 0.7)
    assert float(out.losses["entropy"].detach()) == pytest.approx(expected, rel=1e-4)
    out.losses["entropy"].backward()  # it moves the encoder and the codebook, through the distances
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert q.codebook.weight.grad is not None and float(q.codebook.weight.grad.abs().sum()) > 0
    assert "entropy" not in q.eval()(x).losses
    assert "entropy" not in _vq()(x).losses


def _np_d(x: torch.Tensor, c: torch.Tensor) -> np.ndarray:
    a, b = x.detach().double().numpy(), c.detach().double().numpy()
    return ((a[:, None] - b[None]) ** 2).sum(-1)


# ---------------------------------------------------------------------------------------------- affine codes
def test_learned_affine_codes_decode_to_a_c_plus_b_and_round_trip_exactly() -> None:
    torch.manual_seed(1)
    q = _vq(affine="learned", affine_lr=10.0, init="gaussian")
    assert isinstance(q.code_affine, CodeAffine)
    with torch.no_grad():
        q.code_affine.scale.copy_(torch.randn(4) * 0.05)
        q.code_affine.shift.copy_(torch.randn(4) * 0.05)
    a = 1 + 10.0 * q.code_affine.scale.detach()
    b = 10.0 * q.code_affine.shift.detach()
    c = q.codebook.weight.detach()
    torch.testing.assert_close(q.decode(torch.arange(8)[:, None]), c * a + b, rtol=0, atol=0)
    x = torch.randn(100, 4)
    nearest = torch.from_numpy(_np_d(x, c * a + b).argmin(1))
    assert torch.equal(q.encode(x)[:, 0], nearest)  # the search is over the affine codes
    q.eval()
    assert torch.equal(q.decode(q.encode(x)), q(x).quantized)
    assert q.num_codebook_parameters == 8 * 4 + 2 * 4


def test_learned_affine_moves_codes_no_vector_chose() -> None:
    """The shared scale and shift train by the codebook loss, and every code moves with them."""
    torch.manual_seed(2)
    q = _vq(affine="learned", init="gaussian", codebook_size=16)
    x = torch.randn(200, 4) * 3 + 2  # far from the codes: the affine parameters have work to do
    out = q(x)
    unused = torch.ones(16, dtype=torch.bool)
    unused[out.codes[:, 0]] = False
    assert bool(unused.any())
    before = q.effective_codebook.detach().clone()
    out.losses["codebook"].backward()
    assert q.code_affine is not None and q.code_affine.shift.grad is not None
    torch.optim.SGD(q.code_affine.parameters(), lr=0.01).step()
    moved = (q.effective_codebook.detach() - before).norm(dim=1)
    assert bool((moved[unused] > 0).all())
    assert q.codebook.weight.grad is not None and float(q.codebook.weight.grad[unused].abs().sum()) == 0.0


def test_running_affine_matches_the_moment_oracle_and_inverts() -> None:
    """``a = sd_z / sd_c``, ``b = mean_z - a mean_c`` with bias-corrected moving averages of the batches'
    (population) mean and variance; the codebook's moments are those of the current codes."""
    torch.manual_seed(3)
    decay = 0.8
    q = _vq(affine="running", affine_decay=decay, init="gaussian")
    batches = [torch.randn(64, 4) * torch.tensor([1.0, 2.0, 0.5, 3.0]) + torch.tensor([0.0, 1.0, -2.0, 4.0])]
    batches.append(torch.randn(32, 4) * 2 - 1)
    for batch in batches:
        q(batch)
    weights = np.array([(1 - decay) * decay ** (len(batches) - 1 - t) for t in range(len(batches))])
    weights /= weights.sum()  # the bias correction: the weights of the seen batches sum to one
    mean = sum(w * b.double().numpy().mean(0) for w, b in zip(weights, batches, strict=True))
    var = sum(w * b.double().numpy().var(0) for w, b in zip(weights, batches, strict=True))
    c = q.codebook.weight.detach().double().numpy()
    a = np.sqrt(var) / np.sqrt(c.var(0))
    b = mean - a * c.mean(0)
    np.testing.assert_allclose(
        q.effective_codebook.detach().double().numpy(), c * a + b, rtol=1e-4, atol=1e-5
    )
    assert q.code_affine is not None
    z = torch.randn(10, 4)
    a_now, b_now = q.code_affine.parameters_ab(q.codebook.weight)
    back = q.code_affine.to_stored(z, q.codebook.weight) * a_now + b_now
    torch.testing.assert_close(back, z, rtol=1e-5, atol=1e-5)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q.eval()(z)
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())  # eval moves no statistics


def test_running_affine_with_an_ema_codebook_follows_the_data() -> None:
    """EMA statistics are kept in the stored codes' space, so an EMA code decodes to the mean it follows."""
    torch.manual_seed(4)
    q = _vq(affine="running", update="ema", init="kmeans", decay=0.5, codebook_size=4)
    centers = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 5.0]]) + 3.0
    x = (centers[:, None] + 0.1 * torch.randn(4, 50, 4)).reshape(-1, 4)
    for _ in range(30):
        q(x)
    found = q.effective_codebook.detach()
    assert torch.cdist(centers, found).min(dim=1).values.max() < 0.2
    q.eval()
    assert torch.equal(q.decode(q.encode(x)), q(x).quantized)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"affine": "learned", "update": "ema"}, "affine: 'learned' affine codes train by the codebook loss"),
        ({"affine": "running", "distance": "cosine"}, "affine: a per-dimension scale"),
        ({"affine": "learned", "l2_normalize": True}, "affine: a per-dimension scale"),
        ({"affine": "yes"}, "affine: expected one of"),
        ({"affine": "learned", "affine_lr": 0}, r"affine_lr: expected a number in \(0.0"),
        ({"affine": "running", "affine_decay": 1.0}, r"affine_decay: expected a number in \[0.0, 1.0\)"),
        ({"sync_nu": 0.5, "update": "ema"}, "sync_nu: synchronized commitment moves a gradient-trained"),
        ({"sync_nu": 1.5}, r"sync_nu: expected a number in \[0.0, 1.0\]"),
        ({"entropy_temperature": -1.0}, "entropy_temperature: expected"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _vq(**kwargs)


# ---------------------------------------------------------------------------------------------- synchronized commitment
@pytest.mark.parametrize("nu", [0.0, 0.3])
def test_synchronized_commitment_sends_nu_times_the_output_gradient_to_the_codes(nu: float) -> None:
    torch.manual_seed(5)
    q = _vq(sync_nu=nu, init="gaussian")
    x = torch.randn(60, 4, requires_grad=True)
    g = torch.randn(60, 4)
    out = q(x)
    (out.quantized * g).sum().backward()
    assert torch.equal(q.decode(out.codes), out.quantized)  # the value is untouched
    assert x.grad is not None and torch.equal(x.grad, g)  # the encoder keeps the straight-through gradient
    expected = torch.zeros(8, 4).index_add_(0, out.codes[:, 0], nu * g)
    if nu == 0:
        assert q.codebook.weight.grad is None
    else:
        assert q.codebook.weight.grad is not None
        torch.testing.assert_close(q.codebook.weight.grad, expected)


def test_product_vq_groups_get_the_synchronized_gradient() -> None:
    torch.manual_seed(6)
    q = vqkit.create_quantizer(
        "product_vq", dim=8, codebook_size=4, num_groups=2, sync_nu=0.5, init="gaussian"
    )
    assert isinstance(q, vqkit.ProductVQ)
    x = torch.randn(30, 8, requires_grad=True)
    g = torch.randn(30, 8)
    out = q(x)
    (out.quantized * g).sum().backward()
    for j, stage in enumerate(q.stage_list):
        assert isinstance(stage, vqkit.VQ) and stage.codebook.weight.grad is not None
        expected = torch.zeros(4, 4).index_add_(0, out.codes[:, j], 0.5 * g[:, 4 * j : 4 * j + 4])
        torch.testing.assert_close(stage.codebook.weight.grad, expected)


def test_the_options_survive_the_config_round_trip() -> None:
    kwargs = {
        "sampling": "gumbel",
        "sampling_temperature": 0.5,
        "entropy_weight": 0.1,
        "entropy_temperature": 0.2,
        "diversity": 0.5,
        "affine": "learned",
        "affine_lr": 3.0,
        "sync_nu": 0.2,
    }
    config = _vq(**kwargs).to_config()
    assert {k: config["kwargs"][k] for k in kwargs} == kwargs
    assert vqkit.quantizer_from_config(config).to_config() == config


def test_floored_logits_keep_the_softmax_and_its_gradient() -> None:
    """Raising logits to within 40 of each row's largest changes the softmax and its gradient only by the
    probabilities it raises (under e^-40) and float rounding, and leaves no logit below the floor."""
    from vqkit.functional.numerics import LOGIT_FLOOR, floored_logits

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 300, generator=g, dtype=torch.float64) * 1000).requires_grad_(True)
    weights = torch.randn(64, 300, generator=g, dtype=torch.float64)
    plain = logits.softmax(-1)
    (plain * weights).sum().backward()
    expected = logits.grad.clone()
    logits.grad = None
    floored = floored_logits(logits)
    assert float(floored.min()) >= LOGIT_FLOOR and torch.equal(
        floored.amax(-1), torch.zeros(64, dtype=torch.float64)
    )
    got = floored.softmax(-1)
    (got * weights).sum().backward()
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits.grad, expected, rtol=0, atol=1e-12)
