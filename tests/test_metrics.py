"""The metrics against hand-computed expectations, on hand-built frames.

Every history here is small enough to check on paper; the comment above each
expectation is the hand computation. Times are UTC unless a test is about
time zones. 2024-03-03 is a Sunday (Four Keys' weeks start on Sunday).
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from workbench.config.model import Config, Environment, Job, Pipeline, Stage, Traffic
from workbench.metrics import (DeployRule, History, Metrics, Period, bands, deployment_counts, deployments,
                               failure_rates, frequency_bucket, lead_times, reruns, stage_times, summary)

BASE = pd.Timestamp("2024-03-03 00:00", tz="UTC")


def at(day: float, hour: float = 0, minute: float = 0) -> pd.Timestamp:
    return BASE + pd.Timedelta(days=day, hours=hour, minutes=minute)


H = pd.Timedelta(hours=1)
D = pd.Timedelta(days=1)


class Build:
    """A history by hand: runs with stages, commits, provenance, incidents, marks, rollbacks."""

    def __init__(self) -> None:
        self.runs: list[dict] = []
        self.stages: list[dict] = []
        self.jobs: list[dict] = []
        self.commits: list[dict] = []
        self.prov: list[dict] = []
        self.incidents: list[dict] = []
        self.marks: list[dict] = []
        self.rollbacks: list[dict] = []
        self.approvals: list[dict] = []

    def run(self, pipeline: str, stages: list[tuple], *, status: str | None = None, group: str = "shops",
            env: str | None = None, upstream: list[int] = ()) -> int:
        """``stages``: (name, status, start, end[, approval_type, created, stage_counter])."""
        rid = len(self.runs) + 1
        counter = 1 + sum(r["pipeline"] == pipeline for r in self.runs)
        if status is None:
            status = "passed" if all(s[1] == "passed" for s in stages) else next(s[1] for s in stages if s[1] != "passed")
        starts = [s[2] for s in stages if s[2] is not None]
        ends = [s[3] for s in stages if s[3] is not None]
        self.runs.append(dict(run_id=rid, pipeline=pipeline, counter=counter, label=f"{pipeline}-{counter}",
                              group_name=group, environment=env, status=status,
                              created_at=min(starts) if starts else None, started_at=min(starts) if starts else None,
                              finished_at=max(ends) if ends and status not in ("running", "waiting") else None))
        for pos, s in enumerate(stages):
            name, st, start, end = s[:4]
            approval = s[4] if len(s) > 4 else "success"
            created = s[5] if len(s) > 5 else start
            sc = s[6] if len(s) > 6 else 1
            sid = len(self.stages) + 1
            self.stages.append(dict(stage_run_id=sid, run_id=rid, pipeline=pipeline, counter=counter, stage=name,
                                    position=pos, stage_counter=sc, status=st, approval_type=approval,
                                    created_at=created, started_at=start, finished_at=end))
        for up in upstream:
            self.prov.append(dict(upstream_run_id=up, downstream_run_id=rid))
        return rid

    def job(self, stage_run_id: int, name: str, status: str) -> None:
        s = self.stages[stage_run_id - 1]
        self.jobs.append(dict(job_run_id=len(self.jobs) + 1, stage_run_id=stage_run_id, run_id=s["run_id"],
                              pipeline=s["pipeline"], stage=s["stage"], stage_counter=s["stage_counter"], job=name,
                              status=status, started_at=s["started_at"], finished_at=s["finished_at"]))

    def commit(self, sha: str, when: pd.Timestamp | str, run_id: int, material: str = "repo") -> None:
        self.commits.append(dict(sha=sha, material=material, author="dev", author_time=when, commit_time=when,
                                 pipeline_run_id=run_id))

    def incident(self, opened: pd.Timestamp, resolved: pd.Timestamp | None, caused_by: int | None) -> int:
        iid = len(self.incidents) + 1
        self.incidents.append(dict(incident_id=iid, title=f"i{iid}", severity="major", opened_at=opened,
                                   resolved_at=resolved, caused_by_run_id=caused_by))
        return iid

    def history(self) -> History:
        def frame(rows: list[dict]) -> pd.DataFrame | None:
            return pd.DataFrame(rows) if rows else None

        return History.of(runs=frame(self.runs), stages=frame(self.stages), jobs=frame(self.jobs),
                          commits=frame(self.commits), provenance=frame(self.prov), incidents=frame(self.incidents),
                          marks=frame(self.marks), rollbacks=frame(self.rollbacks), approvals=frame(self.approvals))


# prod: build (not production) → canary (traffic step) → full (the last stage: the deploy point)
RULE = DeployRule.explicit({"prod": ["full"]}, rollout={"prod": ["canary"]}, group={"prod": "shops"},
                           environment={"prod": "production"})


def ok_deploy(b: Build, day: float, hour: float, **kw) -> int:
    """A prod run passing canary at hour and full 30 minutes later (deployed at hour:30)."""
    kw.setdefault("env", "production")
    return b.run("prod", [("build", "passed", at(day, hour - 1), at(day, hour - 1, 10)),
                          ("canary", "passed", at(day, hour), at(day, hour, 10)),
                          ("full", "passed", at(day, hour, 20), at(day, hour, 30))], **kw)


# -- edge case: no deployments ------------------------------------------------------------


def test_no_history_gives_one_empty_row():
    m = Metrics(History.of(), RULE)
    s = m.summary
    assert list(s.index) == ["all"]
    row = s.loc["all"]
    assert row["deployments"] == 0 and row["commits"] == 0
    assert math.isnan(row["change_fail_rate"]) and math.isnan(row["rework_rate"])
    assert row["lead_time_median"] is pd.NaT and row["recovery_median"] is pd.NaT
    assert row["change_fail_rate_band"] is None and row["lead_time_band"] is None
    assert m.lead_times.empty and m.deployments.empty
    assert m.frequency().empty


def test_runs_that_never_reach_production_are_no_deployments():
    b = Build()
    # build failed: production untouched
    b.run("prod", [("build", "failed", at(0, 9), at(0, 9, 5))], env="production")
    # rejected before the canary started
    b.run("prod", [("build", "passed", at(1, 9), at(1, 9, 5)), ("canary", "rejected", None, at(1, 12), "manual", at(1, 9, 5))],
          status="rejected", env="production")
    # a pipeline outside production passing its last stage
    b.run("qa", [("full", "passed", at(2, 9), at(2, 10))])
    h = b.history()
    assert deployments(h, RULE).empty
    s = summary(deployments(h, RULE), lead_times(h, deployments(h, RULE)), Period.of("2024-03-03", "2024-03-10"))
    # an explicit period of 7 days with nothing in it: zero per day, Yearly bucket, low band
    assert s.loc["all", "deployments"] == 0
    assert s.loc["all", "per_day"] == 0
    assert s.loc["all", "deployment_frequency_band"] == "low"


# -- deployments, failures, recovery ----------------------------------------------------------


def test_succeeded_failed_and_recovered_by_next_deployment():
    b = Build()
    d1 = ok_deploy(b, 0, 10)  # deployed 03-03 10:30
    d2 = b.run("prod", [("build", "passed", at(1, 9), at(1, 9, 10)), ("canary", "failed", at(1, 10), at(1, 10, 5))],
               env="production")  # production changed at 03-04 10:00, then failed
    b.run("prod", [("build", "failed", at(1, 12), at(1, 12, 5))], env="production")  # no deployment
    d4 = ok_deploy(b, 2, 12)  # deployed 03-05 12:30
    h = b.history()
    dep = deployments(h, RULE)
    assert list(dep["run_id"]) == [d1, d2, d4]
    assert list(dep["outcome"]) == ["succeeded", "failed", "succeeded"]
    assert list(dep["at"]) == [at(0, 10, 30), at(1, 10), at(2, 12, 30)]
    assert list(dep["failed_change"]) == [False, True, False]
    # d2 recovered by the next successful deployment: 03-04 10:00 → 03-05 12:30 = 26h30
    assert dep.loc[1, "recovery_time"] == pd.Timedelta(hours=26, minutes=30)
    s = summary(dep, lead_times(h, dep))
    row = s.loc["all"]
    assert (row["deployments"], row["successful"], row["failed"]) == (3, 2, 1)
    # 3 deployments over 03-03..03-05 (3 calendar days) = 1 per day: elite (on demand)
    assert row["per_day"] == pytest.approx(1.0)
    assert row["deployment_frequency_band"] == "elite"
    assert row["change_fail_rate"] == pytest.approx(1 / 3)
    assert row["change_fail_rate_band"] == "low"  # 33% > 20% (high) and ≤ 40% (low)
    assert row["recovery_median"] == pd.Timedelta(hours=26, minutes=30)
    assert row["recovery_band"] == "low"  # more than a day
    assert row["rework_rate"] == 0


def test_a_rollback_is_a_failed_change_recovered_when_rolled_back():
    b = Build()
    d1 = ok_deploy(b, 0, 10)
    d2 = ok_deploy(b, 1, 10)  # deployed 03-04 10:30
    b.rollbacks.append(dict(run_id=d2, at=at(1, 11, 15)))
    b.rollbacks.append(dict(run_id=d2, at=at(1, 12)))  # a second record of the same run: the first counts
    dep = deployments(b.history(), RULE)
    row = dep.set_index("run_id").loc[d2]
    assert row["failed_change"] and row["rolled_back_at"] == at(1, 11, 15)
    assert row["recovery_time"] == pd.Timedelta(minutes=45)
    assert not dep.set_index("run_id").loc[d1, "failed_change"]
    s = summary(dep, lead_times(b.history(), dep))
    assert s.loc["all", "change_fail_rate"] == 0.5  # 1 of 2
    assert s.loc["all", "recovery_band"] == "elite"  # 45 minutes: less than one hour


def test_rollback_during_the_rollout_fails_the_deployment():
    b = Build()
    d = b.run("prod", [("build", "passed", at(0, 9), at(0, 9, 10)), ("canary", "passed", at(0, 10), at(0, 10, 10)),
                       ("full", "cancelled", None, at(0, 11), "manual", at(0, 10, 10))], status="failed", env="production")
    b.rollbacks.append(dict(run_id=d, at=at(0, 11)))
    dep = deployments(b.history(), RULE)
    assert list(dep["outcome"]) == ["failed"]
    assert dep.loc[0, "at"] == at(0, 10)  # production first changed when the canary started
    assert dep.loc[0, "recovery_time"] == pd.Timedelta(hours=1)


# -- lead time ------------------------------------------------------------------------------


def _ci(b: Build, day: float, hour: float) -> int:
    return b.run("build", [("compile", "passed", at(day, hour), at(day, hour, 5))])


def test_lead_time_per_commit_to_first_deployment_through_provenance():
    b = Build()
    c1 = _ci(b, 0, 8)
    b.commit("a1", at(0, 7), c1)  # committed 07:00
    b.commit("a2", at(0, 7, 30), c1)
    d1 = ok_deploy(b, 0, 10, upstream=[c1])  # deployed 10:30
    c2 = _ci(b, 1, 8)
    b.commit("b1", at(0, 22), c2)
    d2 = ok_deploy(b, 1, 10, upstream=[c2])  # deployed 03-04 10:30
    h = b.history()
    dep = deployments(h, RULE)
    lt = lead_times(h, dep).set_index("sha")
    # a1: 07:00 → 10:30 = 3h30; a2: 3h; b1: 03-03 22:00 → 03-04 10:30 = 12h30
    assert lt.loc["a1", "lead_time"] == pd.Timedelta(hours=3, minutes=30)
    assert lt.loc["a2", "lead_time"] == pd.Timedelta(hours=3)
    assert lt.loc["b1", "lead_time"] == pd.Timedelta(hours=12, minutes=30)
    assert lt.loc["a1", "deployment_run_id"] == d1 and lt.loc["b1", "deployment_run_id"] == d2
    s = summary(dep, lead_times(h, dep)).loc["all"]
    assert s["commits"] == 3
    assert s["lead_time_median"] == pd.Timedelta(hours=3, minutes=30)  # median of 3h, 3h30, 12h30
    assert s["lead_time_band"] == "elite"  # less than a day


def test_a_deployment_with_no_new_commits():
    b = Build()
    c1 = _ci(b, 0, 8)
    b.commit("a1", at(0, 7), c1)
    ok_deploy(b, 0, 10, upstream=[c1])
    d2 = ok_deploy(b, 1, 10, upstream=[c1])  # the same build again: no commit is new
    h = b.history()
    dep = deployments(h, RULE)
    lt = lead_times(h, dep)
    assert len(dep) == 2 and len(lt) == 1
    assert d2 not in set(lt["deployment_run_id"])
    s = summary(dep, lt).loc["all"]
    assert s["deployments"] == 2 and s["commits"] == 1
    assert s["lead_time_median"] == pd.Timedelta(hours=3, minutes=30)


def test_a_commit_deployed_twice_counts_its_first_deployment_once():
    b = Build()
    c1 = _ci(b, 0, 8)
    b.commit("a1", at(0, 7), c1)
    d1 = ok_deploy(b, 0, 10, upstream=[c1])
    c2 = _ci(b, 1, 8)
    b.commit("a1", at(0, 7), c2)  # recorded again on a later build (e.g. a second material, a rebuild)
    b.commit("b1", at(1, 7), c2)
    ok_deploy(b, 1, 10, upstream=[c2])
    h = b.history()
    lt = lead_times(h, deployments(h, RULE))
    assert sorted(lt["sha"]) == ["a1", "b1"]
    a1 = lt.set_index("sha").loc["a1"]
    assert a1["deployment_run_id"] == d1 and a1["lead_time"] == pd.Timedelta(hours=3, minutes=30)


def test_commit_of_an_undeployed_build_is_carried_by_a_later_build():
    b = Build()
    c1 = _ci(b, 0, 8)  # built but never deployed
    b.commit("a1", at(0, 7), c1)
    c2 = _ci(b, 1, 8)
    b.commit("b1", at(1, 7), c2)
    d = ok_deploy(b, 1, 10, upstream=[c2])  # build/2 contains a1 too: the branch moves forward
    h = b.history()
    lt = lead_times(h, deployments(h, RULE)).set_index("sha")
    assert lt.loc["a1", "deployment_run_id"] == d
    assert lt.loc["a1", "lead_time"] == pd.Timedelta(days=1, hours=3, minutes=30)


def test_non_positive_lead_times_are_excluded_and_undeployed_commits_not_counted():
    b = Build()
    c1 = _ci(b, 0, 8)
    b.commit("future", at(0, 11), c1)  # a commit dated after its deployment (clock skew)
    b.commit("ok", at(0, 9), c1)
    ok_deploy(b, 0, 10, upstream=[c1])
    c2 = _ci(b, 1, 8)
    b.commit("waiting", at(1, 7), c2)  # not deployed yet
    h = b.history()
    dep = deployments(h, RULE)
    lt = lead_times(h, dep).set_index("sha")
    assert not lt.loc["future", "counted"] and lt.loc["future", "lead_time"] == -pd.Timedelta(minutes=30)
    assert not lt.loc["waiting", "counted"] and lt.loc["waiting", "deployed_at"] is pd.NaT
    s = summary(dep, lead_times(h, dep)).loc["all"]
    assert s["commits"] == 1 and s["lead_time_median"] == pd.Timedelta(hours=1, minutes=30)


def test_lead_time_through_a_fan_in_and_two_levels_of_provenance():
    b = Build()
    api = b.run("api", [("build", "passed", at(0, 8), at(0, 8, 5))])
    ui = b.run("ui", [("build", "passed", at(0, 8), at(0, 8, 5))])
    b.commit("api1", at(0, 6), api)
    b.commit("ui1", at(0, 5), ui)
    qa = b.run("qa", [("install", "passed", at(0, 9), at(0, 9, 5))], upstream=[api, ui])
    ok_deploy(b, 0, 10, upstream=[qa])
    h = b.history()
    lt = lead_times(h, deployments(h, RULE)).set_index("sha")
    assert lt.loc["api1", "lead_time"] == pd.Timedelta(hours=4, minutes=30)
    assert lt.loc["ui1", "lead_time"] == pd.Timedelta(hours=5, minutes=30)


# -- incidents, hotfixes, rework ----------------------------------------------------------------


def test_an_incident_spanning_two_deployments_counts_once_and_recovers_at_the_hotfix():
    b = Build()
    d1 = ok_deploy(b, 0, 10)  # 03-03 10:30
    iid = b.incident(at(0, 14), at(2, 9), caused_by=d1)  # open from 03-03 14:00 to 03-05 09:00
    d2 = ok_deploy(b, 1, 10)  # 03-04 10:30, deployed while the incident was open, not a fix
    d3 = ok_deploy(b, 1, 16)  # 03-04 16:30, the hotfix
    b.marks.append(dict(run_id=d3, mark="hotfix", incident_id=iid))
    h = b.history()
    dep = deployments(h, RULE).set_index("run_id")
    assert list(dep["failed_change"]) == [True, False, False]
    assert dep.loc[d1, "incidents"] == 1 and dep.loc[d2, "incidents"] == 0
    assert dep.loc[d1, "hotfix_followed"]
    # d1 recovered when the hotfix deployed: 03-03 10:30 → 03-04 16:30 = 30h
    assert dep.loc[d1, "recovery_time"] == pd.Timedelta(hours=30)
    s = summary(deployments(h, RULE), lead_times(h, deployments(h, RULE))).loc["all"]
    assert s["change_fail_rate"] == pytest.approx(1 / 3)
    assert s["rework_rate"] == pytest.approx(1 / 3)  # d3 is unplanned work because of the incident
    assert s["recovered"] == 1 and s["unrecovered"] == 0


def test_incident_without_a_fix_recovers_when_resolved_and_open_ones_stay_unrecovered():
    b = Build()
    d1 = ok_deploy(b, 0, 10)
    b.incident(at(0, 12), at(0, 18), caused_by=d1)  # resolved 18:00: 7h30 after 10:30
    d2 = ok_deploy(b, 1, 10)
    b.incident(at(1, 12), None, caused_by=d2)  # still open
    b.incident(at(1, 13), at(1, 14), caused_by=d2)  # a second one on d2, resolved
    dep = deployments(b.history(), RULE).set_index("run_id")
    assert dep.loc[d1, "recovery_time"] == pd.Timedelta(hours=7, minutes=30)
    assert dep.loc[d2, "incidents"] == 2 and dep.loc[d2, "restored_at"] is pd.NaT
    s = summary(dep.reset_index(), lead_times(b.history(), dep.reset_index())).loc["all"]
    assert s["failed_changes"] == 2  # d2 counts once despite two incidents
    assert (s["recovered"], s["unrecovered"]) == (1, 1)


def test_unlinked_incident_goes_to_the_latest_deployment_before_it():
    b = Build()
    ok_deploy(b, 0, 10)
    d2 = ok_deploy(b, 1, 10)
    ok_deploy(b, 2, 10)
    b.incident(at(1, 20), at(1, 22), caused_by=None)
    dep = deployments(b.history(), RULE).set_index("run_id")
    assert dep["failed_change"].tolist() == [False, True, False]
    assert dep.loc[d2, "recovery_time"] == pd.Timedelta(hours=11, minutes=30)


def test_hotfix_without_incident_fixes_the_previous_deployment_and_unplanned_counts_as_rework():
    b = Build()
    d1 = ok_deploy(b, 0, 10)
    d2 = ok_deploy(b, 0, 15)
    d3 = ok_deploy(b, 1, 10)
    b.marks.append(dict(run_id=d2, mark="hotfix", incident_id=None))
    b.marks.append(dict(run_id=d3, mark="unplanned", incident_id=None))
    dep = deployments(b.history(), RULE).set_index("run_id")
    assert dep.loc[d1, "hotfix_followed"] and dep.loc[d1, "recovery_time"] == pd.Timedelta(hours=5)
    assert dep["rework"].tolist() == [False, True, True]
    s = summary(dep.reset_index(), lead_times(b.history(), dep.reset_index())).loc["all"]
    assert s["rework_rate"] == pytest.approx(2 / 3)
    assert s["change_fail_rate"] == pytest.approx(1 / 3)


# -- periods, groupings, time zones ---------------------------------------------------------------


def test_period_bounds_and_naive_bounds_in_a_time_zone():
    b = Build()
    ok_deploy(b, 0, 22)  # 03-03 22:30 UTC = 03-03 23:30 in Berlin (CET, +1)
    ok_deploy(b, 0, 23)  # 03-03 23:30 UTC = 03-04 00:30 in Berlin
    h = b.history()
    dep = deployments(h, RULE)
    utc_days = deployment_counts(dep, Period.of(tz="UTC"))
    assert utc_days["deployments"].tolist() == [2]  # both on 03-03 in UTC
    berlin = deployment_counts(dep, Period.of(tz="Europe/Berlin"))
    assert berlin["deployments"].tolist() == [1, 1]  # one each on 03-03 and 03-04 in Berlin
    assert str(berlin["period"].iloc[1]) == "2024-03-04 00:00:00+01:00"
    # "until 2024-03-04" read in Berlin is 03-03 23:00 UTC: only the first deployment is before it
    s = summary(dep, lead_times(h, dep), Period.of(until="2024-03-04", tz="Europe/Berlin")).loc["all"]
    assert s["deployments"] == 1
    s = summary(dep, lead_times(h, dep), Period.of(until="2024-03-04", tz="UTC")).loc["all"]
    assert s["deployments"] == 2
    # an aware bound is taken as it is, whatever tz says
    s = summary(dep, lead_times(h, dep), Period.of(since="2024-03-03T23:00:00+00:00", tz="Asia/Tokyo")).loc["all"]
    assert s["deployments"] == 1


def test_commit_times_with_offsets():
    b = Build()
    c = _ci(b, 0, 8)
    b.commit("x", "2024-03-03T14:00:00+05:00", c)  # 09:00 UTC
    b.commit("y", "2024-03-03T01:00:00-06:00", c)  # 07:00 UTC
    ok_deploy(b, 0, 10)
    b.prov.append(dict(upstream_run_id=c, downstream_run_id=2))
    h = b.history()
    lt = lead_times(h, deployments(h, RULE)).set_index("sha")
    assert lt.loc["x", "lead_time"] == pd.Timedelta(hours=1, minutes=30)
    assert lt.loc["y", "lead_time"] == pd.Timedelta(hours=3, minutes=30)


def test_grouping_by_pipeline_group_and_environment():
    rule = DeployRule.explicit({"prod": ["full"], "batch": ["deploy"]}, rollout={"prod": ["canary"]},
                               environment={"prod": "production", "batch": "production-eu"},
                               group={"prod": "shops", "batch": "backoffice"})
    b = Build()
    ok_deploy(b, 0, 10, env="production")
    b.run("batch", [("deploy", "passed", at(0, 11), at(0, 12))], group="backoffice", env=None)  # env from config
    b.run("batch", [("deploy", "failed", at(1, 11), at(1, 12))], group="backoffice")
    h = b.history()
    dep = deployments(h, rule)
    lt = lead_times(h, dep)
    by_p = summary(dep, lt, by="pipeline")
    assert list(by_p.index) == ["batch", "prod"]
    assert by_p.loc["batch", "deployments"] == 2 and by_p.loc["batch", "change_fail_rate"] == 0.5
    assert by_p.loc["prod", "deployments"] == 1 and by_p.loc["prod", "change_fail_rate"] == 0
    by_e = summary(dep, lt, by="environment")
    assert list(by_e.index) == ["production", "production-eu"]
    by_g = summary(dep, lt, by="group")
    assert by_g.loc["backoffice", "failed"] == 1
    counts = deployment_counts(dep, by="pipeline")
    assert counts.groupby("pipeline")["deployments"].sum().to_dict() == {"batch": 2, "prod": 1}
    with pytest.raises(Exception, match="cannot group"):
        summary(dep, lt, by="colour")


# -- deployment frequency buckets -------------------------------------------------------------------


def _times(days: list[float]) -> pd.Series:
    return pd.Series([at(d, 12) for d in days])


def test_frequency_bucket_daily_weekly_monthly_yearly():
    four_weeks = Period.of("2024-03-03", "2024-03-31")  # Sunday to Sunday: 4 whole weeks
    weekdays = [w * 7 + d for w in range(4) for d in range(1, 6)]
    assert frequency_bucket(_times(weekdays), four_weeks) == "Daily"  # 5 deployment days every week
    assert frequency_bucket(_times([w * 7 + d for w in range(4) for d in (1, 3)]), four_weeks) == "Weekly"  # 2 a week
    assert frequency_bucket(_times([1, 8, 22]), four_weeks) == "Weekly"  # 3 of 4 weeks: median week has one
    assert frequency_bucket(_times([1, 8]), four_weeks) == "Monthly"  # median week: none; the month has 2 weeks
    quarter = Period.of("2024-03-03", "2024-06-02")  # 13 weeks
    # one deployment week in each of March, April and May
    assert frequency_bucket(_times([3, 33, 63]), quarter) == "Monthly"
    assert frequency_bucket(_times([3]), quarter) == "Yearly"  # only March's weeks have one: median 0
    assert frequency_bucket(_times([]), Period()) is None


def test_deployment_counts_fill_empty_weeks():
    b = Build()
    ok_deploy(b, 1, 10)  # Monday 03-04
    ok_deploy(b, 15, 10)  # Monday 03-18
    dep = deployments(b.history(), RULE)
    weekly = deployment_counts(dep, freq="W")
    assert weekly["deployments"].tolist() == [1, 0, 1]
    assert [str(p.date()) for p in weekly["period"]] == ["2024-03-03", "2024-03-10", "2024-03-17"]


# -- bands ----------------------------------------------------------------------------------------------


def test_dora_2024_bands_including_their_quirks():
    assert bands.frequency_band(3.0) == "elite"
    assert bands.frequency_band(0.5) == "high"  # between once a day and once a week
    assert bands.frequency_band(1 / 14) == "medium"
    assert bands.frequency_band(1 / 60) == "low"
    assert bands.frequency_band(1 / 400) == "low"  # worse than every level
    assert bands.lead_time_band(pd.Timedelta(hours=23)) == "elite"
    assert bands.lead_time_band(pd.Timedelta(days=3)) == "high"
    assert bands.lead_time_band(pd.Timedelta(days=20)) == "medium"
    assert bands.lead_time_band(pd.Timedelta(days=90)) == "low"
    assert bands.change_fail_band(0.05) == "elite"
    assert bands.change_fail_band(0.08) == "high"  # medium's 10% is better than high's 20%: never "medium"
    assert bands.change_fail_band(0.20) == "high"
    assert bands.change_fail_band(0.30) == "low"
    assert bands.recovery_band(pd.Timedelta(hours=5)) == "high"  # medium's "less than one day" equals high's
    assert bands.recovery_band(pd.Timedelta(days=3)) == "low"
    assert bands.fourkeys_time_bucket(pd.Timedelta(hours=30)) == "One week"
    assert bands.fourkeys_cfr_bucket(0.15) == "0-15%" and bands.fourkeys_cfr_bucket(0.45) == "16-45%"


def test_four_keys_view_uses_incident_time_to_restore():
    b = Build()
    d1 = ok_deploy(b, 0, 10)
    ok_deploy(b, 1, 10)
    b.incident(at(0, 12), at(0, 14), caused_by=d1)  # 2 h from open to resolved
    m = Metrics(b.history(), RULE)
    fk = m.four_keys.loc["all"]
    assert fk["time_to_restore_median"] == pd.Timedelta(hours=2) and fk["time_to_restore"] == "One day"
    assert fk["change_fail_rate"] == 0.5 and fk["change_fail_rate_bucket"] == "46-60%"
    assert fk["lead_time"] is None  # no commits recorded
    # our recovery time runs from the deployment (10:30) to the resolution (14:00)
    assert m.summary.loc["all", "recovery_median"] == pd.Timedelta(hours=3, minutes=30)


# -- stages -----------------------------------------------------------------------------------------------


def test_stage_times_split_approval_wait_from_queue_wait():
    b = Build()
    rid = b.run("prod", [("build", "passed", at(0, 9, 1), at(0, 9, 11), "success", at(0, 9)),
                         ("canary", "passed", at(0, 12, 2), at(0, 12, 12), "manual", at(0, 9, 11))])
    b.approvals.append(dict(pipeline="prod", counter=1, stage="canary", action="approve", outcome="unauthorized",
                            at=at(0, 10)))
    b.approvals.append(dict(pipeline="prod", counter=1, stage="canary", action="approve", outcome="ok", at=at(0, 12)))
    b.run("prod", [("build", "passed", at(1, 9), at(1, 9, 5)),
                   ("canary", "rejected", None, at(1, 11), "manual", at(1, 9, 5))], status="rejected")
    t = stage_times(b.history()).set_index(["run_id", "stage"])
    build = t.loc[(rid, "build")]
    assert build["duration"] == pd.Timedelta(minutes=10) and build["queue_wait"] == pd.Timedelta(minutes=1)
    assert build["approval_wait"] is pd.NaT
    canary = t.loc[(rid, "canary")]
    # waiting from 09:11 to the granted approval at 12:00 (the refused click does not count); queued 2 min
    assert canary["approval_wait"] == pd.Timedelta(hours=2, minutes=49)
    assert canary["queue_wait"] == pd.Timedelta(minutes=2)
    assert canary["wait"] == pd.Timedelta(hours=2, minutes=51)
    rejected = t.loc[(2, "canary")]
    assert rejected["approval_wait"] == pd.Timedelta(hours=1, minutes=55)  # until the rejection


def test_failure_rates_by_stage_and_job_and_reruns():
    b = Build()
    r1 = b.run("ci", [("test", "failed", at(0, 9), at(0, 9, 5)), ("test", "passed", at(0, 10), at(0, 10, 5), "success", at(0, 10), 2)])
    b.run("ci", [("test", "passed", at(1, 9), at(1, 9, 5))])
    b.run("ci", [("test", "cancelled", at(2, 9), at(2, 9, 5))])
    b.job(1, "unit", "failed")
    b.job(1, "lint", "passed")
    b.job(2, "unit", "passed")
    b.job(2, "lint", "passed")
    h = b.history()
    st = failure_rates(h).loc[("ci", "test")]
    # 4 stage runs: failed, passed (rerun), passed, cancelled → 1 failure of 3 decided
    assert (st["finished"], st["passed"], st["failed"]) == (4, 2, 1)
    assert st["failure_rate"] == pytest.approx(1 / 3)
    jobs = failure_rates(h, level="job")
    assert jobs.loc[("ci", "test", "unit"), "failure_rate"] == 0.5
    assert jobs.loc[("ci", "test", "lint"), "failure_rate"] == 0
    rr = reruns(h).loc[("ci", "test")]
    assert (rr["stage_runs"], rr["reruns"], rr["runs_rerun"], rr["max_counter"]) == (4, 1, 1, 2)
    assert r1 == 1


# -- the production rule from the config ---------------------------------------------------------------


def _stage(name: str, traffic: Traffic | None = None) -> Stage:
    return Stage(name=name, jobs=(Job(name="j", tasks=()),), traffic=traffic)


def test_deploy_rule_from_config():
    cfg = Config(
        pipelines={
            "prod_deploy": Pipeline("prod_deploy", (_stage("p5", Traffic("shop", 5)), _stage("p100", Traffic("shop", 100)),
                                                    _stage("cleanup")), group="release"),
            "qa_deploy": Pipeline("qa_deploy", (_stage("q50", Traffic("qa", 50)), _stage("q100", Traffic("qa", 100))),
                                  group="release"),
            "build": Pipeline("build", (_stage("compile"),), group="ci"),
        },
        environments={"production": Environment("production", pipelines=("prod_deploy",), production=True),
                      "qa": Environment("qa", pipelines=("qa_deploy",))},
    )
    rule = DeployRule.from_config(cfg)
    assert rule.points == {"prod_deploy": ("p100", "cleanup")}  # the 100% step and the last stage
    assert rule.rollout == {"prod_deploy": ("p5", "p100", "cleanup")}
    assert rule.environment == {"prod_deploy": "production", "qa_deploy": "qa"}
    assert rule.group["build"] == "ci"
    # the 100% step passing is the deployment even when a later stage fails
    b = Build()
    b.run("prod_deploy", [("p5", "passed", at(0, 9), at(0, 9, 5)), ("p100", "passed", at(0, 10), at(0, 10, 5)),
                          ("cleanup", "failed", at(0, 11), at(0, 11, 5))], group="release")
    dep = deployments(b.history(), rule)
    assert dep["outcome"].tolist() == ["succeeded"] and dep["at"].tolist() == [at(0, 10, 5)]
    assert dep["environment"].tolist() == ["production"]
    assert DeployRule.from_frame(rule.to_frame()) == rule


# -- the shipped sample history (binder/) -------------------------------------------------------------


def test_the_shipped_sample_history_has_every_metric():
    from pathlib import Path

    from workbench.metrics import metrics_from_workspace

    sample = Path(__file__).resolve().parents[1] / "binder" / "sample-history"
    m = metrics_from_workspace(sample)
    dep = m.deployments
    assert (dep["outcome"] == "succeeded").sum() >= 8 and dep["rolled_back_at"].notna().sum() == 1
    assert dep["hotfix_followed"].sum() == 1 and dep["hotfix"].sum() == 1
    s = m.summary.loc["all"]
    assert s["commits"] > 20 and s["lead_time_median"] > pd.Timedelta(hours=1)
    assert 0 < s["change_fail_rate"] < 0.5 and s["recovered"] == s["failed_changes"]
    # the example's production environment: the rollout, and db and batch deploying themselves
    assert m.rule.points == {"prod_deploy": ("install_prod_100",), "db": ("deploy_prod",), "batch": ("deploy_prod",)}
    assert m.stage_summary.loc[("prod_deploy", "install_prod_25"), "approval_wait_median"] > pd.Timedelta(minutes=20)


def test_ancestors_of_a_few_runs_walked_in_python_equal_the_merge_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new deployment's walk (a few start runs) takes the Python path; it must find what the merges find."""
    import numpy as np

    from workbench.metrics import dora

    rng = np.random.default_rng(3)
    ups = rng.integers(1, 400, 900)
    prov = pd.DataFrame({"upstream_run_id": ups, "downstream_run_id": ups + rng.integers(1, 40, 900)})
    starts = [399, 420, 250, 5]

    def pairs(depth: int) -> set[tuple[int, int]]:
        return set(map(tuple, dora.ancestors(starts, prov, max_depth=depth)[["dep", "run"]].to_numpy().tolist()))

    fast = {d: pairs(d) for d in (1, 3, 64)}
    monkeypatch.setattr(dora, "_FEW", 0)  # every walk through the merges
    assert fast == {d: pairs(d) for d in (1, 3, 64)}
    assert len(fast[1]) < len(fast[3]) < len(fast[64])  # the depth limit matters in this graph, and is the same


def test_reach_of_a_few_new_deployments_equals_the_whole_walk() -> None:
    """ChartSource walks the provenance from new deployments only (reach_few); the lead times must not change."""
    import sys
    from pathlib import Path

    from workbench.metrics import dora

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_metrics import synthetic

    h, rule = synthetic(20000, seed=11)
    dep = dora.deployments(h, rule)
    whole = dora.reach(h.runs, h.provenance, dep)
    ok = dep.loc[dep["outcome"] == "succeeded"]
    old, new = dep.loc[~dep["run_id"].isin(ok["run_id"].tail(3))], dep.loc[dep["run_id"].isin(ok["run_id"].tail(3))]
    few = dora.reach_few(h.runs, dora.parents_of(h.provenance), new)
    glued = pd.concat([dora.reach(h.runs, h.provenance, old), few])
    key = ["dep", "pipeline"]
    pd.testing.assert_frame_equal(glued.sort_values(key).reset_index(drop=True),
                                  whole.sort_values(key).reset_index(drop=True))
    assert len(few) >= 3 and set(few["dep"]) == set(ok["run_id"].tail(3))
    pd.testing.assert_frame_equal(dora.lead_times(h, dep, reached=glued), dora.lead_times(h, dep))
