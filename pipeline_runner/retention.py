"""Deleting recorded runs: `runner rm RUN...` and `runner prune --older-than AGE`.

A run is deleted whole: its rows (`runs`, `steps`, `attempts`, `events`), its folder
`runs/<id>/` (step logs, scratch folders, lock; see paths.py), and then every cache entry that
no remaining run references: an entry is referenced by the run that wrote it and by each run
with a step that took its result from it (the step rows keep the key they used).  A run that is
still running is refused, and so is one another runner holds (a resume going on): the run's
lock is held while it is deleted, so no runner starts on it meanwhile.  The choice is made
first and checked whole, so a refusal deletes nothing.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .history import live_status
from .kinds import RunStatus
from .paths import StatePaths
from .runfilter import RunFilter
from .runlock import RunLock, hold
from .store import Store

_SWEEP_CACHE = (
    "DELETE FROM cache WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = cache.run_id) "
    "AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.cache_key = cache.key)"
)


@dataclass(frozen=True, slots=True)
class Deleted:
    """What a deletion removed: the runs' rows as they were, and how many cache entries."""

    runs: list[dict[str, Any]]
    cache_entries: int


def named(store: Store, prefixes: Sequence[str]) -> list[dict[str, Any]]:
    """The runs `runner rm` names (unique id prefixes), each once; refuses a running run."""
    rows: dict[str, dict[str, Any]] = {}
    for prefix in prefixes:
        full_id = store.resolve(prefix)
        rows.setdefault(full_id, store.run(full_id))
    for row in rows.values():
        row["status"] = live_status(row)
        if row["status"] == RunStatus.RUNNING:
            raise UsageError(
                f"run {row['id']} is running (runner pid {row['pid']}); stop it first "
                "(Ctrl-C in its terminal, or `runner cancel`), then remove it; nothing was deleted"
            )
    return list(rows.values())


def older_than(
    store: Store, age: float, status: str | None, now: float | None = None
) -> list[dict[str, Any]]:
    """The runs `runner prune` deletes: ended (a `stopped` run counts as ended) more than
    `age` seconds ago, with `status` if one is given."""
    now = time.time() if now is None else now
    where = RunFilter(status=status, ended_before=now - age)
    rows = store.runs(None, where)
    for row in rows:
        row["status"] = live_status(row)
    ended = [row for row in rows if row["status"] != RunStatus.RUNNING]
    return list(reversed(ended))  # oldest first


def delete(store: Store, rows: Sequence[dict[str, Any]]) -> Deleted:
    """Delete `rows`' runs with their folders, then the cache entries left unreferenced."""
    paths = StatePaths(store.state_dir)
    locks: list[RunLock] = []
    try:
        for row in rows:
            locks.append(hold(paths.run(row["id"]).lock, row["id"], "rm"))
        with store.transaction() as db:
            for row in rows:
                for sql in _DELETE_RUN:
                    db.execute(sql, (row["id"],))
            swept = db.execute(_SWEEP_CACHE).rowcount
        for row in rows:
            _remove_folder(paths.run(row["id"]).folder)
    finally:
        for lock in locks:
            lock.release()
    return Deleted(list(rows), max(swept, 0))


_DELETE_RUN = (
    "DELETE FROM events WHERE run_id = ?",
    "DELETE FROM attempts WHERE run_id = ?",
    "DELETE FROM steps WHERE run_id = ?",
    "DELETE FROM runs WHERE id = ?",
)


def _remove_folder(folder: Path) -> None:
    """A run's folder, whatever its steps left in it (read-only folders included)."""
    if folder.is_symlink():
        folder.unlink()
        return
    if not folder.is_dir():
        return
    try:
        shutil.rmtree(folder)
    except OSError:
        for root, dirs, _ in os.walk(folder):
            for name in dirs:
                os.chmod(os.path.join(root, name), stat.S_IRWXU)
        shutil.rmtree(folder, ignore_errors=True)  # what is left, the records no longer name
