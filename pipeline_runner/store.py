"""The run store: an embedded SQLite database under the state folder.

It holds runs (with the resolved plan of each), the state of every step, every attempt, and an
append-only event log.  Write-ahead logging lets several runner processes share one store;
each writer takes short transactions and retries when another holds the lock.

Durability: the scheduler reports state changes as they happen; `StoreSink` (storesink.py)
collects them and writes them in one transaction at the end of each turn of the scheduler loop,
and the reporters print only after that commit (they are later in the sink list).  So what the
terminal shows is on disk, and a runner killed with SIGKILL loses at most the attempts that were
running, which `runner resume` finds recorded as `running` and re-runs.

Schema changes are migrations: `MIGRATIONS[n]` takes a store from version n to n+1, recorded in
`PRAGMA user_version`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RunNotFound, StoreError
from .paths import STORE_FILE, StatePaths

if TYPE_CHECKING:
    from .runfilter import RunFilter

DB_NAME = STORE_FILE
BUSY_TIMEOUT_MS = 250
Args = tuple[Any, ...] | Mapping[str, Any]  # a read's parameters: by place or by name
LOCK_RETRY_SECONDS = 60.0

# A run's columns but its plan: the plan is the biggest value of a run (about 200 bytes of JSON a
# step) and only resume and `runner status` read it (Store.plan_json), so listings never load it.
_RUN = (
    "{r}id, {r}pipeline, {r}file, {r}file_hash, {r}plan_hash, {r}request_json, {r}status, "
    "{r}exit_code, {r}started, {r}finished, {r}pid, {r}executor, {r}outputs_json, {r}pid_start"
)
RUN_COLUMNS = _RUN.format(r="")


def pack_plan(text: str) -> bytes:
    """A run's plan as stored: zlib-compressed JSON (about a twentieth of the text; level 1
    compresses 2 MB in 10 ms).  Rows written before hold the text itself."""
    return zlib.compress(text.encode(), 1)


def unpack_plan(value: str | bytes) -> str:
    return zlib.decompress(value).decode() if isinstance(value, bytes) else value


MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        file TEXT NOT NULL,
        file_hash TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        plan_json TEXT NOT NULL,
        request_json TEXT NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        started REAL NOT NULL,
        finished REAL,
        pid INTEGER,
        executor TEXT,
        outputs_json TEXT
    );
    CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs(id),
        step_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        started REAL,
        finished REAL,
        error_kind TEXT,
        error TEXT,
        exit_code INTEGER,
        worker TEXT,
        output_json TEXT,
        log_path TEXT,
        position INTEGER NOT NULL,
        PRIMARY KEY (run_id, step_id)
    );
    CREATE TABLE attempts (
        run_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,
        started REAL,
        finished REAL,
        error_kind TEXT,
        error TEXT,
        exit_code INTEGER,
        worker TEXT,
        PRIMARY KEY (run_id, step_id, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,  -- rowid order: the table is only appended to
        run_id TEXT NOT NULL,
        time REAL NOT NULL,
        step_id TEXT,
        state TEXT NOT NULL,
        attempt INTEGER,
        message TEXT
    );
    CREATE INDEX runs_started ON runs(started);
    """,
    # 1 -> 2: the step cache
    """
    CREATE TABLE cache (
        key TEXT PRIMARY KEY,
        step_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        output_json TEXT NOT NULL,
        files_json TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
    # 2 -> 3: the process group of a running attempt, to stop it if it outlives its runner
    """
    ALTER TABLE attempts ADD COLUMN pgid INTEGER;
    ALTER TABLE attempts ADD COLUMN pgid_start TEXT;
    """,
    # 3 -> 4: the runner's process start time beside its pid (a pid alone may be reused)
    """
    ALTER TABLE runs ADD COLUMN pid_start TEXT;
    """,
    # 4 -> 5: a step's named outputs (steps.X.outputs.NAME), kept for resume and the cache
    """
    ALTER TABLE steps ADD COLUMN outputs_json TEXT;
    ALTER TABLE cache ADD COLUMN outputs_json TEXT;
    """,
    # 5 -> 6: run management: `runner runs` filters, `runner rm`/`prune`, the events cap; a
    # step's cache key, so an entry a later run reused is kept as long as that run is
    """
    CREATE INDEX runs_status ON runs(status, started);
    CREATE INDEX runs_pipeline ON runs(pipeline, started);
    CREATE INDEX runs_finished ON runs(finished);
    CREATE INDEX events_run ON events(run_id, seq);
    CREATE INDEX cache_run ON cache(run_id);
    ALTER TABLE steps ADD COLUMN cache_key TEXT;
    CREATE INDEX steps_cache_key ON steps(cache_key) WHERE cache_key IS NOT NULL;
    """,
    # 6 -> 7: approval gates (approvals.py): what each asks, since when, and its answer
    """
    CREATE TABLE approvals (
        run_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        prompt TEXT NOT NULL,
        choices_json TEXT NOT NULL,
        timeout REAL,
        since REAL NOT NULL,
        decision TEXT,
        value_json TEXT,
        message TEXT,
        answered_by TEXT,
        answered REAL,
        PRIMARY KEY (run_id, step_id)
    ) WITHOUT ROWID;
    """,
    # 7 -> 8: a failed step's rendered inputs (`with`, its item), for `runner failed`
    """
    ALTER TABLE steps ADD COLUMN inputs_json TEXT;
    """,
]


def db_path(state_dir: Path) -> Path:
    return StatePaths(state_dir).store


class Store:
    """One connection to the store of a state folder."""

    def __init__(self, state_dir: Path, *, create: bool = True) -> None:
        self.state_dir = state_dir
        self.path = db_path(state_dir)
        if not create and not self.path.exists():
            raise RunNotFound(f"no runs recorded in {state_dir} (no {DB_NAME})")
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            self._open()
        except sqlite3.DatabaseError as exc:
            raise self.error(exc) from None
        except OSError as exc:
            raise StoreError(
                f"run store {self.path} cannot be created: {exc.strerror or exc}; "
                "check the folder's permissions and free space, or use --state-dir"
            ) from None

    def _open(self) -> None:
        """Connect, switch to WAL and migrate, retried while another runner is creating the
        same store: switching a new file to WAL needs an exclusive lock, and SQLite answers
        "database is locked" at once, without waiting, to a connection that meets it."""
        backoff = _Backoff()
        while True:
            self.db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self.db.row_factory = sqlite3.Row
            try:
                self._configure()
                self._migrate()
                return
            except (sqlite3.OperationalError, StoreError) as exc:
                self.db.close()
                if not _is_busy(exc) or not backoff.wait():
                    raise

    def error(self, exc: BaseException) -> StoreError:
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text or "corrupt" in text
        ):
            return StoreError(
                f"run store is corrupt: {self.path}: {text}; move the file aside to start a "
                "new history (the run folders next to it are kept)"
            )
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return StoreError(f"run store {self.path} cannot be written: {text}")
        if "disk is full" in text or "disk I/O" in text:
            return StoreError(
                f"run store {self.path} cannot be written: {text}{self._write_failure_reason()}; "
                "free some space (or raise the limit), then `runner resume` continues the run"
            )
        return StoreError(f"run store {self.path}: {text}")

    def _write_failure_reason(self) -> str:
        """What SQLite's "disk I/O error" most likely was: a file size limit (EFBIG) or a full
        disk (it reports ENOSPC as "disk is full" only for some writes)."""
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            largest = 0
            for name in (self.path, Path(f"{self.path}-wal")):
                try:
                    largest = max(largest, name.stat().st_size)
                except OSError:
                    pass
            if largest + (1 << 20) >= soft:
                return f" (the file size limit, ulimit -f, of {soft:,} bytes is reached)"
        try:
            stat = os.statvfs(self.state_dir)
        except OSError:
            return ""
        free = stat.f_bavail * stat.f_frsize
        return f" (the disk is full: {free:,} bytes free)" if free < (16 << 20) else ""

    def _configure(self) -> None:
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot use write-ahead logging (journal mode {mode})")
        # WAL with synchronous=NORMAL: a commit survives the runner being killed at any moment
        # (it is in the WAL before commit returns); only a power cut may lose the last ones.
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA foreign_keys = ON")

    def _version(self) -> int:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(
                f"run store {self.path} was written by a newer runner (schema {version}); "
                "upgrade yaml-pipeline-runner"
            )
        return version

    def _migrate(self) -> None:
        # A store that is up to date is not written at all: opening one to read takes no write
        # lock, and a damaged file is left exactly as it was.
        if self._version() == len(MIGRATIONS):
            return
        with self.transaction():
            version = self._version()  # another runner may have migrated it meanwhile
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, retried while another process holds the write lock."""
        backoff = _Backoff()
        while True:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise self.error(exc) from None
                if not backoff.wait():
                    raise StoreError(f"run store {self.path} stayed locked for 60 s") from None
            except sqlite3.DatabaseError as exc:
                raise self.error(exc) from None
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(exc, sqlite3.Error):
                raise self.error(exc) from None
            raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """The reads in the body in one read transaction: all see the store as one moment
        left it (each read alone is its own transaction)."""
        self.db.execute("BEGIN")  # deferred: the first read takes the snapshot
        try:
            yield
        finally:
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    def data_version(self) -> int:
        """SQLite's count of the changes other connections committed, as this connection
        knows it: the same number before and after some reads means none came between."""
        return int(self._rows("PRAGMA data_version", (), plain=True)[0][0])

    def close(self) -> None:
        self.db.close()

    # -- reading ------------------------------------------------------------------------------

    def _rows(self, sql: str, args: Args, *, plain: bool = False) -> list[Any]:
        """A read, retried while another process briefly locks the store (a WAL reader can
        meet SQLITE_BUSY during a checkpoint or recovery); a damaged page met on the way is a
        corrupt store (exit 3), not a crash.  `plain`: rows as tuples, not sqlite3.Row."""
        backoff = _Backoff()
        while True:
            try:
                cursor = self.db.cursor()
                if plain:
                    cursor.row_factory = None
                return cursor.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or not backoff.wait():
                    raise self.error(exc) from None
            except sqlite3.DatabaseError as exc:
                raise self.error(exc) from None

    def query(self, sql: str, args: Args = ()) -> list[dict[str, Any]]:
        """Rows of a read, as dicts (for the modules that keep their own tables)."""
        return [dict(row) for row in self._rows(sql, args)]

    def tuples(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]:
        """Rows of a read, as tuples: the fewest objects for a read of 100,000 rows."""
        return self._rows(sql, args, plain=True)

    def resolve(self, prefix: str) -> str:
        """A run id from a unique prefix of it."""
        if not prefix.strip():
            raise RunNotFound("a run id cannot be empty (see `runner runs`)")
        rows = self._rows(
            "SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 3",
            (prefix, prefix + "\uffff"),
        )
        if not rows:
            raise RunNotFound(f"no run with id {prefix!r} in {self.state_dir} (see `runner runs`)")
        if len(rows) > 1 and rows[0]["id"] != prefix:
            raise RunNotFound(
                f"run id prefix {prefix!r} is ambiguous: {rows[0]['id']}, {rows[1]['id']}, ..."
            )
        return str(rows[0]["id"])

    def runs(self, limit: int | None = 50, where: RunFilter | None = None) -> list[dict[str, Any]]:
        """Recorded runs, newest first, those `where` selects (runfilter.py); no limit: all."""
        clause, args = where.sql() if where is not None else ("1", ())
        rows = self._rows(
            f"""SELECT {_RUN.format(r="r.")},
                  (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.kind = 'step')
                   AS steps,
                  (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.kind = 'step'
                   AND s.state IN ('failed', 'upstream_failed')) AS failed
               FROM runs r WHERE {clause} ORDER BY r.started DESC, r.id DESC LIMIT ?""",
            (*args, -1 if limit is None else limit),
        )
        return [dict(row) for row in rows]

    def latest_run(self, file: str, *, status: str | None = None) -> dict[str, Any] | None:
        """The newest run of pipeline file `file` (an absolute path), of `status` if given."""
        found = self._rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE file = ? AND (? IS NULL OR status = ?) "
            "ORDER BY started DESC, id DESC LIMIT 1",
            (file, status, status),
        )
        return dict(found[0]) if found else None

    def run_of_pid(self, pid: int, since: float) -> dict[str, Any] | None:
        """The newest run a runner of process `pid` started at or after `since`."""
        found = self._rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE pid = ? AND started >= ? "
            "ORDER BY started DESC LIMIT 1",
            (pid, since),
        )
        return dict(found[0]) if found else None

    def run(self, run_id: str) -> dict[str, Any]:
        found = self._rows(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        row = found[0] if found else None
        if row is None:
            raise RunNotFound(f"no run {run_id!r}")
        return dict(row)

    def plan_json(self, run_id: str) -> str:
        """The plan a run recorded (engine.plan_fingerprint's JSON)."""
        found = self._rows("SELECT plan_json FROM runs WHERE id = ?", (run_id,))
        if not found:
            raise RunNotFound(f"no run {run_id!r}")
        return unpack_plan(found[0]["plan_json"])

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT * FROM steps WHERE run_id = ? ORDER BY position, step_id", (run_id,)
        )
        return [dict(row) for row in rows]

    def step_results(self, run_id: str) -> list[Any]:
        """What `resume` reads of each step, in order (keeping.StepResult): id, kind, state,
        attempts, finished, output and named outputs; rows as they are, not copied into dicts
        (read by position, or by name)."""
        return self._rows(
            "SELECT step_id, kind, state, attempts, finished, output_json, outputs_json "
            "FROM steps WHERE run_id = ? ORDER BY position",
            (run_id,),
        )

    def step_lines(self, run_id: str) -> list[sqlite3.Row]:
        """What `runner show` prints of each step, in order: rows read by name as they are
        (a 100,000-step run is not copied into dicts, nor its outputs read)."""
        return self._rows(
            "SELECT step_id, kind, state, attempts, started, finished, error FROM steps "
            "WHERE run_id = ? ORDER BY position, step_id",
            (run_id,),
        )

    def note_rerun(self, run_id: str, notes: Mapping[str, str]) -> None:
        """`resume --rerun`: an event `rerun` for each step it runs again (step -> why)."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO events (run_id, time, step_id, state, message) VALUES (?,?,?,?,?)",
                [(run_id, now, sid, "rerun", why) for sid, why in notes.items()],
            )

    def reruns(self, run_id: str) -> dict[str, str]:
        """The steps `resume --rerun` ran again in a run: id -> why, the last time."""
        rows = self._rows(
            "SELECT step_id, message FROM events WHERE run_id = ? AND state = 'rerun' ORDER BY seq",
            (run_id,),
        )
        return {str(row["step_id"]): str(row["message"]) for row in rows}

    def get(self, key: str) -> tuple[Any, Any, str | None] | None:
        """A cached output, the fingerprint of its declared outputs (a list of names in
        entries of older runners, which the cache treats as a miss) and its named outputs (JSON
        or None), by cache key."""
        found = self._rows(
            "SELECT output_json, files_json, outputs_json FROM cache WHERE key = ?", (key,)
        )
        if not found:
            return None
        row = found[0]
        return json.loads(row["output_json"]), json.loads(row["files_json"]), row["outputs_json"]

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT * FROM attempts WHERE run_id = ? ORDER BY started, step_id, attempt", (run_id,)
        )
        return [dict(row) for row in rows]


class _Backoff:
    """Pauses between tries while another connection holds a lock: 5 ms, doubling up to
    100 ms, for LOCK_RETRY_SECONDS in all."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + LOCK_RETRY_SECONDS
        self.delay = 0.005

    def wait(self) -> bool:
        """Sleep before the next try; False (no sleep) once the time is up."""
        if time.monotonic() > self.deadline:
            return False
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 0.1)
        return True


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY: another connection holds a lock this one needs."""
    text = str(exc)
    return "database is locked" in text or "busy" in text


def open_store(state_dir: Path, create: bool = True) -> Store:
    return Store(Path(state_dir), create=create)


def quick_check(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA quick_check").fetchone()[0])
    finally:
        db.close()
