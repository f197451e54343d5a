"""`runner cancel RUN`: stop a running run from another terminal, as a first Ctrl-C would.

The runner of a run records its pid and that process's start time in the store; cancelling
sends that process SIGINT, which its scheduler takes as a first Ctrl-C: nothing new starts,
running attempts are stopped (SIGTERM to their process groups, SIGKILL after `--grace`),
`finally` steps still run, and the run ends `cancelled` with what finished kept, so
`runner resume` can go on from there.  A signal, not a flag the runner polls: the runner's loop
already wakes on signals, and a runner that is gone cannot be signalled by mistake (the start
time must match).  Cancelling a run that is not running is an error.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from .errors import NotRunning
from .procs import still_running


def interrupt(pid: Any, pid_start: Any) -> bool:
    """Send SIGINT to the runner recorded as `pid` (started at `pid_start`), if it still runs."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    if not still_running(pid, pid_start):
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def running_run(state_dir: Path, run_id: str) -> dict[str, Any]:
    """The run `run_id` (a prefix will do) if its runner is running it; NotRunning if not."""
    from .history import live_status
    from .store import open_store

    store = open_store(state_dir, create=False)
    try:
        row = store.run(store.resolve(run_id))
    finally:
        store.close()
    status = live_status(row)
    if status != "running":
        hint = "" if status != "stopped" else " (its runner is gone; `runner resume` goes on)"
        raise NotRunning(f"run {row['id']} is not running: it is {status}{hint}")
    return row


def cancel(state_dir: Path, run_id: str) -> dict[str, Any]:
    """Cancel the running run `run_id`; its row as found."""
    row = running_run(state_dir, run_id)
    if not interrupt(row.get("pid"), row.get("pid_start")):
        raise NotRunning(f"run {row['id']} is not running: its runner (pid {row['pid']}) is gone")
    return row


def wait_ended(state_dir: Path, row: dict[str, Any], timeout: float | None = None) -> str:
    """Wait until the runner of `row` has ended; the run's status then."""
    from .history import live_status
    from .store import open_store

    deadline = None if timeout is None else time.monotonic() + timeout
    while still_running(row.get("pid"), row.get("pid_start")):
        if deadline is not None and time.monotonic() > deadline:
            break
        time.sleep(0.05)
    store = open_store(state_dir, create=False)
    try:
        return live_status(store.run(str(row["id"])))
    finally:
        store.close()
