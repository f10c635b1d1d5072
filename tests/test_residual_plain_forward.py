"""``ResidualVQ``'s one-pass forward for plain VQ levels against the per-level forward it replaces.

The per-level path (``ResidualQuantizer._quantize``) stays the reference: from the same state, two training steps
and one eval forward must give the same codes, ``quantized`` and codebook state bit for bit, and the same losses and
gradients to float rounding."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from vqkit.quantizers import ProductVQ, ResidualVQ
from vqkit.quantizers.composite import ProductQuantizer

CONFIGS: list[dict[str, Any]] = [
    {},
    {"update": "ema"},
    {"restart": "dead"},
    {"restart": "anchor"},
    {"init": "kmeans"},
    {"gradient": "rotation"},
    {"codebook_dim": 6},
    {"distance": "cosine"},
    {"codebook_size": [16, 8, 4], "num_quantizers": 3, "update": "ema", "restart": "dead"},
    {"shared_codebook": True},
    {"shared_codebook": True, "update": "ema"},
    {"shared_codebook": True, "num_quantizers": 3, "restart": "dead", "init": "kmeans"},
    {"shared_codebook": True, "update": "ema", "restart": "anchor"},
]


class _PerLevel(ResidualVQ):
    """The same quantizer through the per-level forward (``ResidualVQ._quantize`` and ``_quantize_levels`` both
    take the one-pass forward when the levels are plain: the switch itself is turned off)."""

    def _plain_levels(self) -> bool:
        return False


def _pair(options: dict[str, Any]) -> tuple[ResidualVQ, ResidualVQ]:
    kwargs = {"codebook_size": 16, "num_quantizers": 2, **options}
    torch.manual_seed(0)
    fast = ResidualVQ(12, **kwargs)
    assert fast._plain_levels()
    slow = _PerLevel(12, **kwargs)
    slow.load_state_dict(copy.deepcopy(fast.state_dict()))
    return fast, slow


def test_the_reference_takes_the_per_level_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _pair({})
    calls: list[str] = []
    one_pass = ResidualVQ._plain_forward
    monkeypatch.setattr(
        ResidualVQ, "_plain_forward", lambda self, z: calls.append(type(self).__name__) or one_pass(self, z)
    )
    x = torch.randn(10, 12)
    fast(x), slow(x)
    assert calls == ["ResidualVQ"]


def _step(q: ResidualVQ, x: torch.Tensor, seed: int) -> tuple[Any, list[torch.Tensor]]:
    torch.manual_seed(seed)  # restarts draw from the global generator: the same draws for both paths
    x = x.clone().requires_grad_(True)
    q.zero_grad(set_to_none=True)
    out = q(x)
    (out.quantized.sin().sum() + out.loss).backward()
    grads = [x.grad] + [p.grad if p.grad is not None else torch.zeros_like(p) for p in q.parameters()]
    return out, grads


def _assert_paths_agree(fast: Any, slow: Any) -> None:
    """Two training steps and an eval forward from the same state: codes, ``quantized`` and state bit for bit,
    losses and gradients to rounding."""
    g = torch.Generator().manual_seed(1)
    for step in range(2):
        x = torch.randn(4, 30, 12, generator=g) * 2
        (a, ga), (b, gb) = _step(fast.train(), x, step), _step(slow.train(), x, step)
        assert torch.equal(a.codes, b.codes)
        assert torch.equal(a.quantized, b.quantized)
        assert a.losses.keys() == b.losses.keys()
        for name in a.losses:
            torch.testing.assert_close(a.losses[name], b.losses[name], rtol=1e-5, atol=1e-7)
        for u, v in zip(ga, gb, strict=True):
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-6)
        for (name, u), v in zip(fast.state_dict().items(), slow.state_dict().values(), strict=True):
            assert torch.equal(u, v), name
    x = torch.randn(2, 9, 12, generator=g)
    with torch.no_grad():
        a, b = fast.eval()(x), slow.eval()(x)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.quantized, b.quantized)
    torch.testing.assert_close(a.loss, b.loss)
    assert torch.equal(fast.decode(a.codes), a.quantized)


@pytest.mark.parametrize(
    "options", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default"
)
def test_one_pass_forward_equals_per_level_forward(options: dict[str, Any]) -> None:
    _assert_paths_agree(*_pair(options))


def test_levels_with_their_own_options_take_the_per_level_forward() -> None:
    assert not ResidualVQ(8, 16, 2, affine="learned")._plain_levels()
    assert not ResidualVQ(8, 16, 2, l2_normalize=True)._plain_levels()


class _PerGroup(ProductVQ):
    """The same product quantizer through the per-group forward."""

    def _quantize(self, z: torch.Tensor) -> Any:
        return ProductQuantizer._quantize(self, z)


@pytest.mark.parametrize(
    "options",
    [{}, {"update": "ema"}, {"restart": "dead"}, {"init": "kmeans"}, {"num_groups": 3, "distance": "cosine"}],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default",
)
def test_product_one_pass_forward_equals_per_group_forward(options: dict[str, Any]) -> None:
    kwargs = {"codebook_size": 8, "num_groups": 2, **options}
    torch.manual_seed(0)
    fast, slow = ProductVQ(12, **kwargs), _PerGroup(12, **kwargs)
    slow.load_state_dict(copy.deepcopy(fast.state_dict()))
    _assert_paths_agree(fast, slow)
