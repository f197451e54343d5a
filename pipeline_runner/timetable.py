"""When a `schedule:` starts runs: cron expressions (through croniter, a maintained parser) and
intervals, checked at plan time, turned into the next start time, or into a crontab line.

A cron expression has 5 fields (minute hour day month weekday) or 6 with the seconds FIRST
(`*/10 * * * * *`: every 10 seconds), as ColonyOS, Quartz and robfig/cron write it.  Times are
in the schedule's `timezone` (an IANA name), UTC when it has none.

An interval schedule starts its first run at once and then one every interval, counted from
the time the previous one was due; a start missed (the previous run was still going) is not
made up for with a burst: the next is the first due time still ahead.

This module reads only the frozen `Schedule` of the plan and the clock it is given.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from .model import Schedule

CRON_FIELDS = (5, 6)


def cron_problem(expr: str) -> str | None:
    """Why `expr` is not a cron expression `runner schedule` can follow, or None."""
    from croniter import croniter

    fields = expr.split()
    if len(fields) not in CRON_FIELDS:
        return (
            f"invalid cron expression {expr!r}: expected 5 fields (minute hour day month "
            f"weekday) or 6 with the seconds first, got {len(fields)}"
        )
    try:
        croniter(expr, 0.0, second_at_beginning=len(fields) == 6).get_next(float)
    except (ValueError, KeyError, TypeError) as exc:  # croniter's errors derive from ValueError
        return f"invalid cron expression {expr!r}: {exc}"
    return None


def timezone_problem(name: str) -> str | None:
    """Why `name` is not a time zone, or None."""
    try:
        _zone(name)
    except (KeyError, ValueError):
        return f"unknown time zone {name!r} (an IANA name such as Europe/Paris or UTC)"
    return None


def _zone(name: str | None) -> timezone | object:
    if name is None or name == "UTC":
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError as exc:
        raise KeyError(str(exc)) from None


def first_due(schedule: Schedule, now: float) -> float:
    """When the first run is due: at once for an interval, the next cron time for a cron."""
    if schedule.interval is not None:
        return now
    return _next_cron(schedule, now)


def next_due(schedule: Schedule, due: float, now: float) -> float:
    """The start due after the one at `due`, never one already past at `now`."""
    if schedule.interval is not None:
        step = max(schedule.interval, 0.001)
        missed = max(0, math.floor((now - due) / step))
        return due + (missed + 1) * step
    return _next_cron(schedule, max(due, now))


def _next_cron(schedule: Schedule, after: float) -> float:
    from croniter import croniter

    expr = schedule.cron or "* * * * *"
    start = datetime.fromtimestamp(after, tz=_zone(schedule.timezone))  # type: ignore[arg-type]
    six = len(expr.split()) == 6
    return float(croniter(expr, start, second_at_beginning=six).get_next(float))


def as_crontab(schedule: Schedule) -> str | None:
    """The schedule as the 5 fields of a crontab line, or None when cron cannot say it
    exactly (a seconds field other than `0`, an interval that does not divide an hour or a day).
    """
    if schedule.cron is not None:
        fields = schedule.cron.split()
        if len(fields) == 5:
            return schedule.cron
        return " ".join(fields[1:]) if fields[0] == "0" else None
    return _interval_cron(schedule.interval or 0.0)


def _interval_cron(seconds: float) -> str | None:
    if seconds <= 0 or seconds != int(seconds) or int(seconds) % 60:
        return None
    minutes = int(seconds) // 60
    if minutes == 1:
        return "* * * * *"
    if minutes < 60:
        return f"*/{minutes} * * * *" if 60 % minutes == 0 else None
    if minutes % 60:
        return None
    hours = minutes // 60
    if hours == 24:
        return "0 0 * * *"
    return f"0 */{hours} * * *" if hours < 24 and 24 % hours == 0 else None


def describe(schedule: Schedule) -> str:
    """`cron '*/5 * * * *' (Europe/Paris)` or `every 30s`, for log lines."""
    if schedule.cron is not None:
        return f"cron {schedule.cron!r} ({schedule.timezone or 'UTC'})"
    return f"every {schedule.interval:g}s"
