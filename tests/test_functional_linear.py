"""``vqkit.functional.linear``: the layout rule changes no value or gradient beyond float rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.functional.linear import NARROW, Linear, linear, mm


@pytest.mark.parametrize(("m", "k", "p"), [(300, 64, 4), (300, 8, 64), (7, 5, 3), (64, 1, 2), (40, 33, 16)])
def test_mm_equals_matmul(m: int, k: int, p: int) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g), torch.randn(k, p, generator=g)
    out = mm(a, b)
    assert out.is_contiguous() and out.shape == (m, p)
    torch.testing.assert_close(out, a @ b)
    torch.testing.assert_close(mm(a, b.t().contiguous().t()), a @ b)  # a column-major b: the plain product


@pytest.mark.parametrize(
    ("d_in", "d_out", "bias"), [(4, 64, True), (8, 256, False), (64, 4, True), (32, 32, True)]
)
def test_linear_matches_f_linear_values_and_gradients(d_in: int, d_out: int, bias: bool) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 50, d_in, generator=g, requires_grad=True)
    w = torch.randn(d_out, d_in, generator=g, requires_grad=True)
    b = torch.randn(d_out, generator=g, requires_grad=True) if bias else None
    grad_out = torch.randn(3, 50, d_out, generator=g)
    ours = linear(x, w, b)
    (ours * grad_out).sum().backward()
    mine = [t.grad.clone() for t in (x, w, b) if t is not None]
    for t in (x, w, b):
        if t is not None:
            t.grad = None
    ref = F.linear(x, w, b)
    (ref * grad_out).sum().backward()
    torch.testing.assert_close(ours, ref)
    for got, want in zip(mine, [t.grad for t in (x, w, b) if t is not None], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_linear_module_is_nn_linear_with_the_same_state() -> None:
    torch.manual_seed(2)
    ours = Linear(4, 64)
    ref = torch.nn.Linear(4, 64)
    ref.load_state_dict(ours.state_dict())
    assert set(ours.state_dict()) == {"weight", "bias"}
    x = torch.randn(10, 4, requires_grad=True)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours.in_features < NARROW  # the case the rule exists for
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_linear_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(20, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(20, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear, (x, w, b))
