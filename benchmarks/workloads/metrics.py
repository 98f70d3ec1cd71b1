"""Workload (e): every delivery metric over 10k / 100k / 1M synthetic job runs.

The synthetic history, the metrics computed and the baseline (the same core
numbers in a plain per-row Python loop, what a hand-written script does) are
bench_metrics.py's (issue 6's script), imported rather than copied. What this
adds is the growth: cost per 1,000 job runs at each size, and a check that
going 10x bigger costs at most ~10x (linear, or better).
"""
from __future__ import annotations

from typing import Any

from harness import med, timed

from bench_metrics import everything, naive, synthetic  # noqa: E402  (issue 6's script)


def measure(sizes: list[int], repeat: int, *, baseline_max: int = 1_000_000) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for n in sizes:
        h, rule = synthetic(n)  # built with numpy, not timed
        everything(h, rule)  # warm-up (imports, pandas caches)
        ours = med(timed(lambda: everything(h, rule)) for _ in range(repeat))
        # the per-row loop takes ~15 s at 1M: once, and only up to baseline_max
        base = timed(lambda: naive(h, rule)) if n <= baseline_max else float("nan")
        out[n] = {"ours": ours, "naive": base, "runs": len(h.runs)}

    return out
