"""The pipeline's run-level keys `schedule` and `concurrency`, read at plan time into the plan's
frozen `Schedule` and `Concurrency`.

Their values may be `{{ }}` templates over params and env (`interval: "{{ params.every }}"`,
`group: "ingest-{{ params.source }}"`), rendered now: what a run cannot know before it starts
(`steps`, `run`, `secrets`) is an error.  Every problem is located in the file: a cron
expression croniter refuses, a time zone that does not exist, an interval of 0.
"""

from __future__ import annotations

from typing import Any

from . import timetable
from .loader import Path_
from .model import Concurrency, Deferred, IfRunning, Schedule, Scope, has_deferred
from .namecheck import RUN_NAMES
from .rendering import INVALID, Rules, ValueRenderer
from .site import FileContext, Problems
from .stepnodes import parse_duration

_RULES = Rules(RUN_NAMES)


class RunKeys:
    """Reads `schedule` and `concurrency` of one file, recording problems as it goes."""

    def __init__(self, problems: Problems, values: ValueRenderer, f: FileContext) -> None:
        self.problems = problems
        self.values = values
        self.f = f

    def value(self, raw: Any, at: Path_) -> Any:
        """`raw` rendered now, or INVALID (a problem is recorded)."""
        rendered = self.values.render(self.f, raw, at, Scope(), _RULES)
        if rendered is not INVALID and (isinstance(rendered, Deferred) or has_deferred(rendered)):
            self.problems.error(
                self.f,
                at,
                "must be known before the run: use params or env, not steps, run or secrets",
            )
            return INVALID
        return rendered

    def schedule(self, spec: dict[str, Any] | None, params: dict[str, Any]) -> Schedule | None:
        if spec is None:
            return None
        at: Path_ = ("schedule",)
        if ("cron" in spec) == ("interval" in spec):
            self.problems.error(self.f, at, "give exactly one of `cron` and `interval`")
            return None
        cron = self.cron(spec)
        interval = self.interval(spec)
        zone = self.timezone(spec)
        chained = bool(spec.get("params_from_previous", False))
        if chained:
            self.check_chaining(params)
        if cron is INVALID or interval is INVALID or zone is INVALID:
            return None
        return Schedule(cron=cron, interval=interval, timezone=zone, params_from_previous=chained)

    def cron(self, spec: dict[str, Any]) -> Any:
        if "cron" not in spec:
            return None
        at: Path_ = ("schedule", "cron")
        expr = self.value(spec["cron"], at)
        if expr is INVALID:
            return INVALID
        problem = timetable.cron_problem(str(expr))
        if problem is not None:
            self.problems.error(self.f, at, problem)
            return INVALID
        return " ".join(str(expr).split())

    def interval(self, spec: dict[str, Any]) -> Any:
        if "interval" not in spec:
            return None
        at: Path_ = ("schedule", "interval")
        raw = self.value(spec["interval"], at)
        if raw is INVALID:
            return INVALID
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            self.problems.error(self.f, at, str(exc))
            return INVALID
        if seconds <= 0:
            self.problems.error(self.f, at, f"invalid interval {raw!r}: must be more than 0")
            return INVALID
        return seconds

    def timezone(self, spec: dict[str, Any]) -> Any:
        if "timezone" not in spec:
            return None
        at: Path_ = ("schedule", "timezone")
        if "cron" not in spec:
            self.problems.error(self.f, at, "a timezone is for `cron` times; an interval has none")
            return INVALID
        name = self.value(spec["timezone"], at)
        if name is INVALID:
            return INVALID
        problem = timetable.timezone_problem(str(name))
        if problem is not None:
            self.problems.error(self.f, at, problem)
            return INVALID
        return str(name)

    def check_chaining(self, params: dict[str, Any]) -> None:
        """`params_from_previous` feeds outputs to params of the same name: without one such
        name it would feed nothing."""
        outputs = self.f.data.get("outputs") or {}
        if not any(name in params for name in outputs):
            self.problems.error(
                self.f,
                ("schedule", "params_from_previous"),
                "no output of the pipeline has the name of a declared parameter, so nothing "
                "would be fed to the next run (declare `outputs: {NAME: ...}` and `params: "
                "{NAME: ...}` with the same NAME)",
            )

    def concurrency(self, spec: dict[str, Any] | None) -> Concurrency | None:
        if spec is None:
            return None
        at: Path_ = ("concurrency", "group")
        group = self.value(spec["group"], at)
        if group is INVALID:
            return None
        if not str(group).strip():
            self.problems.error(self.f, at, "the group's name is empty once rendered")
            return None
        return Concurrency(str(group), IfRunning(spec.get("if_running", "queue")))
