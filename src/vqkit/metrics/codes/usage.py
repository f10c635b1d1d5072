"""``CodebookUsage``: running collapse diagnostics over many batches.

Per-batch utilization overstates collapse on small batches (a batch of 256 vectors can use at most 256 of 4096
codes); counting over an epoch is what tells a dead code from an unlucky one. The tracker accumulates
code histograms per code position (RVQ level, PVQ group, ...) and reports utilization, perplexity, dead codes
and effective bits (code entropy) next to the nominal bits. ``compute`` all-reduces the counts over the
process group, so every rank reports the global figures.

Where every position indexes one shared codebook (LooC's sub-vectors, residual VQ with ``shared_codebook=True``:
``Quantizer.shares_codebook``), the per-position means above say how each slot uses the codebook, not how much of
the codebook is in use. ``shared_codebook=True`` adds the whole codebook's figures, over the counts pooled across
positions: ``shared_utilization`` (codes used by any position / K), ``shared_perplexity`` (``2^H`` of the pooled
histogram) and ``shared_dead_codes`` (codes no position used). Every other key keeps its meaning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from vqkit import distributed
from vqkit._validate import check_codes_in_range
from vqkit.distributed import ProcessGroup
from vqkit.functional.stats import column_code_counts, entropy_bits

MAX_TRACKED_CODES = 1 << 24


class CodebookUsage(nn.Module):
    """Accumulates code counts per code position.

    Args:
        alphabet_sizes: the quantizer's ``alphabet_sizes`` (one entry per code of a vector).
        process_group: the group ``compute`` all-reduces the counts over (``None``: the default group).
        shared_codebook: every position indexes the same codebook (``quantizer.shares_codebook``; the alphabet
            sizes must then be equal): ``compute`` adds the ``shared_...`` whole-codebook figures.

    Example:
        >>> usage = CodebookUsage(quantizer.alphabet_sizes)
        >>> for batch in loader: usage.update(quantizer(encoder(batch)).codes)
        >>> usage.compute()["utilization"]
    """

    counts: torch.Tensor

    def __init__(
        self,
        alphabet_sizes: Sequence[int],
        process_group: ProcessGroup | None = None,
        *,
        shared_codebook: bool = False,
    ) -> None:
        super().__init__()
        self.alphabet_sizes = tuple(int(k) for k in alphabet_sizes)
        if not self.alphabet_sizes or max(self.alphabet_sizes) > MAX_TRACKED_CODES:
            raise ValueError(
                f"alphabet_sizes: expected 1..{MAX_TRACKED_CODES} codes per position, "
                f"got {list(self.alphabet_sizes)}"
            )
        self.shared_codebook = bool(shared_codebook)
        if self.shared_codebook and len(set(self.alphabet_sizes)) > 1:
            raise ValueError(
                "alphabet_sizes: shared_codebook=True expects one codebook size at every position, "
                f"got {list(self.alphabet_sizes)}"
            )
        self.process_group = process_group
        self.register_buffer(
            "counts", torch.zeros(len(self.alphabet_sizes), max(self.alphabet_sizes), dtype=torch.float64)
        )

    def reset(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def update(self, codes: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add ``codes`` ``[..., C]`` (the ``codes`` of a ``QuantizerOutput``); ``mask`` ``[...]`` (True = real
        position, as given to the quantizer) leaves padded positions out."""
        c = len(self.alphabet_sizes)
        if codes.shape[-1] != c:
            raise ValueError(f"codes: expected shape [..., {c}], got {tuple(codes.shape)}")
        if mask is not None:
            if mask.dtype != torch.bool or tuple(mask.shape) != tuple(codes.shape[:-1]):
                raise ValueError(
                    f"mask: expected a bool tensor of shape {tuple(codes.shape[:-1])}, got {mask.dtype} "
                    f"{tuple(mask.shape)}"
                )
            codes = codes[mask.to(codes.device)]
        flat = codes.reshape(-1, c).long().to(self.counts.device)
        check_codes_in_range(flat, self.alphabet_sizes)
        self.counts += column_code_counts(flat, self.counts.shape[1])

    @torch.no_grad()
    def compute(self, *, sync: bool = True) -> dict[str, float]:
        """Global (all-reduced) diagnostics: ``utilization``, ``perplexity``, ``dead_codes`` (means / sums over
        positions), ``effective_bits`` and ``nominal_bits`` (sums over positions), plus per-position entries
        ``utilization/j``, ``perplexity/j``, ``dead_codes/j`` when there are several codes per vector; with
        ``shared_codebook``, ``shared_utilization``, ``shared_perplexity``, ``shared_dead_codes`` (module docstring).
        ``sync=False``: this process's counts only (no collective; e.g. an evaluation run on one rank)."""
        counts = self.counts.clone()
        if sync:
            counts = distributed.all_reduce_sum_(counts, self.process_group)
        out: dict[str, float] = {}
        utils, perps, deads, bits = [], [], [], []
        for j, size in enumerate(self.alphabet_sizes):
            row = counts[j, :size]
            used = int((row > 0).sum())
            h = float(entropy_bits(row)) if row.sum() > 0 else 0.0
            utils.append(used / size)
            perps.append(2.0**h)
            deads.append(size - used)
            bits.append(h)
        out["utilization"] = sum(utils) / len(utils)
        out["perplexity"] = sum(perps) / len(perps)
        out["dead_codes"] = float(sum(deads))
        out["effective_bits"] = sum(bits)
        out["nominal_bits"] = sum(math.log2(k) for k in self.alphabet_sizes)
        out["num_vectors"] = float(counts[0].sum())
        if len(self.alphabet_sizes) > 1:
            for j in range(len(self.alphabet_sizes)):
                out[f"utilization/{j}"] = utils[j]
                out[f"perplexity/{j}"] = perps[j]
                out[f"dead_codes/{j}"] = float(deads[j])
        if self.shared_codebook:
            out.update(_shared_usage(counts[:, : self.alphabet_sizes[0]].sum(0)))
        return out


def _shared_usage(pooled: torch.Tensor) -> dict[str, float]:
    """The whole codebook's figures from its code counts pooled over positions ``[K]``."""
    used = int((pooled > 0).sum())
    h = float(entropy_bits(pooled)) if pooled.sum() > 0 else 0.0
    return {
        "shared_utilization": used / pooled.shape[0],
        "shared_perplexity": 2.0**h,
        "shared_dead_codes": float(pooled.shape[0] - used),
    }
