"""Metrics: ``CodebookUsage`` (running collapse diagnostics) and the collapse study's measures."""

from vqkit.metrics.collapse import Coverage, TokensCollapse, code_coverage, modes_kept, tokens_collapse
from vqkit.metrics.usage import CodebookUsage

__all__ = ["CodebookUsage", "Coverage", "TokensCollapse", "code_coverage", "modes_kept", "tokens_collapse"]
