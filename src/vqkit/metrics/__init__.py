"""Metrics: ``CodebookUsage`` (running collapse diagnostics), the collapse study's measures, per-segment usage
and code sharing of compositional quantizers (LooC), and the agreement of two codebooks that share an index
space (IVQ's cross-modal decoding)."""

from vqkit.metrics.alignment import gram_correlation, js_divergence_bits
from vqkit.metrics.collapse import (
    Coverage,
    TokensCollapse,
    code_coverage,
    collapse_scores,
    modes_kept,
    tokens_collapse,
)
from vqkit.metrics.sharing import code_sharing_curve, mean_code_sharing, segment_usage, segment_utilization
from vqkit.metrics.usage import CodebookUsage

__all__ = [
    "CodebookUsage",
    "Coverage",
    "TokensCollapse",
    "code_coverage",
    "code_sharing_curve",
    "collapse_scores",
    "gram_correlation",
    "js_divergence_bits",
    "mean_code_sharing",
    "modes_kept",
    "segment_usage",
    "segment_utilization",
    "tokens_collapse",
]
