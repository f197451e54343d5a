"""`runner schedule --print-crontab`: the schedules as crontab lines that call `runner run`,
for people who keep cron.

A cron schedule becomes its 5 fields (a 6-field one only when its seconds field is `0`); an
interval becomes the cron expression that says it exactly (`60s` is `* * * * *`, `15m` is
`*/15 * * * *`, `6h` is `0 */6 * * *`), and one cron cannot say (`30s`, `7m`) is printed as a
comment saying so.  Each line is preceded by `CRON_TZ=` (cronie's variable; the schedule's time
zone, UTC by default, since cron otherwise reads times in the system's zone).
`params_from_previous` is done by `runner schedule` only: a comment says so.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence

from . import timetable
from .model import Plan


def runner_command() -> str:
    """The `runner` to call, absolute (cron's PATH is short): the one installed beside this
    Python (its virtual environment's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "runner")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("runner")
    return os.path.abspath(found) if found else "runner"


def crontab_text(
    plans: Sequence[Plan], state_dir: str, params: Sequence[str], params_file: str | None
) -> tuple[str, list[str]]:
    """The crontab lines, and what could not be said as one (for a warning)."""
    lines = [f"# runner schedule --print-crontab: {len(plans)} pipeline(s)"]
    unsaid: list[str] = []
    for plan in plans:
        assert plan.schedule is not None
        command = run_command(plan, state_dir, params, params_file)
        fields = timetable.as_crontab(plan.schedule)
        what = timetable.describe(plan.schedule)
        lines.append(f"# {plan.name} ({plan.file}): {what}")
        if fields is None:
            text = f"{plan.file}: {what} cannot be written as a crontab line (use runner schedule)"
            unsaid.append(text)
            lines.append(f"# {text}")
            continue
        if plan.schedule.params_from_previous:
            lines.append("# params_from_previous is done by `runner schedule` only, not cron")
        lines.append(f"CRON_TZ={plan.schedule.timezone or 'UTC'}")
        lines.append(f"{fields} {command}")
    return "\n".join(lines) + "\n", unsaid


def run_command(plan: Plan, state_dir: str, params: Sequence[str], params_file: str | None) -> str:
    args = [runner_command(), "run", os.path.abspath(plan.file)]
    args += ["--state-dir", os.path.abspath(state_dir), "--progress", "none"]
    if params_file:
        args += ["--params-file", os.path.abspath(params_file)]
    for item in params:
        args += ["--param", item]
    # `%` ends a crontab command (the rest is its stdin) unless escaped.
    return " ".join(shlex.quote(a) for a in args).replace("%", "\\%")
