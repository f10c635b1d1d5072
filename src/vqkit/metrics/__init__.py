"""Metrics: ``CodebookUsage`` (running collapse diagnostics), the collapse study's measures, and per-segment
usage and code sharing of compositional quantizers (LooC)."""

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
    "mean_code_sharing",
    "modes_kept",
    "segment_usage",
    "segment_utilization",
    "tokens_collapse",
]
