"""``vqkit.types``: the lazily computed result mappings (``LazyScalars``, ``Deferred``, ``terms_unless_grad``)
and what the quantizers defer with them (usage metrics always, loss terms without a gradient)."""

from __future__ import annotations

import pickle

import pytest
import torch

import vqkit
from vqkit.functional import stats
from vqkit.types import Deferred, LazyScalars, terms_unless_grad


class _Counter:
    def __init__(self, values: dict[str, torch.Tensor]) -> None:
        self.calls = 0
        self.values = values

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        return self.values


def test_names_are_known_and_values_computed_once_on_first_read() -> None:
    compute = _Counter({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    source = Deferred(compute)
    first, second = LazyScalars({"x": torch.tensor(0.0)}), LazyScalars()
    first.defer(source, ["a", "b"])
    second.defer(source, {"renamed": "b"})
    assert list(first) == ["x", "a", "b"] and len(first) == 3 and "a" in first and "c" not in first
    assert "deferred=['a', 'b']" in repr(first)
    assert compute.calls == 0
    assert float(first["b"]) == 2.0 and float(second["renamed"]) == 2.0 and float(first["a"]) == 1.0
    assert compute.calls == 1
    assert first == {"x": 0.0, "a": 1.0, "b": 2.0} and dict(second) == {"renamed": torch.tensor(2.0)}
    with pytest.raises(KeyError):
        first["c"]


def test_setting_deleting_and_merging_do_not_compute() -> None:
    compute = _Counter({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    lazy = LazyScalars()
    lazy.defer(Deferred(compute), ["a", "b"])
    lazy["a"] = torch.tensor(5.0)
    del lazy["b"]
    with pytest.raises(KeyError):
        del lazy["b"]
    target = LazyScalars({"y": torch.tensor(3.0)})
    other = LazyScalars()
    other.defer(Deferred(compute), ["b"])
    target.merge(other)
    target.merge({"z": torch.tensor(4.0)})
    assert list(target) == ["y", "b", "z"] and compute.calls == 0
    assert float(lazy["a"]) == 5.0 and list(lazy) == ["a"]
    assert target.resolve() == {"y": 3.0, "b": 2.0, "z": 4.0} and compute.calls == 1


def test_deferred_values_are_computed_without_autograd() -> None:
    w = torch.ones(3, requires_grad=True)
    lazy = terms_unless_grad(False, lambda: {"loss": (w * 2).sum()}, ["loss"])
    assert isinstance(lazy, LazyScalars) and lazy["loss"].grad_fn is None
    eager = terms_unless_grad(True, lambda: {"loss": (w * 2).sum()}, ["loss"])
    assert type(eager) is dict and eager["loss"].grad_fn is not None


def test_a_forward_counts_its_codes_only_when_its_metrics_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting(codes: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(codes.shape)
        return column_usage(codes, sizes)

    column_usage = stats.column_usage
    monkeypatch.setattr(stats, "column_usage", counting)
    q = vqkit.create_quantizer("residual_vq", dim=8, codebook_size=16, num_quantizers=3)
    out = q(torch.randn(4, 50, 8))
    assert calls == [] and {"utilization", "perplexity"} <= set(out.metrics)
    assert set(out.position_metrics) >= {"utilization", "perplexity"}
    utils, perps = column_usage(out.codes.reshape(-1, 3), q.alphabet_sizes)
    assert torch.equal(out.position_metrics["utilization"], utils)
    assert torch.equal(out.metrics["perplexity"], perps.mean())
    assert len(calls) == 1  # one count table for both mappings


@pytest.mark.parametrize(
    ("name", "kwargs"), [("lfq", {"bits": 6}), ("bsq", {"bits": 6}), ("residual_lfq", {})]
)
def test_losses_without_a_gradient_are_deferred_and_equal_the_eager_ones(
    name: str, kwargs: dict[str, object]
) -> None:
    q = vqkit.create_quantizer(name, dim=8, **kwargs)
    x = torch.randn(200, 8)
    for training in (True, False):
        q.train(training)
        eager = q(x.clone().requires_grad_(True))
        with torch.no_grad():
            lazy = q(x)
        assert isinstance(lazy.losses, LazyScalars) and not isinstance(eager.losses, LazyScalars)
        assert list(lazy.losses) == list(eager.losses)
        for term, value in eager.losses.items():
            torch.testing.assert_close(lazy.losses[term], value.detach(), msg=term)
        torch.testing.assert_close(lazy.loss, eager.loss.detach())


def test_dict_operations_give_plain_dicts() -> None:
    lazy = LazyScalars({"x": torch.tensor(1.0)})
    lazy.defer(Deferred(lambda: {"y": torch.tensor(2.0)}), ["y"])
    assert lazy.copy() == {"x": 1.0, "y": 2.0} and type(lazy.copy()) is dict
    assert (lazy | {"z": torch.tensor(3.0)}).keys() == {"x", "y", "z"}
    assert ({"w": torch.tensor(0.0)} | lazy).keys() == {"w", "x", "y"}
    restored = pickle.loads(pickle.dumps(lazy))
    assert type(restored) is dict and restored == {"x": 1.0, "y": 2.0}


def test_a_failed_compute_leaves_the_entry_deferred() -> None:
    attempts = []

    def flaky() -> dict[str, torch.Tensor]:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first read fails")
        return {"y": torch.tensor(2.0)}

    lazy = LazyScalars()
    lazy.defer(Deferred(flaky), ["y"])
    with pytest.raises(RuntimeError):
        lazy["y"]
    assert "y" in lazy and float(lazy["y"]) == 2.0


def test_deferred_results_do_not_see_later_in_place_changes() -> None:
    """The codes a forward returns and an unprojected input are the caller's to change: what the result
    reports is the forward's."""
    q = vqkit.create_quantizer("lfq", dim=6, bits=6).eval()  # no projection: the channels are the input
    x = torch.randn(300, 6)
    with torch.no_grad():
        out = q(x)
    expected = torch.nn.functional.mse_loss(x, q.decode(out.codes))
    utilization = stats.column_usage(out.codes.reshape(-1, 1).clone(), q.alphabet_sizes)[0].mean()
    x.mul_(10.0)
    out.codes.fill_(0)
    torch.testing.assert_close(out.losses["commitment"], expected)
    torch.testing.assert_close(out.metrics["utilization"], utilization)
