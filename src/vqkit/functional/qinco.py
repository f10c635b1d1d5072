"""Path bookkeeping of a residual search whose codewords depend on the path (QINCo's greedy and beam encoding).

A search over residual levels keeps ``B`` paths per vector (``B = 1``: greedy). At each level every path is
extended by ``A`` candidate codewords, and the ``B`` extensions with the smallest squared error survive. With a
fixed codebook the candidates are the same for every path (``vqkit.quantizers.beam`` tabulates them); with
QINCo's implicit codebooks they depend on the path's partial reconstruction, so they come as ``[N, B, A, d]``.
These are the shape-only pieces, tested against loops in ``tests/test_qinco.py``.
"""

from __future__ import annotations

import torch


def squared_errors(residual: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``|r - c|^2`` of each path's residual ``[N, B, d]`` and its candidates ``[N, B, A, d]``: ``[N, B, A]``.

    Formed as the difference (not the ``|r|^2 - 2 r.c + |c|^2`` expansion): the candidates differ per path, so
    the expansion saves no matmul, and the difference has no cancellation."""
    return (residual.unsqueeze(2) - candidates).square().sum(-1)


def best_extensions(errors: torch.Tensor, beam_size: int) -> torch.Tensor:
    """The ``min(beam_size, B * A)`` smallest of ``errors`` ``[N, B, A]`` per row, best first, as flat indices
    ``[N, b]`` into the ``B * A`` extensions (path ``i // A``, candidate ``i % A``). For one survivor the first
    minimum wins, as ``argmin`` (and a loop over the candidates) picks it."""
    n, b, a = errors.shape
    flat = errors.reshape(n, b * a)  # sizes spelled out: -1 is ambiguous for no rows
    if beam_size == 1 or flat.shape[1] == 1:
        return flat.argmin(dim=1, keepdim=True)
    keep = min(beam_size, flat.shape[1])
    return flat.topk(keep, dim=1, largest=False, sorted=True).indices


def take_paths(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``values`` ``[N, P, *rest]`` at ``index`` ``[N, b]`` along dim 1: ``[N, b, *rest]``."""
    shape = (*index.shape, *values.shape[2:])
    return values.gather(1, index.reshape(*index.shape, *([1] * (values.dim() - 2))).expand(shape))
