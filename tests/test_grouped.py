"""Grouped residual quantizers, composites saved as configs, and the shared-codebook residual VQ."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

import vqkit
from vqkit.quantizers.codebook import Codebook
from vqkit.quantizers.dropout import NOT_CODED


def _groups_alone(q: vqkit.GroupedResidualQuantizer, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Level-major codes built by hand: each group's own encoder on its channels, columns interleaved."""
    parts = torch.split(x, [g.dim for g in q.groups], dim=-1)
    codes = [
        g.encode(p) if k is None else g.encode(p, num_quantizers=k)
        for g, p in zip(q.groups, parts, strict=True)
    ]
    levels = codes[0].shape[-1]
    return torch.stack([c[..., j] for j in range(levels) for c in codes], dim=-1)


@pytest.mark.parametrize("name", ["grouped_residual_vq", "grouped_residual_fsq", "grouped_residual_lfq"])
def test_grouped_codes_are_each_groups_residual_codes_level_major(name: str) -> None:
    q = vqkit.create_quantizer(name, dim=12, num_groups=3, num_quantizers=3).eval()
    assert isinstance(q, vqkit.GroupedResidualQuantizer)
    x = torch.randn(5, 7, 12)
    codes = q.encode(x)
    assert codes.shape == (5, 7, 9)
    assert torch.equal(codes, _groups_alone(q, x))
    assert torch.equal(q.encode(x, num_quantizers=2), _groups_alone(q, x, k=2))
    assert q.bits_per_vector == pytest.approx(sum(g.bits_per_vector for g in q.groups))
    assert q.level_widths() == (3, 6, 9)


def test_grouped_prefix_decode_is_each_groups_prefix_decode() -> None:
    q = vqkit.GroupedResidualVQ(8, codebook_size=16, num_quantizers=3).eval()
    x = torch.randn(40, 8)
    prefix = q.encode(x, num_quantizers=2)
    by_group = [
        g.decode(g.encode(p, num_quantizers=2)) for g, p in zip(q.groups, x.split(4, dim=-1), strict=True)
    ]
    torch.testing.assert_close(q.decode(prefix), torch.cat(by_group, dim=-1), rtol=0, atol=0)
    q.init_codebook(x)
    with torch.no_grad():
        errors = [float((q.decode(q.encode(x, num_quantizers=k)) - x).square().mean()) for k in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]
    with pytest.raises(ValueError, match=r"codes: expected shape \[\.\.\., 6\]"):
        q.decode(prefix[:, :3])


def test_grouped_dropout_drops_the_same_levels_in_every_group() -> None:
    torch.manual_seed(3)
    q = vqkit.create_quantizer("grouped_residual_vq", dim=8, codebook_size=8, num_quantizers=3, dropout=1.0)
    codes = q(torch.randn(64, 5, 8)).codes  # every item drops to k ~ U{1..3} levels
    coded = codes != NOT_CODED
    assert torch.equal(coded[..., 0::2], coded[..., 1::2]), "the two groups of a level are coded together"
    per_item = coded[:, 0].sum(-1)
    assert set(per_item.tolist()) == {2, 4, 6} and (coded == coded[:, :1]).all()


def test_grouped_beam_is_never_above_greedy() -> None:
    q = vqkit.create_quantizer("grouped_residual_vq", dim=8, codebook_size=8, num_quantizers=3).eval()
    x = torch.randn(200, 8)
    q.init_codebook(x)

    def error(codes: torch.Tensor) -> torch.Tensor:
        return (q.decode(codes) - x).square().sum(-1)

    assert (error(q.encode(x, beam_size=4)) <= error(q.encode(x)) + 1e-6).all()


def test_grouped_refuses_mismatched_groups() -> None:
    two = vqkit.ResidualVQ(4, [8, 8])
    three = vqkit.ResidualVQ(4, [8, 8, 8])
    with pytest.raises(ValueError, match="same levels"):
        vqkit.GroupedResidualQuantizer(8, [two, three])
    with pytest.raises(ValueError, match="residual quantizers"):
        vqkit.GroupedResidualQuantizer(8, [two, vqkit.VQ(4, 8)])
    with pytest.raises(ValueError, match="own dropout"):
        vqkit.GroupedResidualQuantizer(8, [two, vqkit.ResidualVQ(4, [8, 8], dropout=0.5)])
    with pytest.raises(ValueError, match="num_groups"):
        vqkit.create_quantizer("grouped_residual_vq", dim=10, num_groups=3)


def test_any_composition_saves_and_loads_as_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    inner = vqkit.ProductQuantizer(8, [vqkit.VQ(4, 16), vqkit.create_quantizer("fsq", dim=4, levels=[5, 5])])
    q = vqkit.ResidualQuantizer(
        8, [inner, vqkit.VQ(8, 32, update="ema")], stage_scales=torch.tensor([1.0, 0.5])
    )
    x = torch.randn(64, 8)
    q(x)  # move the EMA state
    q.eval()
    path = vqkit.save_quantizer(q, tmp_path / "q")
    config = json.loads((path / "config.json").read_text())
    assert config["name"] == "residual"
    assert [s["name"] for s in config["kwargs"]["stages"]] == ["product", "vq"]
    assert config["kwargs"]["stage_scales"] == [[1.0], [0.5]]
    loaded = vqkit.load_quantizer(path).eval()
    assert torch.equal(loaded.encode(x), q.encode(x))
    assert torch.equal(loaded(x).quantized, q(x).quantized)


def test_composite_stage_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="stages: expected a non-empty list"):
        vqkit.ResidualQuantizer(8, [])
    with pytest.raises(ValueError, match="stages: expected a non-empty list"):
        vqkit.ProductQuantizer(8, {"name": "vq", "kwargs": {"dim": 8}})  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="unknown quantizer 'nope'"):
        vqkit.ResidualQuantizer(8, [{"name": "nope", "kwargs": {}}])
    with pytest.raises(ValueError, match=r"stage_scales: expected \[2\] or \[2, 8\]"):
        vqkit.ResidualQuantizer(8, [vqkit.VQ(8, 4), vqkit.VQ(8, 4)], stage_scales=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="not registered"):
        vqkit.ResidualQuantizer(8, [type("Mine", (vqkit.VQ,), {})(8, 4)]).to_config()


def _shared(num_quantizers: int, **kwargs: Any) -> tuple[vqkit.ResidualVQ, Codebook]:
    q = vqkit.ResidualVQ(8, 16, num_quantizers, shared_codebook=True, **kwargs)
    assert q.codebook is not None
    return q, q.codebook


def test_shared_codebook_is_one_module_and_one_entry() -> None:
    q, codebook = _shared(3)
    assert all(getattr(stage, "codebook", None) is codebook for stage in q.stage_list)
    assert [k for k in q.state_dict() if k.endswith("weight")] == ["codebook.weight"]
    assert q.num_codebook_parameters == 16 * 8
    with pytest.raises(ValueError, match="codebook_size: a shared codebook has one size"):
        vqkit.create_quantizer("residual_vq", dim=8, codebook_size=[16, 8], shared_codebook=True)


def test_shared_ema_codebook_takes_one_step_on_all_levels_vectors() -> None:
    q, codebook = _shared(3, update="ema")
    reference = Codebook(16, 8, codebook.options)
    reference.load_state_dict(codebook.state_dict())
    x = torch.randn(50, 8)
    residuals, codes, r = [], [], x
    for _ in range(3):  # the levels' inputs and codes before the step
        c = reference.search(r)
        residuals.append(r)
        codes.append(c)
        r = r - reference.lookup(c)
    q(x)
    reference.update(torch.cat(residuals), torch.cat(codes))
    assert int(codebook.step) == 1
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(codebook.state_dict()[key], value, msg=key)


def test_shared_grad_codebook_sums_the_levels_gradients() -> None:
    q, codebook = _shared(2)
    x = torch.randn(30, 8)
    q(x).losses["codebook"].backward()
    shared = codebook.weight.grad
    assert shared is not None and shared.abs().sum() > 0
    # The oracle: each level's own codebook loss on the one weight (the composite's loss is their mean).
    c0 = codebook.search(x)
    r1 = x - codebook.lookup(c0).detach()
    c1 = codebook.search(r1)
    weight = codebook.weight.detach().clone().requires_grad_(True)
    ((weight[c0] - x).square().mean() + (weight[c1] - r1).square().mean()).div(2).backward()
    torch.testing.assert_close(shared, weight.grad)
