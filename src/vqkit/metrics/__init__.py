"""Metrics, in two layers.

* ``vqkit.metrics.codes``: code statistics, pure torch and importable from anywhere in the library:
  ``CodebookUsage`` (running collapse diagnostics), the collapse study's measures, per-segment usage and code
  sharing of compositional quantizers (LooC), the agreement of two codebooks that share an index space (IVQ's
  cross-modal decoding) and the rate arithmetic. This package re-exports every one of its public names.
* ``vqkit.metrics.eval``: reconstruction metrics for images and audio (LPIPS, FID, STOI, PESQ...), which need
  weights or extras; ``import vqkit.metrics`` does not load them (import ``vqkit.metrics.eval.image`` etc.).
"""

from vqkit.metrics import codes as _codes
from vqkit.metrics.codes import *  # noqa: F403  (the code statistics: vqkit.metrics.codes.__all__)

__all__ = list(_codes.__all__)
