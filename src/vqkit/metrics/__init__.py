"""Metrics. ``CodebookUsage`` tracks collapse diagnostics over many batches."""

from vqkit.metrics.usage import CodebookUsage

__all__ = ["CodebookUsage"]
