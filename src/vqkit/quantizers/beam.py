"""Beam-search encoding for residual quantizers (faiss ``ResidualQuantizer.max_beam_size``;
vector-quantize-pytorch ``beam_size``; Babenko & Lempitsky's additive quantization uses the same idea).

Greedy residual encoding picks each level's nearest code for what the earlier levels left, which is not the
best combination. The beam keeps the ``B`` best partial sums per level (by the squared error left, in the
stages' space after ``project_in``): at level ``i`` each of the ``B`` paths is extended by every code of the
level, and the ``B`` smallest errors of the ``B * K`` extensions survive. ``B = 1`` is the greedy search and the
beam of ``prod(K_i)`` the exhaustive one. A beam can prune the greedy path and end worse for a vector, so
``ResidualQuantizer`` keeps the better of the beam and the greedy codes per vector: never above greedy.

Every level must have one code with an alphabet small enough to tabulate (VQ levels, FSQ levels of few
values); the tables are the levels' decoded codes, so any codebook, projection-free stage qualifies.
Memory is ``N x B x K`` distances per level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vqkit.quantizers.base import Quantizer

MAX_TABLE = 1 << 16
"""The largest level alphabet beam search tabulates."""


@torch.no_grad()
def beam_search(
    stages: Sequence[Quantizer], scales: torch.Tensor, h: torch.Tensor, beam_size: int
) -> torch.Tensor:
    """Codes ``[N, L]`` of ``h`` ``[N, d]`` for residual ``stages`` (stage ``i`` contributes ``q_i * scales[i]``),
    the best of ``beam_size`` paths kept at every level."""
    tables = []
    for i, stage in enumerate(stages):
        (size,) = stage.alphabet_sizes if len(stage.alphabet_sizes) == 1 else (0,)
        if not 0 < size <= MAX_TABLE:
            raise ValueError(
                f"beam_size: beam search needs one code of at most {MAX_TABLE} values per level, "
                f"level {i} ({type(stage).__name__}) has alphabets {list(stage.alphabet_sizes)}"
            )
        codes = torch.arange(size, device=h.device)[:, None]
        tables.append(stage._decode(codes) * scales[i])  # [K_i, d]
    n = h.shape[0]
    residual = h[:, None, :]  # [N, b, d]: what each path leaves
    paths = torch.zeros(n, 1, 0, dtype=torch.long, device=h.device)  # [N, b, levels so far]
    for table in tables:
        size = table.shape[0]
        # |r - c|^2 = |r|^2 - 2 r.c + |c|^2 for every path and code: [N, b, K]
        errors = residual.square().sum(-1, keepdim=True) - 2.0 * residual @ table.T + table.square().sum(-1)
        keep = min(beam_size, errors.shape[1] * size)
        _, flat = errors.reshape(n, -1).topk(keep, dim=1, largest=False, sorted=True)
        parent, code = torch.div(flat, size, rounding_mode="floor"), flat % size
        residual = torch.gather(residual, 1, parent[..., None].expand(-1, -1, h.shape[1])) - table[code]
        paths = torch.cat(
            [torch.gather(paths, 1, parent[..., None].expand(-1, -1, paths.shape[2])), code[..., None]], 2
        )
    return paths[:, 0]
