"""Code statistics: what a quantizer's codes say about its codebook, in pure torch (no extras, no weights).

* ``CodebookUsage`` (``usage``): running utilization, perplexity, dead codes and effective bits over batches;
* ``collapse``: the collapse study's tokens-collapse, embeddings-collapse and coverage measures;
* per-segment usage and code sharing of compositional quantizers (LooC), from ``vqkit.functional.sharing``;
* ``alignment``: the agreement of two codebooks that share an index space (IVQ's cross-modal decoding);
* ``rate``: nominal bits per item, bitrate and bits per pixel.

The evaluation metrics that score reconstructions (and need weights or extras) are in ``vqkit.metrics.eval``.
"""

from vqkit.functional.sharing import code_sharing_curve, mean_code_sharing, segment_usage, segment_utilization
from vqkit.metrics.codes.alignment import gram_correlation, js_divergence_bits
from vqkit.metrics.codes.collapse import (
    Coverage,
    TokensCollapse,
    code_coverage,
    collapse_scores,
    modes_kept,
    tokens_collapse,
)
from vqkit.metrics.codes.rate import bitrate_kbps, bits_per_item, bits_per_pixel
from vqkit.metrics.codes.usage import CodebookUsage

__all__ = [
    "CodebookUsage",
    "Coverage",
    "TokensCollapse",
    "bitrate_kbps",
    "bits_per_item",
    "bits_per_pixel",
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
