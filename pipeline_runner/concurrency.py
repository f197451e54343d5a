"""`concurrency: {group, if_running}`: one run of a group at a time on one state folder.

A run of a pipeline with a `concurrency` block holds its group's lock from before its first
step until its end is recorded: an OS record lock (`fcntl.lockf`) on
`groups/<group>.lock` in the state folder, holding a record of its holder (pid and that
process's start time).  The kernel releases the lock when its process ends, however it ends,
so a holder killed with SIGKILL never blocks the group.  `runner run`, `runner resume` and the
runs `runner schedule` starts all take it, so two CI jobs sharing a state folder, or a schedule
and a manual run, do not overlap.

When the group is busy, `if_running` decides (`decide` returns it; the caller acts):
- `skip`: the run is not started (RunSkipped, exit EXIT_SKIPPED = 76);
- `queue`: it waits for the lock;
- `cancel`: the holder is sent what `runner cancel` sends (a first Ctrl-C), and the run waits
  for the lock, which the holder lets go once its cancellation is recorded.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import RunSkipped
from .model import Concurrency, IfRunning
from .paths import StatePaths
from .procs import process_start_time, still_running

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class GroupLock:
    """A held group lock; `release` (or the end of the process) lets it go."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the record lock
            self._fd = None


def file_name(group: str) -> str:
    """A file name for the group: its safe characters, and a hash that keeps apart names that
    differ only in the others (`a/b` and `a_b`)."""
    digest = hashlib.sha256(group.encode()).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', group)[:60]}-{digest}"


def enter(state_dir: Path, spec: Concurrency | None, note: Callable[[str], None]) -> GroupLock:
    """Take the group's lock as `spec.if_running` says (nothing without a `concurrency` block);
    `note` is told why the run waits."""
    if spec is None:
        return GroupLock(None)
    path = StatePaths(state_dir).group_lock(file_name(spec.group))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if not _try_lock(fd):
            _when_busy(fd, spec, note)
    except BaseException:
        os.close(fd)
        raise
    record = {"pid": os.getpid(), "pid_start": process_start_time(os.getpid()), "time": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
    return GroupLock(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        return False
    return True


def _when_busy(fd: int, spec: Concurrency, note: Callable[[str], None]) -> None:
    holder = holder_record(fd)
    who = describe_holder(holder)
    if spec.if_running is IfRunning.SKIP:
        raise RunSkipped(
            f"concurrency group {spec.group!r} is busy ({who}); if_running is skip: this run "
            "was not started"
        )
    if spec.if_running is IfRunning.CANCEL:
        from .cancel import interrupt

        interrupt(holder.get("pid"), holder.get("pid_start"))
        note(
            f"concurrency group {spec.group!r} is busy ({who}): cancelling it (if_running: cancel)"
        )
    else:
        note(f"concurrency group {spec.group!r} is busy ({who}): waiting (if_running: queue)")
    fcntl.lockf(fd, fcntl.LOCK_EX)  # blocks until the holder's process lets go or ends


def holder_record(fd: int, wait: float = 2.0) -> dict[str, Any]:
    """The holder's record.  It writes it just after it takes the lock, so for a moment the
    file may be empty or still name an earlier holder (who is gone): wait for a live one."""
    deadline = time.monotonic() + wait
    while True:
        try:
            found = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            found = {}
        found = found if isinstance(found, dict) else {}
        pid = found.get("pid")
        if isinstance(pid, int) and still_running(pid, found.get("pid_start")):
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def describe_holder(holder: dict[str, Any]) -> str:
    when = holder.get("time")
    since = (
        time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
        if isinstance(when, (int, float))
        else ""
    )
    return f"a run by pid {holder.get('pid', '?')}{since}"
