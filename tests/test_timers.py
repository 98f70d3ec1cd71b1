"""Timer specs: 5-field cron and GoCD's Quartz form, against an injected clock."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from workbench.materials.timers import TimerSpecError, due, next_fire, parse, previous_fire

UTC = timezone.utc
MONDAY = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)  # 2024-01-01 was a Monday


@pytest.mark.parametrize("spec, expected", [
    ("0 0 22 ? * MON-FRI", datetime(2024, 1, 1, 22, 0, tzinfo=UTC)),
    ("0 0 22 ? * 2-6", datetime(2024, 1, 1, 22, 0, tzinfo=UTC)),  # Quartz 2-6 = MON-FRI
    ("0 0 9 ? * 1", datetime(2024, 1, 7, 9, 0, tzinfo=UTC)),  # Quartz 1 = SUNDAY
    ("0 0 9 ? * 7", datetime(2024, 1, 6, 9, 0, tzinfo=UTC)),  # Quartz 7 = SATURDAY
    ("0 15 10 ? * 6#3", datetime(2024, 1, 19, 10, 15, tzinfo=UTC)),  # third Friday
    ("30 0/30 * * * ?", datetime(2024, 1, 1, 12, 0, 30, tzinfo=UTC)),
    ("0 0 1 1 * ? 2030", datetime(2030, 1, 1, 1, 0, tzinfo=UTC)),
    ("0 0 9 ? * 1/2", datetime(2024, 1, 2, 9, 0, tzinfo=UTC)),  # SUN, TUE, THU, SAT
    ("*/15 * * * *", datetime(2024, 1, 1, 12, 15, tzinfo=UTC)),
    ("0 3 * * sat", datetime(2024, 1, 6, 3, 0, tzinfo=UTC)),
])
def test_next_fire(spec: str, expected: datetime) -> None:
    assert next_fire(spec, MONDAY, tz=UTC) == expected


@pytest.mark.parametrize("spec, words", [
    ("0 0 22", "3 fields; expected 5"),
    ("0 0 22 ? * 8", "outside 1-7"),
    ("0 0 22 ? * 6L", "'L'"),
    ("0 0 22 15W * ?", "'W'"),
    ("61 0 22 ? * *", "not a valid Quartz"),
    ("99 * * * *", "not a valid cron"),
])
def test_bad_specs_say_why(spec: str, words: str) -> None:
    with pytest.raises(TimerSpecError, match=words.replace("(", r"\(")):
        parse(spec)


def test_previous_fire_includes_the_instant_itself() -> None:
    at = datetime(2024, 1, 1, 22, 0, tzinfo=UTC)
    assert previous_fire("0 0 22 ? * *", at, tz=UTC) == at
    assert previous_fire("0 0 1 1 * ? 2090", at, tz=UTC) is None


def test_due_collapses_missed_fires_and_starts_counting_on_first_check() -> None:
    spec = "0 0 2 * * ?"  # 02:00 every night
    t0 = datetime(2024, 1, 1, 12, tzinfo=UTC).timestamp()
    assert due(spec, None, t0, tz=UTC) is None  # first check ever: nothing is due yet
    assert due(spec, t0, t0 + 3600, tz=UTC) is None  # 13:00: not yet
    week = t0 + 7 * 86400
    fire = due(spec, t0, week, tz=UTC)
    assert fire == datetime(2024, 1, 8, 2, tzinfo=UTC).timestamp()  # seven missed nights: one run, the latest
    assert due(spec, week, week + 60, tz=UTC) is None  # already acted on
