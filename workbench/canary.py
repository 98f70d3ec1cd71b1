"""Canary judgement as Spinnaker's Kayenta makes it, as plain functions.

For each metric the canary's samples are compared with the baseline's,
taken over the same period (so both saw the same traffic and the same
time of day), with a Mann–Whitney U test: rank-based, so it needs no
assumption that latencies are normally distributed (they never are).  At
the configured confidence a significant difference is classified ``high``
or ``low`` by the Hodges–Lehmann estimate of the shift (the median of all
pairwise differences canary − baseline); whether that is bad depends on the
metric's direction (latency and errors: ``increase`` is bad; throughput:
``decrease`` is bad; ``either``).  A ``tolerance`` ignores shifts smaller
than that fraction of the baseline median, as Kayenta's effect sizes do.

The score is the weighted share of metrics that pass (0–100).  A failing
*critical* metric fails the canary whatever the score.  Otherwise the score
is compared with the ``pass`` and ``marginal`` thresholds.  A metric with
fewer than ``min_points`` samples on either side cannot be judged: the whole
analysis is then **inconclusive**, and inconclusive (like marginal) asks a
person instead of passing (:class:`CanaryNeedsDecision`).

Pure: lists of numbers in, frozen results out; only scipy for the test.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .errors import UsageError, WorkbenchError

DIRECTIONS = ("increase", "decrease", "either")


class CanaryFailed(WorkbenchError):
    """The canary is worse than the baseline: do not promote it."""


class CanaryNeedsDecision(WorkbenchError):
    """Inconclusive or marginal: the numbers cannot decide, a person must."""


@dataclass(frozen=True)
class Metric:
    """How to judge one metric: which direction is bad, how much matters, whether it is critical."""

    name: str
    direction: str = "increase"  # the direction that is bad
    critical: bool = False
    weight: float = 1.0
    tolerance: float = 0.0  # relative shift of the median to ignore (0.1 = 10 %)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise UsageError(f"metric {self.name}: direction must be one of {', '.join(DIRECTIONS)}, not {self.direction!r}")
        if self.weight <= 0 or self.tolerance < 0:
            raise UsageError(f"metric {self.name}: weight must be > 0 and tolerance >= 0")


@dataclass(frozen=True)
class MetricResult:
    name: str
    classification: str  # same | high | low | nodata
    verdict: str  # pass | fail | nodata
    p_value: float | None
    u_statistic: float | None
    shift: float | None  # Hodges–Lehmann estimate, canary − baseline
    baseline_median: float | None
    canary_median: float | None
    n_baseline: int
    n_canary: int
    critical: bool
    weight: float


@dataclass(frozen=True)
class Judgement:
    result: str  # pass | marginal | fail | inconclusive
    score: float | None  # 0..100; None when inconclusive
    metrics: tuple[MetricResult, ...]
    reason: str
    confidence: float = 0.95
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @property
    def needs_person(self) -> bool:
        return self.result in ("inconclusive", "marginal")

    def raise_for_result(self) -> "Judgement":
        """Fail on ``fail``; ask a person on ``inconclusive``/``marginal``; return self on ``pass``."""
        if self.result == "fail":
            raise CanaryFailed(f"canary failed: {self.reason}")
        if self.needs_person:
            raise CanaryNeedsDecision(f"canary {self.result}: {self.reason}; a person must decide "
                                      "(approve the next stage to promote anyway, or reject it)")
        return self

    def table(self) -> list[dict[str, Any]]:
        """One dict per metric, for a DataFrame in the notebook."""
        return [dict(metric=m.name, verdict=m.verdict, classification=m.classification, p_value=m.p_value,
                     shift=m.shift, baseline_median=m.baseline_median, canary_median=m.canary_median,
                     n_baseline=m.n_baseline, n_canary=m.n_canary, critical=m.critical) for m in self.metrics]


def _clean(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def hodges_lehmann(canary: Sequence[float], baseline: Sequence[float]) -> float:
    """Median of all pairwise differences canary − baseline: the shift the U test is about."""
    return float(statistics.median(c - b for c in canary for b in baseline))


def classify(baseline: Iterable[Any], canary: Iterable[Any], metric: Metric, *, confidence: float = 0.95,
             min_points: int = 10) -> MetricResult:
    """Judge one metric: Mann–Whitney U (two-sided) at ``confidence``, then direction and tolerance."""
    from scipy.stats import mannwhitneyu

    if not 0.5 <= confidence < 1:
        raise UsageError(f"confidence must be at least 0.5 and below 1, not {confidence}")
    b, c = _clean(baseline), _clean(canary)
    base = dict(name=metric.name, n_baseline=len(b), n_canary=len(c), critical=metric.critical, weight=metric.weight)
    if len(b) < min_points or len(c) < min_points:
        return MetricResult(classification="nodata", verdict="nodata", p_value=None, u_statistic=None, shift=None,
                            baseline_median=statistics.median(b) if b else None,
                            canary_median=statistics.median(c) if c else None, **base)
    test = mannwhitneyu(c, b, alternative="two-sided")
    p = float(test.pvalue)
    shift = hodges_lehmann(c, b)
    b_med, c_med = float(statistics.median(b)), float(statistics.median(c))
    classification = "same"
    if p < 1 - confidence and shift != 0:
        big_enough = abs(shift) > metric.tolerance * abs(b_med) if metric.tolerance else True
        if big_enough:
            classification = "high" if shift > 0 else "low"
    bad = {"increase": ("high",), "decrease": ("low",), "either": ("high", "low")}[metric.direction]
    verdict = "fail" if classification in bad else "pass"
    return MetricResult(classification=classification, verdict=verdict, p_value=p, u_statistic=float(test.statistic),
                        shift=shift, baseline_median=b_med, canary_median=c_med, **base)


def judge(samples: Mapping[str, tuple[Iterable[Any], Iterable[Any]]], metrics: Sequence[Metric], *,
          confidence: float = 0.95, pass_threshold: float = 95.0, marginal_threshold: float = 75.0,
          min_points: int = 10) -> Judgement:
    """Judge a canary: ``samples[name] = (baseline values, canary values)`` for each metric."""
    if not metrics:
        raise UsageError("a canary analysis needs at least one metric")
    if not 0 <= marginal_threshold <= pass_threshold <= 100:
        raise UsageError("thresholds must satisfy 0 <= marginal <= pass <= 100")
    thresholds = {"pass": pass_threshold, "marginal": marginal_threshold}
    results = []
    for m in metrics:
        baseline, canary = samples.get(m.name, ((), ()))
        results.append(classify(baseline, canary, m, confidence=confidence, min_points=min_points))
    res = tuple(results)
    nodata = [r for r in res if r.verdict == "nodata"]
    if nodata:
        why = ", ".join(f"{r.name} ({r.n_baseline} baseline / {r.n_canary} canary points)" for r in nodata)
        return Judgement("inconclusive", None, res, f"too few data points (need {min_points} on each side): {why}",
                         confidence, thresholds)
    total = sum(r.weight for r in res)
    score = round(100.0 * sum(r.weight for r in res if r.verdict == "pass") / total, 2)
    failed = [r for r in res if r.verdict == "fail"]
    critical = [r for r in failed if r.critical]
    words = ", ".join(f"{r.name} {r.classification} (p={r.p_value:.3g}, shift {r.shift:+.4g})" for r in failed)
    if critical:
        return Judgement("fail", score, res, f"critical metric failed: {', '.join(r.name for r in critical)}; {words}",
                         confidence, thresholds)
    if score >= pass_threshold:
        result = "pass"
    elif score >= marginal_threshold:
        result = "marginal"
    else:
        result = "fail"
    reason = f"score {score:g} (pass >= {pass_threshold:g}, marginal >= {marginal_threshold:g})"
    return Judgement(result, score, res, reason + (f"; failing: {words}" if failed else ""), confidence, thresholds)


def samples_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Long rows ``{metric, group, value}`` (a CSV, a DataFrame's records) into per-metric samples.

    ``group`` is ``baseline`` or ``canary``; ``value`` may be a number or a
    list of numbers.
    """
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        group = str(row.get("group", "")).strip().lower()
        if group not in ("baseline", "canary"):
            continue
        b, c = out.setdefault(str(row["metric"]), ([], []))
        value = row.get("value")
        values = value if isinstance(value, (list, tuple)) else [value]
        (b if group == "baseline" else c).extend(_clean(values))
    return out


def samples_from_values(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Recorded values (``ws.frames.values`` records) keyed ``baseline.METRIC`` / ``canary.METRIC``."""
    long = []
    for row in rows:
        group, _, metric = str(row.get("key", "")).partition(".")
        if metric:
            long.append({"metric": metric, "group": group, "value": row.get("value")})
    return samples_from_rows(long)
