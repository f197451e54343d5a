"""`runner schedule FILE...`: start runs of pipelines on their `schedule:`, in the foreground.

Each start is a `runner run FILE` child process, exactly as a user would start it (recorded in
the store, holding the file's concurrency group), in a process group of its own so that a
Ctrl-C reaches the schedule alone, which hands it on once.  One log line is written per start,
finish, skip, queue and cancel.

A schedule never overlaps its own runs of one file.  When a start is due while the previous
run of that file still goes on, the file's `concurrency.if_running` decides (`on_due`): `skip`
(and, without a `concurrency` block, always) skips that start, `queue` starts it when the
previous run ends, `cancel` cancels the previous run as `runner cancel` would and then starts.
Runs of other processes on the same state folder meet at the group's lock (concurrency.py).

With `schedule.params_from_previous`, the outputs of the newest run of the file that
succeeded become the next run's parameters: each output whose name is a declared parameter,
written to a params file in the state folder (`schedule/`) over the `--params-file` given, so
values keep their types.  A `--param` given to `runner schedule` still wins.

The first SIGINT/SIGTERM/SIGHUP stops scheduling and hands each running run one SIGINT (a clean
cancellation, as a first Ctrl-C); a second one is handed on too (the run then stops at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import defaults, timetable
from .errors import EXIT_SKIPPED
from .kinds import DueAction
from .model import IfRunning, Plan, Schedule

POLL = defaults.SCHEDULE_POLL


def on_due(busy: bool, if_running: IfRunning | None, pending: bool) -> DueAction:
    """What to do with a due start, given whether the file's previous run still goes on, its
    `if_running` (None without a concurrency block), and whether a start already waits."""
    if not busy:
        return DueAction.START
    if if_running is None or if_running is IfRunning.SKIP or pending:
        return DueAction.SKIP
    return DueAction.QUEUE if if_running is IfRunning.QUEUE else DueAction.CANCEL


@dataclass
class Entry:
    """One scheduled file and where its schedule stands."""

    plan: Plan
    file: str  # absolute
    due: float
    starts: int = 0
    child: subprocess.Popen[bytes] | None = None
    child_started: float = 0.0
    pending: bool = False  # a start waits for the previous run to end

    @property
    def if_running(self) -> IfRunning | None:
        return self.plan.concurrency.if_running if self.plan.concurrency else None


@dataclass
class Settings:
    """What every run the schedule starts is given."""

    state_dir: str  # absolute
    params: Sequence[str] = ()  # NAME=VALUE, as given to `runner schedule`
    params_file: str | None = None
    max_file_size: int = 0
    max_runs: int | None = None
    progress: str = defaults.SCHEDULE_PROGRESS
    log: Callable[[str], None] = print


class Loop:
    """The loop over the entries: starts, finishes, signals."""

    def __init__(self, entries: list[Entry], settings: Settings) -> None:
        self.entries = entries
        self.settings = settings
        self.signals: list[int] = []
        self.forwarded = 0

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, lambda signum, frame: self.signals.append(signum))
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        try:
            for entry in self.entries:
                self.log(entry, f"scheduled: {timetable.describe(self.schedule_of(entry))}")
            while not self.finished():
                self.turn(time.time())
                time.sleep(POLL)
            return 0
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def finished(self) -> bool:
        if any(e.child is not None for e in self.entries):
            return False
        if self.signals:
            return True
        limit = self.settings.max_runs
        return limit is not None and all(e.starts >= limit for e in self.entries)

    def turn(self, now: float) -> None:
        if len(self.signals) > self.forwarded:
            self.forwarded = len(self.signals)
            self.stop_children()
        for entry in self.entries:
            self.reap(entry)
            if not self.signals and not self.exhausted(entry) and now >= entry.due:
                self.due(entry, now)

    def exhausted(self, entry: Entry) -> bool:
        limit = self.settings.max_runs
        return limit is not None and entry.starts + int(entry.pending) >= limit

    def due(self, entry: Entry, now: float) -> None:
        schedule = self.schedule_of(entry)
        entry.due = timetable.next_due(schedule, entry.due, now)
        action = on_due(entry.child is not None, entry.if_running, entry.pending)
        if action is DueAction.START:
            self.start(entry)
            return
        pid = entry.child.pid if entry.child else "?"
        if action is DueAction.SKIP:
            why = f"if_running: {entry.if_running}" if entry.if_running else "no concurrency block"
            self.log(entry, f"skipped: its previous run (pid {pid}) still goes on ({why})")
            return
        entry.pending = True
        if action is DueAction.CANCEL and entry.child is not None:
            entry.child.send_signal(signal.SIGINT)
            self.log(entry, f"cancelling its previous run (pid {pid}): if_running: cancel")
        else:
            self.log(entry, f"queued: starts when its previous run (pid {pid}) ends")

    def schedule_of(self, entry: Entry) -> Schedule:
        assert entry.plan.schedule is not None
        return entry.plan.schedule

    def reap(self, entry: Entry) -> None:
        child = entry.child
        if child is None or child.poll() is None:
            return
        entry.child = None
        self.log(entry, self.finish_text(child, entry.child_started))
        if entry.pending and not self.signals:
            entry.pending = False
            self.start(entry)

    def start(self, entry: Entry) -> None:
        args = self.command(entry)
        entry.child_started = time.time()
        entry.child = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        entry.starts += 1
        self.log(entry, f"started run {entry.starts} (pid {entry.child.pid})")

    def command(self, entry: Entry) -> list[str]:
        s = self.settings
        args = [sys.executable, "-m", "pipeline_runner", "run", entry.file]
        args += ["--state-dir", s.state_dir, "--progress", s.progress]
        args += ["--max-file-size", str(s.max_file_size)]
        params_file = s.params_file
        schedule = self.schedule_of(entry)
        if schedule.params_from_previous:
            params_file = chained_params_file(entry, s, self.log)
        if params_file:
            args += ["--params-file", params_file]
        for item in s.params:
            args += ["--param", item]
        return args

    def finish_text(self, child: subprocess.Popen[bytes], since: float) -> str:
        row = recorded_run(self.settings.state_dir, child.pid, since - 1.0)
        code = child.returncode
        if row is None and code == EXIT_SKIPPED:
            return f"not started (pid {child.pid}): its concurrency group is busy, exit {code}"
        if row is None:
            return f"finished (pid {child.pid}): no run recorded, exit {code}"
        took = (row["finished"] or time.time()) - row["started"]
        return f"finished run {row['id']}: {row['status']}, exit {code} ({took:.1f}s)"

    def stop_children(self) -> None:
        for entry in self.entries:
            entry.pending = False
            if entry.child is not None and entry.child.poll() is None:
                entry.child.send_signal(signal.SIGINT)
                self.log(entry, f"stopping its run (pid {entry.child.pid})")

    def log(self, entry: Entry, text: str) -> None:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.settings.log(f"{when} {entry.plan.name}: {text}")


def chained_params_file(entry: Entry, settings: Settings, log: Callable[[Entry, str], None]) -> str:
    """A params file of the `--params-file` given, with the outputs of the newest successful
    run of the file over it (those named as declared parameters)."""
    values = base_params(settings)
    previous = previous_outputs(settings.state_dir, entry.file)
    if previous is None:
        log(entry, "no successful run yet: the parameters' own values")
    else:
        run_id, outputs = previous
        fed = {k: v for k, v in outputs.items() if k in entry.plan.params}
        values.update(fed)
        log(entry, f"params from run {run_id}: {json.dumps(fed, sort_keys=True, default=str)}")
    folder = Path(settings.state_dir) / "schedule"
    folder.mkdir(parents=True, exist_ok=True)
    # One file per scheduled file and schedule process: a run reads it as it plans.
    which = hashlib.sha256(entry.file.encode()).hexdigest()[:8]
    path = folder / f"{entry.plan.name}-{which}-{os.getpid()}.params.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(values, default=str))
    os.replace(tmp, path)
    return str(path)


def base_params(settings: Settings) -> dict[str, Any]:
    if not settings.params_file:
        return {}
    from .loader import load_values_file

    data = load_values_file(settings.params_file, settings.max_file_size).data
    return dict(data) if isinstance(data, dict) else {}


def recorded_run(state_dir: str, pid: int, since: float) -> dict[str, Any] | None:
    """The run the runner of process `pid` recorded, if any (a run refused before it started,
    by a bad parameter or a busy group, recorded none; there may be no store yet)."""
    from .errors import RunNotFound, StoreError
    from .store import open_store

    try:
        store = open_store(Path(state_dir), create=False)
    except (RunNotFound, StoreError):
        return None
    try:
        return store.run_of_pid(pid, since)
    finally:
        store.close()


def previous_outputs(state_dir: str, file: str) -> tuple[str, dict[str, Any]] | None:
    from .errors import RunNotFound, StoreError
    from .store import open_store

    try:
        store = open_store(Path(state_dir), create=False)
    except (RunNotFound, StoreError):
        return None
    try:
        row = store.latest_run(file, status="succeeded")
    finally:
        store.close()
    if row is None:
        return None
    outputs = json.loads(row["outputs_json"] or "null")
    return str(row["id"]), outputs if isinstance(outputs, dict) else {}


def entries(plans: Sequence[Plan], now: float) -> list[Entry]:
    """The files to schedule, each due at its first start."""
    out = []
    for plan in plans:
        assert plan.schedule is not None
        out.append(Entry(plan, os.path.abspath(plan.file), timetable.first_due(plan.schedule, now)))
    return out


def schedule_plans(files: Sequence[str], options: Any) -> list[Plan]:
    """Each file planned (every file's problems at once); a file without `schedule:` is an
    error."""
    from .errors import Diagnostic, Location, PipelineError
    from .planner import plan_file

    plans: list[Plan] = []
    found: list[Diagnostic] = []
    for path in files:
        try:
            plan = plan_file(path, options)
        except PipelineError as exc:
            found.extend(exc.diagnostics)
            continue
        if plan.schedule is None:
            message = "has no `schedule:` block (cron or interval), so nothing would start it"
            found.append(Diagnostic(Location(path), "", message))
        plans.append(plan)
    if found:
        raise PipelineError(found)
    return plans


def start_schedule(
    plans: Sequence[Plan],
    state_dir: str,
    options: Any,
    max_runs: int | None,
    progress: str,
    log: Callable[[str], None],
) -> int:
    """`runner schedule`: the loop, until --max-runs or a stop signal."""
    settings = Settings(
        state_dir=os.path.abspath(state_dir),
        params=[f"{k}={v}" for k, v in options.param_texts.items()],
        params_file=os.path.abspath(options.params_file) if options.params_file else None,
        max_file_size=options.max_file_size,
        max_runs=max_runs,
        progress=progress,
        log=log,
    )
    return Loop(entries(plans, time.time()), settings).run()
