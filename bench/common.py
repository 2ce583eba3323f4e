"""What every benchmark shares: percentiles and one way of printing results.

Machines here are noisy, so a benchmark never reports an absolute time alone: it measures a
baseline in the same run and prints the ratio against it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def report(title: str, rows: Sequence[tuple[str, float, str]], *, baseline: str) -> None:
    """Print a block: each row is (what, value, unit); the baseline row is named."""
    print(f"\n== {title}")
    width = max(len(what) for what, _, _ in rows)
    for what, value, unit in rows:
        marker = "  (baseline)" if what == baseline else ""
        print(f"  {what:<{width}}  {value:>12.3f} {unit}{marker}")


def ratio(title: str, numerator: float, denominator: float, *, target: str = "") -> float:
    value = numerator / denominator if denominator else float("inf")
    suffix = f"   target {target}" if target else ""
    print(f"  ratio {title}: {value:.2f}{suffix}")
    return value
