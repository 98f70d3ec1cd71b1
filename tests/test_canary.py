"""Canary statistics against hand-computed cases (workbench.canary is pure)."""
from __future__ import annotations

import pytest

from workbench.canary import (CanaryFailed, CanaryNeedsDecision, Metric, classify, hodges_lehmann, judge,
                              samples_from_rows, samples_from_values)
from workbench.errors import UsageError

LOW = [1, 2, 3, 4, 5]
HIGH = [6, 7, 8, 9, 10]


def test_mann_whitney_on_separated_samples_by_hand() -> None:
    # canary entirely above baseline: U = 5 * 5 = 25, and the exact two-sided
    # p-value is 2 / C(10, 5) = 2 / 252 (only the two extreme rankings are as extreme)
    r = classify(LOW, HIGH, Metric("latency"), min_points=5)
    assert r.u_statistic == 25.0
    assert r.p_value == pytest.approx(2 / 252)
    # pairwise differences 1..9 occur 1,2,3,4,5,4,3,2,1 times: the 13th of 25 is 5
    assert r.shift == 5.0 and hodges_lehmann(HIGH, LOW) == 5.0
    assert (r.classification, r.verdict) == ("high", "fail")
    assert (r.baseline_median, r.canary_median) == (3.0, 8.0)


def test_confidence_decides_significance() -> None:
    # p = 0.0079 is significant at 99 % but not at 99.9 %
    assert classify(LOW, HIGH, Metric("latency"), confidence=0.99, min_points=5).verdict == "fail"
    r = classify(LOW, HIGH, Metric("latency"), confidence=0.999, min_points=5)
    assert (r.classification, r.verdict) == ("same", "pass")


def test_identical_samples_pass() -> None:
    r = classify(LOW, list(LOW), Metric("errors"), min_points=5)
    assert r.p_value == pytest.approx(1.0) and r.u_statistic == 12.5
    assert (r.classification, r.verdict, r.shift) == ("same", "pass", 0.0)


def test_direction_says_which_change_is_bad() -> None:
    lower = classify(HIGH, LOW, Metric("throughput", direction="decrease"), min_points=5)
    assert (lower.classification, lower.verdict) == ("low", "fail")
    higher = classify(LOW, HIGH, Metric("throughput", direction="decrease"), min_points=5)
    assert (higher.classification, higher.verdict) == ("high", "pass")
    assert classify(HIGH, LOW, Metric("x", direction="either"), min_points=5).verdict == "fail"
    assert classify(LOW, HIGH, Metric("latency", direction="increase"), min_points=5).verdict == "fail"
    assert classify(HIGH, LOW, Metric("latency", direction="increase"), min_points=5).verdict == "pass"


def test_tolerance_ignores_small_shifts() -> None:
    base = [100, 101, 102, 103, 104]
    canary = [110, 111, 112, 113, 114]  # shift 10 on a median of 102
    assert classify(base, canary, Metric("latency", tolerance=0.2), min_points=5).verdict == "pass"  # 10 < 20.4
    assert classify(base, canary, Metric("latency", tolerance=0.05), min_points=5).verdict == "fail"  # 10 > 5.1


def test_score_thresholds_and_critical_metrics() -> None:
    samples = {"latency": (LOW, HIGH), "errors": (LOW, LOW), "cpu": (LOW, LOW)}
    equal = [Metric("latency"), Metric("errors"), Metric("cpu")]
    j = judge(samples, equal, min_points=5)
    assert j.score == pytest.approx(66.67) and j.result == "fail"  # 2 of 3 below marginal 75
    weighted = [Metric("latency"), Metric("errors", weight=2), Metric("cpu", weight=2)]
    j = judge(samples, weighted, min_points=5)
    assert j.score == 80.0 and j.result == "marginal" and j.needs_person  # 4/5
    with pytest.raises(CanaryNeedsDecision, match="marginal"):
        j.raise_for_result()
    j = judge(samples, weighted, min_points=5, marginal_threshold=70, pass_threshold=80)
    assert j.result == "pass" and j.raise_for_result() is j
    critical = [Metric("latency", critical=True), Metric("errors", weight=100), Metric("cpu", weight=100)]
    j = judge(samples, critical, min_points=5)
    assert j.score == pytest.approx(99.5) and j.result == "fail" and "critical" in j.reason
    with pytest.raises(CanaryFailed, match="latency"):
        j.raise_for_result()


def test_too_few_points_is_inconclusive_and_asks_a_person() -> None:
    samples = {"latency": ([1, 2, 3], [1, 2, 3]), "errors": (LOW * 3, LOW * 3)}
    j = judge(samples, [Metric("latency"), Metric("errors")], min_points=10)
    assert j.result == "inconclusive" and j.score is None
    assert "latency (3 baseline / 3 canary points)" in j.reason
    with pytest.raises(CanaryNeedsDecision, match="inconclusive.*a person must decide"):
        j.raise_for_result()
    missing = judge({}, [Metric("latency")], min_points=1)
    assert missing.result == "inconclusive"


def test_inputs_from_rows_and_recorded_values() -> None:
    rows = [{"metric": "latency", "group": "baseline", "value": 1}, {"metric": "latency", "group": "canary", "value": [2, 3]},
            {"metric": "latency", "group": "other", "value": 9}, {"metric": "latency", "group": "Canary", "value": "nan"}]
    assert samples_from_rows(rows) == {"latency": ([1.0], [2.0, 3.0])}
    values = [{"key": "baseline.p95_ms", "value": [100, 101]}, {"key": "canary.p95_ms", "value": 120},
              {"key": "unrelated", "value": 1}]
    assert samples_from_values(values) == {"p95_ms": ([100.0, 101.0], [120.0])}


def test_bad_configuration_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Metric("x", direction="up")
    with pytest.raises(UsageError):
        judge({}, [])
    with pytest.raises(UsageError):
        classify(LOW, HIGH, Metric("x"), confidence=1.5)


# -- the shipped notebook, standalone and as a stage job --------------------------

import csv  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "canary_analysis.ipynb"


def write_samples(path: Path, n: int, canary_latency_shift: float = 0.0) -> Path:
    rnd = random.Random(7)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["metric", "group", "value"])
        for _ in range(n):
            for group, shift in (("baseline", 0.0), ("canary", canary_latency_shift)):
                w.writerow(["latency_ms", group, round(rnd.gauss(200, 10) + shift, 2)])
                w.writerow(["error_rate", group, round(abs(rnd.gauss(0.01, 0.002)), 5)])
    return path


def papermill(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / "out.ipynb"),
                           "--no-progress-bar", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.mark.timeout(180)
def test_canary_notebook_standalone_with_papermill_cli(tmp_path: Path) -> None:
    good = papermill(tmp_path, "-p", "csv_path", str(write_samples(tmp_path / "good.csv", 40)))
    assert good.returncode == 0, good.stderr
    out = (tmp_path / "out.ipynb").read_text()
    assert "canary pass" in out and "canary passed" in out

    import papermill as pm  # the failing case through papermill's Python API (same notebook, no workbench job)

    with pytest.raises(pm.PapermillExecutionError, match="CanaryFailed"):
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "bad.ipynb"), progress_bar=False, cwd=str(tmp_path),
                            parameters={"csv_path": str(write_samples(tmp_path / "bad.csv", 40, canary_latency_shift=60))})
    assert "latency_ms high" in (tmp_path / "bad.ipynb").read_text()

    few = papermill(tmp_path, "-p", "csv_path", str(write_samples(tmp_path / "few.csv", 4)))
    assert few.returncode != 0
    text = (tmp_path / "out.ipynb").read_text()
    assert "CanaryNeedsDecision" in text and "inconclusive" in text and "a person must decide" in text


@pytest.mark.timeout(120)
def test_canary_notebook_as_a_stage_job_reads_recorded_values(tmp_path: Path) -> None:
    from workbench import Workspace
    from workbench.config.model import Config, Job, NotebookTask, Pipeline, ScriptTask, Stage
    from workbench.status import Status

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "canary_analysis.ipynb").write_bytes(NOTEBOOK.read_bytes())
    rnd = random.Random(3)
    values = {f"{g}.{m}": [round(abs(rnd.gauss(mu, sd)), 5) for _ in range(n)]
              for g in ("baseline", "canary") for m, mu, sd, n in (("latency_ms", 200, 10, 30), ("error_rate", 0.01, 0.002, 3))}
    record = "; ".join(f"record({k!r}, {v!r})" for k, v in values.items())
    p = Pipeline("release", (
        Stage("measure", (Job("collect", (ScriptTask(f"{sys.executable} -c \"from workbench.record import record; {record}\""),)),)),
        Stage("judge", (Job("canary", (NotebookTask("notebooks/canary_analysis.ipynb", {"min_points": 10}),)),)),
    ))
    ws = Workspace.open(tmp_path)
    ws.__dict__["config"] = Config(pipelines={"release": p})
    run = ws.run("release")
    assert run.status == Status.FAILED  # error_rate has 3 points: inconclusive, a person decides
    nr = ws.frames.notebook_runs.iloc[0]
    assert nr["ename"] == "CanaryNeedsDecision" and "too few data points" in nr["evalue"]
    recorded = ws.frames.values.set_index("key")["value"]
    assert recorded["canary.result"] == "inconclusive"
    assert json.loads(json.dumps(recorded["baseline.latency_ms"])) == values["baseline.latency_ms"]
