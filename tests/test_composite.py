"""Composite quantizers own their projections and search (``vqkit.quantizers.composite``)."""

from __future__ import annotations

import pytest
import torch

import vqkit
from vqkit.quantizers.composite import ResidualQuantizer


def test_factorized_residual_vq_trains_its_projections() -> None:
    """Defect D1: with ``codebook_dim`` every level's out projection sat inside the detached sum and never got
    a gradient (DAC's recipe decoded through frozen random maps). Every parameter that shapes ``quantized``
    now trains from the decoder's gradient alone."""
    q = vqkit.create_quantizer("residual_vq", dim=16, codebook_size=8, num_quantizers=2, codebook_dim=4)
    x = torch.randn(64, 16, requires_grad=True)
    out = q(x)
    (out.quantized.square().mean() + out.loss).backward()
    for name, p in q.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    q.zero_grad()
    q(x).quantized.square().mean().backward()  # no quantizer loss: only the decoder's gradient
    for name in ("project_in.weight", "project_out.weight"):
        grad = dict(q.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert q.num_codebook_parameters == 2 * 8 * 4 + (16 * 4 + 4) + (4 * 16 + 16)


def test_a_stage_with_its_own_out_projection_is_refused_under_one_estimator() -> None:
    stages = [vqkit.VQ(16, 8, codebook_dim=4) for _ in range(2)]
    with pytest.raises(ValueError, match=r"stages\[0\]: a VQ with its own out projection would never train"):
        ResidualQuantizer(16, stages)
    q = ResidualQuantizer(16, stages, gradient="stages")  # each stage's own estimator: allowed
    q(torch.randn(8, 16)).quantized.sum().backward()
    assert all(s.project_out.weight.grad is not None for s in stages)  # type: ignore[union-attr]


def test_greedy_search_matches_a_stage_by_stage_reference() -> None:
    q = vqkit.create_quantizer("residual_vq", dim=8, codebook_size=[16, 8, 4], init="gaussian")
    x = torch.randn(200, 8)
    residual, expected = x.clone(), []
    for stage in q.stage_list:
        d = torch.cdist(residual, stage.codebook.weight)  # type: ignore[union-attr]
        codes = d.argmin(dim=1)
        expected.append(codes)
        residual = residual - stage.codebook.weight[codes]  # type: ignore[union-attr]
    assert torch.equal(q.encode(x), torch.stack(expected, dim=1))
    assert [c.shape for c in q.search(x)] == [(200, 1)] * 3


def test_stage_diagnostics_are_structured_per_stage() -> None:
    q = vqkit.create_quantizer("ivq", dim=8, lines=4, levels="bottom-up")
    out = q(torch.randn(64, 8))
    per_stage = out.position_metrics["stage/codebook_utilization"]
    assert per_stage.shape == (len(q.stage_list),)  # type: ignore[attr-defined]
    torch.testing.assert_close(out.metrics["codebook_utilization"], per_stage.mean())
    assert not any("/" in name for name in out.metrics)
