"""Decoding through a table of every code's output: the out-projection of a few channels into ``D`` is a narrow
matmul that CPU BLAS runs at a fraction of its speed (16,384 x 8 -> 256 took 1.8 ms; the 256-row table and the
gather 0.47 ms), and the table costs ``K d D`` against ``N d D``.

One rule decides (``uses_table``): a learned linear out-projection, an alphabet of at most ``CODE_TABLE_MAX`` codes, at
least four vectors per code, and no graph being traced (the switch is a branch on the batch size, which
``torch.export``'s dynamic batch must not see). ``decode`` and an eval forward take the same path for the same
``N``, so they agree bit for bit. Single-codebook scalar and sign codes (``ChannelQuantizer``) use it.

Not for residual composites (the joint codes of all levels, tried): building the table took a dozen small
kernels per level, and residual LFQ's eval forward at D = 64, 8 bits took 1.18 times as long through the table
as through the out-projection's matmul (1.02 at D = 256; grouped residual LFQ, a table per group: 1.20).
"""

from __future__ import annotations

from torch import nn

from vqkit.types import tracing

CODE_TABLE_MAX = 4096
"""The largest alphabet decoded through a table (the table is ``K x D``: 16 MiB at D = 1024)."""


def uses_table(project_out: nn.Module, num_codes: int, n: int) -> bool:
    """Whether ``n`` codes of an alphabet of ``num_codes`` decode through the table."""
    return (
        isinstance(project_out, nn.Linear)
        and num_codes <= CODE_TABLE_MAX
        and not tracing()
        and n >= 4 * num_codes
    )
