"""The project's verdict rule applied to a bench's rows: is method A better than method B on a metric?

``python -m vqkit.train.verdict OUT/results.json "A" "B" [--metric stoi] [--metric pesq ...]``

For each metric, over the seeds each method ran: the means, the margin (A's mean minus B's, signed so that a
positive margin favours A: for lower-is-better metrics, those not in ``HIGHER_IS_BETTER``, it is B's minus
A's), the spread (the larger of the two rows' sample standard deviations) and the verdict:

* ``"confirmed"``: equal rate (the same nominal bits per item), at least 2 seeds each, margin > 2 x spread;
* ``"not confirmed at equal rate"``: equal rate, at least 2 seeds, and the margin is > 2 x spread against A;
* ``"inconclusive"``: the rest (one seed, unequal rates, a margin within twice the spread), with the reason.

docs/reproductions.md ("How verdicts are judged") states the same rule in words; its verdicts come from here.
A bench file's ``claims`` (``vqkit.train.bench_spec``) are judged in its report (``claim_lines``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HIGHER_IS_BETTER = {
    *("psnr", "ssim", "ms_ssim", "stoi", "pesq", "si_sdr", "chroma_similarity"),
    *("codebook/utilization", "codebook/shared_utilization"),
    *("codebook/perplexity", "codebook/effective_bits"),
}
"""The metrics where more is better (the others: MSE, LPIPS, LSD, mel distance, dead codes: lower is better)."""


@dataclass(frozen=True)
class Verdict:
    """One claim "A beats B on ``metric``", judged (module docstring)."""

    metric: str
    mean_a: float
    mean_b: float
    seeds_a: int
    seeds_b: int
    margin: float  # in A's favour
    spread: float  # the larger sample standard deviation (NaN with one seed)
    equal_rate: bool
    label: str
    reason: str

    def line(self) -> str:
        spread = "no spread" if math.isnan(self.spread) else f"2 x spread {2 * self.spread:.4g}"
        return (
            f"{self.metric}: {self.mean_a:.4g} vs {self.mean_b:.4g} ({self.seeds_a} and {self.seeds_b} seeds), "
            f"margin {self.margin:+.4g}, {spread}: {self.label} ({self.reason})"
        )


def _values(rows: list[dict[str, Any]], method: str, metric: str) -> tuple[list[float], set[float]]:
    """The metric of every seed of ``method`` and the rates (bits per item) it ran at."""
    chosen = [r for r in rows if r.get("method") == method and "skipped" not in r]
    if not chosen:
        known = sorted({str(r.get("method")) for r in rows if "skipped" not in r})
        raise ValueError(f"method: expected one of the bench's rows {known}, got {method!r}")
    values = [float(r["metrics"][metric]) for r in chosen if metric in r["metrics"]]
    if not values:
        raise ValueError(f"metric: {method!r} has no {metric!r}; it has {sorted(chosen[0]['metrics'])}")
    return values, {float(r["metrics"].get("bits_per_item", math.nan)) for r in chosen}


def judge(rows: list[dict[str, Any]], a: str, b: str, metric: str) -> Verdict:
    """The verdict on "``a`` beats ``b`` on ``metric``" from a bench's raw rows (``results.json``'s ``rows``)."""
    values_a, rates_a = _values(rows, a, metric)
    values_b, rates_b = _values(rows, b, metric)
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    mean_a, mean_b = statistics.fmean(values_a), statistics.fmean(values_b)
    margin = sign * (mean_a - mean_b)
    several = len(values_a) > 1 and len(values_b) > 1
    spread = max(statistics.stdev(values_a), statistics.stdev(values_b)) if several else math.nan
    equal_rate = len(rates_a | rates_b) == 1
    if not equal_rate:
        label, reason = "inconclusive", f"unequal rates: {sorted(rates_a)} vs {sorted(rates_b)} bits per item"
    elif not several:
        label, reason = "inconclusive", "one seed has no spread"
    elif margin > 2 * spread:
        label, reason = "confirmed", "equal rate, margin above twice the spread"
    elif -margin > 2 * spread:
        label, reason = "not confirmed at equal rate", "the other row wins by more than twice the spread"
    else:
        label, reason = "inconclusive", "the margin is within twice the spread"
    return Verdict(
        metric, mean_a, mean_b, len(values_a), len(values_b), margin, spread, equal_rate, label, reason
    )


def claim_lines(rows: list[dict[str, Any]], claims: list[dict[str, str]]) -> list[str]:
    """The report's "Claims" section: one table row per claim ``{better, than, metric}`` judged on ``rows``; a
    claim whose rows the report lacks (a narrowed ``--methods`` call) says so instead."""
    if not claims:
        return []
    lines = [
        "",
        "## Claims",
        "",
        "Each claim judged by the rule of docs/reproductions.md: confirmed only at equal rate with at least 2 "
        "seeds and a margin above twice the spread (the larger sample standard deviation of the two rows).",
        "",
        "| claim | metric | better | than | margin | 2 x spread | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for claim in claims:
        what = f"{claim['better']} > {claim['than']}"
        try:
            v = judge(rows, claim["better"], claim["than"], claim["metric"])
        except ValueError:  # a row with no finished runs here, or without that metric
            lines.append(f"| {what} | {claim['metric']} | – | – | – | – | not in this report |")
            continue
        spread = "–" if math.isnan(v.spread) else f"{2 * v.spread:.3g}"
        lines.append(
            f"| {what} | {v.metric} | {v.mean_a:.4g} | {v.mean_b:.4g} | {v.margin:+.3g} | {spread} | "
            f"{v.label} ({v.reason}) |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vqkit.train.verdict", description=__doc__.splitlines()[0]
    )
    parser.add_argument("results", type=Path, help="a bench's results.json")
    parser.add_argument("a", help="the row claimed better (its method or label)")
    parser.add_argument("b", help="the row it is compared with")
    parser.add_argument("--metric", action="append", help="metric name (repeatable; default psnr or stoi)")
    args = parser.parse_args(argv)
    try:
        rows = json.loads(args.results.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        parser.error(f"results: cannot read the rows of {str(args.results)!r}: {err}")
    modality = next((r.get("modality") for r in rows if "skipped" not in r), "vector")
    metrics = args.metric or [{"image": "psnr", "audio": "stoi"}.get(str(modality), "mse")]
    try:
        for metric in metrics:
            print(f"{args.a} vs {args.b}: {judge(rows, args.a, args.b, metric).line()}")
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
