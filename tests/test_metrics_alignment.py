"""``gram_correlation`` and ``js_divergence_bits`` against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqkit.metrics import gram_correlation, js_divergence_bits


def _gram_correlation_numpy(a: np.ndarray, b: np.ndarray) -> float:
    def cosines(t: np.ndarray) -> np.ndarray:
        unit = t / np.linalg.norm(t, axis=1, keepdims=True)
        return (unit @ unit.T)[np.triu_indices(len(t), k=1)]

    return float(np.corrcoef(cosines(a), cosines(b))[0, 1])


def test_gram_correlation_matches_numpy_and_ignores_rotation_and_width() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 16, generator=g)
    b = torch.randn(64, 8, generator=g)
    assert gram_correlation(a, b) == pytest.approx(_gram_correlation_numpy(a.numpy(), b.numpy()), abs=1e-9)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    wider = torch.cat([a @ rotation, torch.zeros(64, 4)], dim=1)  # same geometry in another basis and width
    assert gram_correlation(a, wider) == pytest.approx(1.0, abs=1e-9)
    assert abs(gram_correlation(a, b)) < 0.1  # independent tables: no shared geometry
    with pytest.raises(ValueError, match=r"a, b: expected two \[K, d\] tables with the same K >= 3"):
        gram_correlation(a, b[:10])


def test_js_divergence_bits() -> None:
    p = torch.tensor([3.0, 1.0, 0.0, 0.0])
    q = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert js_divergence_bits(p, p * 5) == pytest.approx(0.0, abs=1e-12)  # counts or probabilities
    assert js_divergence_bits(p, q) == pytest.approx(1.0)  # disjoint support
    x, y = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.6, 0.3])
    m = (x + y) / 2
    expected = 0.5 * np.sum(x * np.log2(x / m)) + 0.5 * np.sum(y * np.log2(y / m))
    assert js_divergence_bits(torch.tensor(x), torch.tensor(y)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="p, q: expected non-negative histograms"):
        js_divergence_bits(torch.zeros(3), torch.ones(3))
