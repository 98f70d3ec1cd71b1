"""Timer specs: 5-field cron and GoCD's Quartz 6/7-field form, with an injectable clock.

GoCD pipelines carry Quartz specs (``0 0 22 ? * MON-FRI``: seconds first, ``?``
for "no specific value", day-of-week 1-7 counted from SUNDAY, optional year);
people coming from cron write five fields. Both are turned into one croniter
expression (croniter does the calendar arithmetic); the only translation we
own is Quartz's day-of-week numbering, which differs from cron's by one.
Everything here is pure: the caller passes "now", so tests move the clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from croniter import croniter

__all__ = ["Schedule", "TimerSpecError", "parse", "next_fire", "previous_fire", "due"]


class TimerSpecError(ValueError):
    """The timer spec cannot be understood; the message says which field and why."""


@dataclass(frozen=True)
class Schedule:
    spec: str  # as written
    expression: str  # what croniter gets
    seconds_first: bool  # Quartz form


_FIELDS_QUARTZ = ("second", "minute", "hour", "day-of-month", "month", "day-of-week", "year")


def parse(spec: str) -> Schedule:
    """Check and translate a timer spec; raises :class:`TimerSpecError`."""
    fields = (spec or "").split()
    if len(fields) == 5:
        expr = " ".join(fields)
        _check(expr, spec, seconds_first=False)
        return Schedule(spec, expr, False)
    if len(fields) not in (6, 7):
        raise TimerSpecError(
            f"timer spec {spec!r}: {len(fields)} fields; expected 5 (cron: minute hour day month weekday) "
            "or 6-7 (Quartz: second minute hour day-of-month month day-of-week [year])"
        )
    out = list(fields)
    for i, value in enumerate(fields):
        if "W" in value.upper() and i == 3:
            raise TimerSpecError(f"timer spec {spec!r}: 'W' (nearest weekday) in day-of-month is not supported")
    out[3] = "*" if fields[3] == "?" else fields[3]
    out[5] = _quartz_dow(fields[5], spec)
    if len(fields) == 7 and fields[6] in ("?", "*"):
        out = out[:6]
    expr = " ".join(out)
    _check(expr, spec, seconds_first=True)
    return Schedule(spec, expr, True)


_FIELDS_CRON = ("minute", "hour", "day-of-month", "month", "day-of-week")


def _valid(expr: str, seconds_first: bool) -> bool:
    try:
        return bool(croniter.is_valid(expr, second_at_beginning=seconds_first))
    except Exception:  # croniter raises its own errors for some shapes
        return False


def _check(expr: str, spec: str, *, seconds_first: bool) -> None:
    """croniter decides; when it refuses, name the first field it refuses on its own (others as ``*``)."""
    if _valid(expr, seconds_first):
        return
    fields = expr.split()
    names = _FIELDS_QUARTZ if seconds_first else _FIELDS_CRON
    kind = "Quartz" if seconds_first else "cron"
    for i, value in enumerate(fields):
        alone = ["*"] * len(fields)
        alone[i] = value
        if not _valid(" ".join(alone), seconds_first):
            written = spec.split()[i] if len(spec.split()) > i else value
            raise TimerSpecError(f"timer spec {spec!r}: {written!r} is not a valid {kind} {names[i]} field")
    raise TimerSpecError(f"timer spec {spec!r}: not a valid {kind} expression")


def _quartz_dow(value: str, spec: str) -> str:
    """Quartz counts 1=SUN..7=SAT; cron counts 0=SUN..6=SAT. Names pass through."""
    if value in ("?", "*"):
        return "*"
    parts = []
    for token in value.split(","):
        up = token.upper()
        if "L" in up and not up.startswith(("JUL",)):
            raise TimerSpecError(f"timer spec {spec!r}: 'L' (last weekday of month) in day-of-week is not supported")
        if "#" in up:
            day, _, nth = up.partition("#")
            parts.append(f"{_dow_value(day, spec)}#{nth}")
            continue
        rng, slash, step = up.partition("/")
        if rng == "*":
            parts.append(f"*{slash}{step}")
            continue
        lo, dash, hi = rng.partition("-")
        lo_v = _dow_value(lo, spec)
        if dash:
            parts.append(f"{lo_v}-{_dow_value(hi, spec)}{slash}{step}")
        elif slash:  # Quartz "a/c": from a, every c days, to the end of the week
            parts.append(f"{lo_v}-6/{step}")
        else:
            parts.append(lo_v)
    return ",".join(parts)


def _dow_value(token: str, spec: str) -> str:
    if token.isdigit():
        n = int(token)
        if not 1 <= n <= 7:
            raise TimerSpecError(f"timer spec {spec!r}: Quartz day-of-week {n} is outside 1-7 (1 = Sunday)")
        return str(n - 1)
    if token.isalpha() and len(token) == 3:
        return token
    raise TimerSpecError(f"timer spec {spec!r}: cannot read day-of-week {token!r}")


def _local_tz() -> tzinfo:
    from dateutil.tz import tzlocal

    return tzlocal()


def _as_datetime(when: datetime | float, tz: tzinfo | None) -> datetime:
    tz = tz or _local_tz()
    if isinstance(when, datetime):
        return when.astimezone(tz) if when.tzinfo else when.replace(tzinfo=tz)
    return datetime.fromtimestamp(float(when), tz)


def _schedule(spec: str | Schedule) -> Schedule:
    return spec if isinstance(spec, Schedule) else parse(spec)


def next_fire(spec: str | Schedule, after: datetime | float, *, tz: tzinfo | None = None) -> datetime:
    """The first fire time strictly after ``after`` (in ``tz``, default the local zone, as GoCD does)."""
    s = _schedule(spec)
    it: Any = croniter(s.expression, _as_datetime(after, tz), second_at_beginning=s.seconds_first)
    return it.get_next(datetime)


def previous_fire(spec: str | Schedule, at: datetime | float, *, tz: tzinfo | None = None) -> datetime | None:
    """The latest fire time at or before ``at`` (None when the spec never fired before, e.g. a future year)."""
    s = _schedule(spec)
    start = _as_datetime(at, tz) + timedelta(milliseconds=1)
    it: Any = croniter(s.expression, start, second_at_beginning=s.seconds_first, max_years_between_matches=50)
    try:
        return it.get_prev(datetime)
    except Exception:  # croniter: no match in range
        return None


def due(spec: str | Schedule, last_checked: float | None, now: float, *, tz: tzinfo | None = None) -> float | None:
    """The fire time to act on now, if the timer fired in ``(last_checked, now]``.

    Several fires missed while nothing was ticking collapse into one (the
    latest), as GoCD does after a server restart: a nightly build that was
    missed for a week runs once, not seven times. With no ``last_checked``
    (first pass ever) nothing is due: the timer starts counting from now.
    """
    if last_checked is None:
        return None
    prev = previous_fire(spec, now, tz=tz)
    if prev is None:
        return None
    t = prev.timestamp()
    return t if t > last_checked else None
