"""A run's writer: `StoreSink` records the run's changes in the store (store.py) as the
scheduler reports them, the changes of a turn of its loop in one transaction (several turns in
one with group commit, a speed shortcut).

Apart from store.py so that the commands that only read the store (`runner show`, `runner
runs`, `runner logs`) do not import the run's record types (model.py, changes.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Mapping
from typing import Any

from . import defaults, shortcuts
from .changes import RunInfo, RunResult, StepChanged
from .model import NodeKind, State
from .procs import process_start_time
from .store import Store, pack_plan


class StoreSink:
    """Records a run; one transaction per turn of the scheduler loop."""

    def __init__(
        self,
        store: Store,
        request: Mapping[str, Any],
        plan_json: str,
        plan_hash: str,
        file_hash: str,
        masker: Any,
        resumed: bool = False,
    ) -> None:
        self.store = store
        # A run's commits come every turn: the WAL is copied back into the database file (and
        # both synced) every STORE_CHECKPOINT_PAGES pages, not SQLite's default 1,000, so a
        # page the run keeps changing is copied fewer times; closing the store copies the rest.
        store.db.execute(f"PRAGMA wal_autocheckpoint = {defaults.STORE_CHECKPOINT_PAGES}")
        self.request = request
        self.plan_packed = pack_plan(plan_json)  # what the runs row holds (`pack_plan`)
        self.plan_hash = plan_hash
        self.file_hash = file_hash
        self.masker = masker
        self.resumed = resumed
        # (the change, when), in order
        self.pending: list[tuple[StepChanged, float]] = []
        self.run_id = ""
        # The run's step events the store holds, kept to at most `events_cap` (oldest go).
        self.events_cap = defaults.EVENTS_PER_RUN
        self.events_kept = 0
        self.uncache: list[tuple[str, str]] = []  # (cache key, run id) to delete this turn
        # Group commit (a speed shortcut, off with PIPELINE_RUNNER_NO_SHORTCUTS=1): the changes
        # of several turns go in one transaction, committed at most COMMIT_INTERVAL after the
        # first of them (at once for those `changed` calls urgent, and at the run's end).  Each
        # commit writes every page it touched to the WAL again: fewer commits write fewer
        # pages, and a step that started and ended in the same group is one row update.
        self.group = shortcuts.enabled()
        self.oldest = 0.0  # when the oldest change kept was made (time.monotonic)
        self.urgent = False  # a change kept must be committed at the next turn

    def run_started(self, run: RunInfo) -> None:
        self.run_id = run.run_id
        self.position = {nid: i for i, nid in enumerate(run.nodes)}
        # resume: 1 at the position of each step recorded there already
        placed = bytearray(len(self.position))
        with self.store.transaction() as db:
            if self.resumed:
                self.events_kept = int(db.execute(_COUNT_EVENTS, (run.run_id,)).fetchone()[0])
                self.stop_lost_attempts(db, run.run_id)
                recorded_hash = None  # the plan's text is written unless known to be there
                if shortcuts.enabled():
                    # The same plan again (as most resumes): its text is not written again,
                    # nor the rows of the steps recorded where the plan puts them (the row
                    # of a step recorded before only takes its position from here).
                    self.mark_placed(db, run.run_id, placed)
                    found = db.execute("SELECT plan_hash FROM runs WHERE id = ?", (run.run_id,))
                    recorded_hash = str((found.fetchone() or [""])[0])
                db.execute(
                    "UPDATE runs SET status = 'running', finished = NULL, exit_code = NULL, "
                    "pid = ?, pid_start = ?, executor = ?, plan_hash = ?, file_hash = ? "
                    "WHERE id = ?",
                    (
                        os.getpid(),
                        process_start_time(os.getpid()),
                        run.executor,
                        self.plan_hash,
                        self.file_hash,
                        run.run_id,
                    ),
                )
                if recorded_hash != self.plan_hash:
                    db.execute(
                        "UPDATE runs SET plan_json = ? WHERE id = ?",
                        (self.plan_packed, run.run_id),
                    )
                db.execute(
                    "INSERT INTO attempts (run_id, step_id, attempt, state, started, "
                    "error_kind, error) SELECT run_id, step_id, attempts, 'lost', started, "
                    "'lost', 'the runner stopped while this attempt ran' FROM steps "
                    "WHERE run_id = ? AND state IN ('running', 'retrying') AND attempts > 0 "
                    "AND kind = 'step' ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET "
                    "state = 'lost', error_kind = 'lost', error = excluded.error "
                    "WHERE attempts.state = 'running'",
                    (run.run_id,),
                )
            else:
                db.execute(
                    "INSERT INTO runs (id, pipeline, file, file_hash, plan_hash, plan_json, "
                    "request_json, status, started, pid, pid_start, executor) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        run.run_id,
                        run.plan.name,
                        os.path.abspath(run.plan.file),
                        self.file_hash,
                        self.plan_hash,
                        self.plan_packed,
                        json.dumps(self.request),
                        "running",
                        run.started,
                        os.getpid(),
                        process_start_time(os.getpid()),
                        run.executor,
                    ),
                )
            db.executemany(
                "INSERT INTO steps (run_id, step_id, kind, state, position, log_path) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT (run_id, step_id) DO UPDATE SET "
                "position = excluded.position",
                [
                    (run.run_id, nid, nr.kind._value_, nr.state._value_, position, nr.log_path)
                    for nid, position in self.position.items()
                    if not placed[position]
                    for nr in (run.nodes[nid],)  # read only for a row to write
                ],
            )
            db.execute(
                "INSERT INTO events (run_id, time, state, message) VALUES (?,?,?,?)",
                (run.run_id, time.time(), "resumed" if self.resumed else "started", None),
            )

    def mark_placed(self, db: sqlite3.Connection, run_id: str, placed: bytearray) -> None:
        """Set `placed[i]` for each step the run recorded at the position `i` it has now: the
        recorded rows are read as they come, not kept (100,000 ids would be 11 MB more at the
        run's peak)."""
        now = self.position.get
        cursor = db.cursor()
        cursor.row_factory = None  # (TEXT, INTEGER) tuples: no sqlite3.Row made for each
        for sid, position in cursor.execute(
            "SELECT step_id, position FROM steps WHERE run_id = ?", (run_id,)
        ):
            if now(sid) == position:
                placed[position] = 1

    @staticmethod
    def stop_lost_attempts(db: sqlite3.Connection, run_id: str) -> None:
        """Attempts still `running` belong to a runner that died.  If a step process of one is
        somehow still alive (same pid and start time as recorded), kill it before its step
        runs again: never two live copies of one step."""
        from .procs import kill_recorded_group

        rows = db.execute(
            "SELECT step_id, pgid, pgid_start FROM attempts "
            "WHERE run_id = ? AND state = 'running' AND pgid IS NOT NULL",
            (run_id,),
        ).fetchall()
        for row in rows:
            if kill_recorded_group(int(row["pgid"]), str(row["pgid_start"] or "")):
                print(
                    f"runner: stopped process group {row['pgid']} of step {row['step_id']}, "
                    "left running by the earlier runner",
                    file=sys.stderr,
                )

    def changed(self, change: StepChanged) -> None:
        if not self.pending:
            self.oldest = time.monotonic()
        self.pending.append((change, time.time()))
        # What must not wait for the group's commit: a process group a later `resume` may have
        # to stop, a cache entry a step that becomes ready may look up.
        started = change.process is not None and change.old is change.state
        cached = bool(change.cache_key) and change.state in (State.SUCCEEDED, State.COMPENSATED)
        if started or cached:
            self.urgent = True

    def commit_due(self) -> float | None:
        """Seconds until the changes this store keeps must be committed (None: it keeps none):
        the scheduler waits no longer than that for its workers."""
        if not self.pending:
            return None
        if self.urgent or not self.group:
            return 0.0
        return max(0.0, self.oldest + defaults.COMMIT_INTERVAL - time.monotonic())

    def step_row(self, nr: StepChanged) -> tuple[Any, ...]:
        """The row of a step not in the table yet (a run-time instance): every column."""
        position = self.position
        position[nr.id] = len(position)
        # The columns a change sets (step_update's, in the table's order), with those written once.
        changing = self.step_update(nr)[:12]
        output, outputs_cache_inputs = changing[8], changing[9:]
        return (
            self.run_id,
            nr.id,
            nr.kind._value_,
            *changing[:8],
            output,
            nr.log_path,
            position[nr.id],
            *outputs_cache_inputs,
        )

    def step_update(self, nr: StepChanged) -> tuple[Any, ...]:
        """The changing columns of a step the table has (`_UPDATE_STEP`'s parameters): an
        UPDATE by key costs less than an insert that finds its row taken."""
        state = nr.state
        return (
            state._value_,
            nr.attempt,
            nr.started,
            nr.finished,
            nr.error_kind,
            self.masker.text(nr.error) if nr.error else None,
            nr.exit_code,
            nr.worker,
            nr.output_json if state in _OUTPUT_STATES else None,
            nr.outputs_json if state in _OUTPUT_STATES else None,
            nr.cache_key if state in _CACHE_STATES else None,
            self.masker.text(nr.inputs_json) if nr.inputs_json else None,
            self.run_id,
            nr.id,
        )

    def attempt_row(self, nr: StepChanged, when: float) -> tuple[Any, ...] | None:
        """An attempt gets its row when it ends (or when its process group is known, so a
        later `resume` can stop it); while it runs, the step row says `running`."""
        state = nr.state
        if not (
            nr.kind is NodeKind.STEP
            and nr.attempt > 0
            and (state in _ATTEMPT_STATES or (state is State.RUNNING and nr.process))
        ):
            return None
        last = nr.last_attempt  # None: the attempt has not ended, or ended in an earlier run
        return (
            self.run_id,
            nr.id,
            nr.attempt,
            _attempt_state(state),
            last.started if last else when,
            last.finished if last else None,
            last.kind if last else None,
            self.masker.text(last.message) if last else None,
            last.exit_code if last else None,
            last.worker if last else None,
            nr.process[0] if nr.process else None,
            nr.process[1] if nr.process else None,
        )

    def event_row(self, nr: StepChanged, when: float) -> tuple[Any, ...]:
        error = self.masker.text(nr.error) if nr.error and nr.state in _ERROR_STATES else None
        return (self.run_id, when, nr.id, nr.state._value_, nr.attempt, error)

    def cache_row(self, nr: StepChanged, when: float) -> tuple[Any, ...] | None:
        if nr.state is not State.SUCCEEDED or not nr.cache_key:
            return None
        files = json.dumps(dict(nr.cache_files))
        return (nr.cache_key, nr.id, self.run_id, nr.output_json, files, when, nr.outputs_json)

    def turn(self) -> bool:
        """Write the changes of the scheduler's turns in one transaction; False when they are
        kept for a later one (group commit: a speed shortcut, see `group`), and then no other
        reader is told of them before they are committed (Scheduler.flush)."""
        if not self.pending:
            return True
        due = self.commit_due()
        if due and len(self.pending) < defaults.COMMIT_CHANGES:
            return False
        self.commit()
        return True

    def commit(self) -> None:
        """Write every change kept, in one transaction."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        self.urgent = False
        latest: dict[str, StepChanged] = {}  # a step's row as its last change left it
        attempt_rows: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        cache_rows: list[tuple[Any, ...]] = []
        self.uncache = []  # the entries of steps a compensation undid
        for nr, when in pending:
            latest[nr.id] = nr
            attempt = self.attempt_row(nr, when)
            if attempt is not None:
                attempt_rows.append(attempt)
            if nr.old is nr.state:
                continue  # news about a step (its process started), not a change of state
            events.append(self.event_row(nr, when))
            cached = self.cache_row(nr, when)
            if cached is not None:
                cache_rows.append(cached)
            elif nr.state is State.COMPENSATED and nr.cache_key:
                # Its effect was undone: a later run must not take its result from the cache.
                self.uncache.append((nr.cache_key, self.run_id))
        position = self.position
        updates = [self.step_update(nr) for nr in latest.values() if nr.id in position]
        step_rows = [self.step_row(nr) for nr in latest.values() if nr.id not in position]
        self.write((updates, step_rows), attempt_rows, events, cache_rows)

    def write(
        self,
        steps: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]],
        attempt_rows: list[tuple[Any, ...]],
        events: list[tuple[Any, ...]],
        cache_rows: list[tuple[Any, ...]],
    ) -> None:
        """One turn's rows in one transaction; `steps`: updates of rows the table has (see
        `step_update`), then rows of steps new to it (`step_row`)."""
        updates, step_rows = steps
        with self.store.transaction() as db:
            if updates:
                db.executemany(_UPDATE_STEP, updates)
            if step_rows:
                db.executemany(
                    "INSERT INTO steps (run_id, step_id, kind, state, attempts, started, finished, "
                    "error_kind, error, exit_code, worker, output_json, log_path, position, "
                    "outputs_json, cache_key, inputs_json) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (run_id, step_id) DO UPDATE SET "
                    "state = excluded.state, attempts = excluded.attempts, "
                    "started = excluded.started, finished = excluded.finished, "
                    "error_kind = excluded.error_kind, error = excluded.error, "
                    "exit_code = excluded.exit_code, worker = excluded.worker, "
                    "output_json = excluded.output_json, outputs_json = excluded.outputs_json, "
                    "cache_key = excluded.cache_key, inputs_json = excluded.inputs_json",
                    step_rows,
                )
            if attempt_rows:
                db.executemany(
                    "INSERT INTO attempts (run_id, step_id, attempt, state, started, finished, "
                    "error_kind, error, exit_code, worker, pgid, pgid_start) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET state = excluded.state, "
                    "finished = excluded.finished, error_kind = excluded.error_kind, "
                    "error = excluded.error, exit_code = excluded.exit_code, "
                    "worker = excluded.worker, pgid = COALESCE(excluded.pgid, attempts.pgid), "
                    "pgid_start = COALESCE(excluded.pgid_start, attempts.pgid_start)",
                    attempt_rows,
                )
            if events:
                db.executemany(
                    "INSERT INTO events (run_id, time, step_id, state, attempt, message) "
                    "VALUES (?,?,?,?,?,?)",
                    events,
                )
                self.events_kept += len(events)
                if self.events_kept > self.events_cap:
                    self.trim_events(db)
            if cache_rows:
                db.executemany(
                    "INSERT OR REPLACE INTO cache (key, step_id, run_id, output_json, "
                    "files_json, created, outputs_json) VALUES (?,?,?,?,?,?,?)",
                    cache_rows,
                )
            if self.uncache:
                db.executemany("DELETE FROM cache WHERE key = ? AND run_id = ?", self.uncache)

    def trim_events(self, db: sqlite3.Connection) -> None:
        """The events table keeps at most `events_cap` step events per run: the oldest go.
        The run's own events (started, resumed, its end) and the `rerun` notes that
        `runner show` prints are kept: they grow with resumes, not with steps."""
        excess = self.events_kept - self.events_cap
        db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE run_id = ? AND "
            "step_id IS NOT NULL AND state != 'rerun' ORDER BY seq LIMIT ?)",
            (self.run_id, excess),
        )
        self.events_kept = self.events_cap

    def run_finished(self, result: RunResult) -> None:
        self.commit()
        with self.store.transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, exit_code = ?, finished = ?, outputs_json = ? "
                "WHERE id = ?",
                (
                    result.status,
                    result.exit_code,
                    result.finished,
                    self.masker.json(result.outputs, default=str),
                    self.run_id,
                ),
            )
            db.execute(
                "INSERT INTO events (run_id, time, state, message) VALUES (?,?,?,?)",
                (self.run_id, result.finished, result.status, None),
            )


# What a step's row takes from a change (StoreSink.step_update); `kind`, `log_path` and
# `position` are written once, with the row.
_UPDATE_STEP = (
    "UPDATE steps SET state = ?, attempts = ?, started = ?, finished = ?, error_kind = ?, "
    "error = ?, exit_code = ?, worker = ?, output_json = ?, outputs_json = ?, cache_key = ?, "
    "inputs_json = ? WHERE run_id = ? AND step_id = ?"
)

# The events of a run's steps that the cap counts (StoreSink.trim_events).
_COUNT_EVENTS = (
    "SELECT COUNT(*) FROM events WHERE run_id = ? AND step_id IS NOT NULL AND state != 'rerun'"
)

# Tuples, not sets: the store tests every row's state against these, and hashing an enum
# member runs Python code where `in` on a tuple compares identities first.
_ATTEMPT_STATES = (
    State.RETRYING,
    State.SUCCEEDED,
    State.FAILED,
    State.FAILED_ALLOWED,
    State.CANCELLED,
)
_ERROR_STATES = (
    State.FAILED,
    State.FAILED_ALLOWED,
    State.RETRYING,
    State.UPSTREAM_FAILED,
    State.CANCELLED,
)
_OUTPUT_STATES = (State.SUCCEEDED, State.CACHED, State.COMPENSATED, State.PARTIAL)
_CACHE_STATES = (State.SUCCEEDED, State.CACHED)  # a step row's cache key: the entry it used


def _attempt_state(state: State) -> str:
    if state is State.RETRYING or state is State.FAILED_ALLOWED:
        return "failed"
    return str(state._value_)  # not `.value`: a descriptor call for every row written
