"""Metrics, in two layers.

* ``vqkit.metrics.codes``: code statistics, pure torch and importable from anywhere in the library:
  ``CodebookUsage`` (running collapse diagnostics), the collapse study's measures, per-segment usage and code
  sharing of compositional quantizers (LooC), the agreement of two codebooks that share an index space (IVQ's
  cross-modal decoding) and the rate arithmetic. This package re-exports its public names (except the rate
  functions, which stay under ``vqkit.metrics.codes``).
* ``vqkit.metrics.eval``: reconstruction metrics for images and audio (LPIPS, FID, STOI, PESQ...), which need
  weights or extras; ``import vqkit.metrics`` does not load them.
"""

from vqkit.metrics.codes import (
    CodebookUsage,
    Coverage,
    TokensCollapse,
    code_coverage,
    code_sharing_curve,
    collapse_scores,
    gram_correlation,
    js_divergence_bits,
    mean_code_sharing,
    modes_kept,
    segment_usage,
    segment_utilization,
    tokens_collapse,
)

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
