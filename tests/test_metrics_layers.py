"""The two metric layers: code statistics (``vqkit.metrics.codes``) load without the evaluation metrics."""

from __future__ import annotations

import subprocess
import sys

import vqkit.metrics

# What ``vqkit.metrics`` exported before the split; it still does (plus the rate arithmetic).
NAMES = {
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
}


def test_the_package_keeps_its_public_names() -> None:
    assert set(vqkit.metrics.__all__) >= NAMES
    assert all(hasattr(vqkit.metrics, name) for name in vqkit.metrics.__all__)


def test_importing_the_code_statistics_loads_no_evaluation_metric() -> None:
    heavy = ("vqkit.metrics.eval.", "scipy", "PIL", "torchmetrics", "pystoi", "pesq")
    code = (
        "import sys\nimport vqkit, vqkit.metrics\n"
        f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
