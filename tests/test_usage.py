"""CodebookUsage: running diagnostics over batches."""

from __future__ import annotations

import math

import pytest
import torch

import vqkit
from vqkit.metrics import CodebookUsage


def test_counts_over_batches() -> None:
    usage = CodebookUsage([4, 8])
    usage.update(torch.tensor([[0, 1], [0, 2]]))
    usage.update(torch.tensor([[1, 1], [0, 1]]))
    stats = usage.compute()
    assert stats["utilization/0"] == pytest.approx(2 / 4)
    assert stats["utilization/1"] == pytest.approx(2 / 8)
    assert stats["dead_codes"] == 2 + 6
    # code 0 three times, code 1 once: H = -(3/4 log2 3/4 + 1/4 log2 1/4)
    h0 = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert stats["perplexity/0"] == pytest.approx(2**h0)
    assert stats["nominal_bits"] == pytest.approx(5.0)
    assert stats["num_vectors"] == 4
    usage.reset()
    assert usage.compute()["utilization"] == 0


def test_uniform_use_gives_full_utilization_and_nominal_entropy() -> None:
    usage = CodebookUsage([16])
    usage.update(torch.arange(16).repeat(5)[:, None])
    stats = usage.compute()
    assert stats["utilization"] == 1.0 and stats["perplexity"] == pytest.approx(16)
    assert stats["effective_bits"] == pytest.approx(stats["nominal_bits"])


def test_tracks_a_quantizer_and_rejects_wrong_width() -> None:
    q = vqkit.ResidualVQ(4, 8, num_quantizers=3)
    usage = CodebookUsage(q.alphabet_sizes)
    usage.update(q(torch.randn(10, 4)).codes)
    assert usage.compute()["num_vectors"] == 10
    with pytest.raises(ValueError, match=r"codes: expected shape \[\.\.\., 3\]"):
        usage.update(torch.zeros(5, 2, dtype=torch.long))
