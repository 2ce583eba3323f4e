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


def _cpu_ticks() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:]]


class MachineShare:
    """What the machine did while a phase ran, from ``/proc/stat``: how busy its CPUs
    were, and how much of their time the hypervisor gave to other guests (steal). Figures
    from a run with a large steal share are slower for reasons outside the code."""

    def __init__(self) -> None:
        self._start = _cpu_ticks()

    def line(self) -> str:
        delta = [b - a for a, b in zip(self._start, _cpu_ticks(), strict=True)]
        total = sum(delta[:8]) or 1  # user nice system idle iowait irq softirq steal
        idle, steal = delta[3] + delta[4], delta[7]
        return (
            f"machine: CPUs {100 * (total - idle - steal) / total:.0f} % busy,"
            f" {100 * steal / total:.0f} % stolen by the hypervisor"
        )
