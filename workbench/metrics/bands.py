"""Performance bands: DORA's 2024 clusters and Four Keys' classic buckets.

DORA bands are the software delivery performance levels of the *2024
Accelerate State of DevOps Report* (DORA / Google Cloud, p. 13):

================  =========================  =======================================  ======  ==========================
level             change lead time           deployment frequency                     CFR     failed deployment recovery
================  =========================  =======================================  ======  ==========================
elite             less than one day          on demand (multiple deploys per day)     5%      less than one hour
high              one day to one week        once per day to once per week            20%     less than one day
medium            one week to one month      once per week to once per month          10%     less than one day
low               one month to six months    once per month to once every six months  40%     one week to one month
================  =========================  =======================================  ======  ==========================

The levels are clusters of survey answers, not thresholds, so a single metric
is put in the *best level whose value it meets*, from elite down, and anything
worse than every level is ``low``. Two quirks of the 2024 clusters follow and
are kept, not smoothed over: the medium cluster's change fail rate (10%) is
better than high's (20%), so a CFR of 5–20% is ``high`` and ``medium`` is
never given for CFR; and medium's recovery time equals high's, so a recovery
under one day is ``high``. The report gives no levels for the deployment
rework rate, so it has none here.

Four Keys (github.com/dora-team/fourkeys, METRICS.md) buckets the classic four
keys per the 2019 report: lead time and time to restore as "One day", "One
week", "One month", "Six months", "One year"; change failure rate as "0-15%",
"16-45%", "46-60%"; deployment frequency as Daily/Weekly/Monthly/Yearly (see
:func:`workbench.metrics.dora.frequency_bucket`).
"""
from __future__ import annotations

import math

import pandas as pd

LEVELS = ("elite", "high", "medium", "low")
REPORT = "DORA 2024 Accelerate State of DevOps Report"

DAY = pd.Timedelta(days=1)
HOUR = pd.Timedelta(hours=1)
WEEK = pd.Timedelta(days=7)
MONTH = pd.Timedelta(days=30)
SIX_MONTHS = pd.Timedelta(days=182.5)

# Deployments per day each level deploys at least (on demand = at least daily, on average).
FREQUENCY_2024 = (("elite", 1.0), ("high", 1 / 7), ("medium", 1 / 30), ("low", 1 / 182.5))
LEAD_TIME_2024 = (("elite", DAY), ("high", WEEK), ("medium", MONTH), ("low", SIX_MONTHS))  # strictly less than
CFR_2024 = (("elite", 0.05), ("high", 0.20), ("medium", 0.10), ("low", 0.40))  # at most
RECOVERY_2024 = (("elite", HOUR), ("high", DAY), ("medium", DAY), ("low", MONTH))  # strictly less than


def _missing(v: object) -> bool:
    return v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def frequency_band(per_day: float | None) -> str | None:
    if _missing(per_day):
        return None
    for level, floor in FREQUENCY_2024:
        if per_day >= floor:
            return level
    return "low"


def lead_time_band(median: pd.Timedelta | None) -> str | None:
    if _missing(median):
        return None
    for level, bound in LEAD_TIME_2024:
        if median < bound:
            return level
    return "low"


def change_fail_band(rate: float | None) -> str | None:
    if _missing(rate):
        return None
    for level, bound in CFR_2024:
        if rate <= bound:
            return level
    return "low"


def recovery_band(median: pd.Timedelta | None) -> str | None:
    if _missing(median):
        return None
    for level, bound in RECOVERY_2024:
        if median < bound:
            return level
    return "low"


# -- Four Keys' classic buckets ----------------------------------------------------------


def fourkeys_time_bucket(median: pd.Timedelta | None) -> str | None:
    """Four Keys' lead time / time to restore bucket (24 h, 168 h, 730 h, 6×730 h)."""
    if _missing(median):
        return None
    hours = median / HOUR
    if hours < 24:
        return "One day"
    if hours < 168:
        return "One week"
    if hours < 730:
        return "One month"
    if hours < 730 * 6:
        return "Six months"
    return "One year"


def fourkeys_cfr_bucket(rate: float | None) -> str | None:
    if _missing(rate):
        return None
    if rate <= 0.15:
        return "0-15%"
    if rate < 0.46:
        return "16-45%"
    return "46-60%"
