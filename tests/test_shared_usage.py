"""Whole-codebook usage where every code position indexes one codebook (LooC, shared-codebook residual VQ):
``Quantizer.shares_codebook``, ``CodebookUsage(shared_codebook=True)`` and LooC's forward metrics, against hand
counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vqkit
from vqkit.metrics.codes.usage import CodebookUsage

# Two positions over a codebook of 4: position 0 uses {0: 2, 2: 1}, position 1 uses {0: 1, 1: 2}; pooled
# {0: 3, 1: 2, 2: 1, 3: 0}.
CODES = torch.tensor([[0, 0], [0, 1], [2, 1]])
POOLED_ENTROPY = -(0.5 * math.log2(0.5) + (1 / 3) * math.log2(1 / 3) + (1 / 6) * math.log2(1 / 6))


def test_shared_usage_is_the_pooled_histogram() -> None:
    usage = CodebookUsage((4, 4), shared_codebook=True)
    usage.update(CODES)
    out = usage.compute(sync=False)
    assert out["shared_utilization"] == 3 / 4
    assert out["shared_dead_codes"] == 1.0
    assert out["shared_perplexity"] == pytest.approx(2**POOLED_ENTROPY)
    # The per-position keys keep their meaning: each position used 2 of 4 codes.
    assert out["utilization"] == 0.5 and out["utilization/0"] == 0.5 and out["dead_codes"] == 4.0


def test_the_existing_keys_do_not_change_and_the_new_ones_need_the_flag() -> None:
    plain, shared = CodebookUsage((4, 4)), CodebookUsage((4, 4), shared_codebook=True)
    for usage in (plain, shared):
        usage.update(CODES)
    a, b = plain.compute(sync=False), shared.compute(sync=False)
    assert not any(key.startswith("shared_") for key in a)
    assert {k: v for k, v in b.items() if not k.startswith("shared_")} == a
    assert set(b) - set(a) == {"shared_utilization", "shared_perplexity", "shared_dead_codes"}


def test_masked_positions_are_left_out_of_the_pool() -> None:
    usage = CodebookUsage((4, 4), shared_codebook=True)
    usage.update(CODES, mask=torch.tensor([True, True, False]))  # drops the only use of code 2: {0: 3, 1: 1}
    out = usage.compute(sync=False)
    assert out["shared_utilization"] == 2 / 4 and out["shared_dead_codes"] == 2.0
    assert out["shared_perplexity"] == pytest.approx(2 ** -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_an_empty_tracker_reports_zero_usage() -> None:
    out = CodebookUsage((4, 4), shared_codebook=True).compute(sync=False)
    assert (out["shared_utilization"], out["shared_perplexity"], out["shared_dead_codes"]) == (0.0, 1.0, 4.0)


def test_shared_codebook_needs_one_alphabet() -> None:
    with pytest.raises(ValueError, match="shared_codebook=True expects one codebook size"):
        CodebookUsage((4, 8), shared_codebook=True)


@pytest.mark.parametrize(
    ("name", "kwargs", "shares"),
    [
        ("looc", {"codebook_size": 8, "codebook_dim": 4}, True),
        ("looc_paper", {"codebook_size": 8, "scale": 1}, True),
        ("residual_vq", {"codebook_size": 8, "shared_codebook": True}, True),
        ("residual_vq", {"codebook_size": 8}, False),
        ("product_vq", {"codebook_size": 8}, False),
        ("vq", {"codebook_size": 8}, False),
        ("ivq", {"lines": 4}, False),
    ],
)
def test_shares_codebook(name: str, kwargs: dict[str, object], shares: bool) -> None:
    assert vqkit.create_quantizer(name, dim=16, **kwargs).shares_codebook is shares


def test_looc_forward_reports_the_whole_codebook_usage() -> None:
    """``codebook_utilization`` / ``codebook_perplexity`` of the forward = the pooled histogram of its codes
    (numpy), = what ``CodebookUsage(shared_codebook=True)`` says of the same codes."""
    torch.manual_seed(0)
    q = vqkit.create_quantizer("looc", dim=16, codebook_size=32, codebook_dim=2).eval()
    out = q(torch.randn(40, 16))
    pooled = np.bincount(out.codes.reshape(-1).numpy(), minlength=32).astype(np.float64)
    p = pooled[pooled > 0] / pooled.sum()
    assert float(out.metrics["codebook_utilization"]) == pytest.approx((pooled > 0).mean())
    assert float(out.metrics["codebook_perplexity"]) == pytest.approx(2 ** -(p * np.log2(p)).sum(), rel=1e-5)
    # The per-slot mean is below the whole codebook's share: slots use different codes.
    assert float(out.metrics["utilization"]) < float(out.metrics["codebook_utilization"])
    usage = CodebookUsage(q.alphabet_sizes, shared_codebook=q.shares_codebook)
    usage.update(out.codes)
    summary = usage.compute(sync=False)
    assert summary["shared_utilization"] == pytest.approx(float(out.metrics["codebook_utilization"]))
    assert summary["shared_perplexity"] == pytest.approx(float(out.metrics["codebook_perplexity"]), rel=1e-5)
