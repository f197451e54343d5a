"""Which recorded runs a command means: `runner runs --status/--pipeline/--since` and
`runner prune --older-than/--status`.

A filter is plain data turned into one SQL condition over the `runs` table (the indexes of the
store's run-management migration serve it).  Two statuses are not stored as such: a run is
recorded `running` until its runner records its end, so `running` and `stopped` (a runner that
died, see history.live_status) both select stored `running` rows, and the caller tells them
apart by the runner's process (`needs_live_check`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone

from .errors import UsageError
from .kinds import RunStatus

STOPPED = "stopped"  # a run recorded running whose runner is gone (history.live_status)
# What `--status` accepts: every stored status, and `stopped`.
STATUSES = (*(str(s) for s in RunStatus), STOPPED)
# What `runner prune --status` accepts: a run that has ended.
ENDED_STATUSES = tuple(s for s in STATUSES if s != RunStatus.RUNNING)

_AGE = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d|w)")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_age(text: str, option: str) -> float:
    """Seconds from a duration like `30d`, `2h`, `1d12h` or `90m` (s, m, h, d, w)."""
    compact = text.strip().replace(" ", "")
    parts = _AGE.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise UsageError(
            f"{option} {text!r}: expected a duration such as 30d, 12h, 90m or 1w2d "
            "(units s, m, h, d, w)"
        )
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_since(text: str, now: float | None = None) -> float:
    """The epoch time `--since` names: a duration before now (`2h`, `7d`) or an ISO date or
    date and time (`2026-12-01`, `2026-12-01T08:00`, with an offset or `Z`; UTC without)."""
    now = time.time() if now is None else now
    if _AGE.match(text.strip()):
        return now - parse_age(text, "--since")
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            moment = datetime.combine(date.fromisoformat(text.strip()), datetime.min.time())
        else:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r}: expected a duration before now (2h, 7d) or an ISO date "
            "(2026-12-01, 2026-12-01T08:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Runs with this status (None: any), of this pipeline (a name or a glob), started at or
    after `since`, and ended (not running) before `ended_before` (epoch seconds)."""

    status: str | None = None
    pipeline: str | None = None
    since: float | None = None
    ended_before: float | None = None

    def sql(self) -> tuple[str, tuple[object, ...]]:
        """A condition over `runs r` and its arguments."""
        clauses: list[str] = []
        args: list[object] = []
        if self.status is not None:
            stored = RunStatus.RUNNING if self.status == STOPPED else self.status
            clauses.append("r.status = ?")
            args.append(str(stored))
        if self.pipeline is not None:
            clauses.append("r.pipeline GLOB ?")
            args.append(self.pipeline)
        if self.since is not None:
            clauses.append("r.started >= ?")
            args.append(self.since)
        if self.ended_before is not None:
            # A finished run by its end; a stopped one (no end recorded) by its start.
            clauses.append("(r.finished < ? OR (r.finished IS NULL AND r.started < ?))")
            args.extend((self.ended_before, self.ended_before))
        return " AND ".join(clauses) or "1", tuple(args)

    @property
    def needs_live_check(self) -> bool:
        """Whether rows must be told apart by their runner's process (running or stopped)."""
        return self.status in (RunStatus.RUNNING, STOPPED)
