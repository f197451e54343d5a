"""One runner per run at a time: `runner run` holds its run's lock while it runs, and `runner
resume` takes it before it reads what the run left, so a second resume (or a resume of a run
still going) is refused, naming the holder, instead of running the same steps twice.

The lock is an OS record lock (`fcntl.lockf`) on `runs/<run id>/run.lock` in the state folder:
the kernel releases it when its process ends, however it ends, so a runner killed with SIGKILL
never blocks the next resume.  A record lock, not `flock`: a record lock belongs to the process,
so the worker processes the runner forks do not hold it on after the runner is gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path

from .errors import RunBusy


class RunLock:
    """The held lock of one run; `release` (or the end of the process) lets it go."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the record lock
            self._fd = None


def hold(path: Path, run_id: str, command: str) -> RunLock:
    """Take the lock of run `run_id` for `command` (`run`, `resume`), or raise RunBusy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            os.close(fd)
            raise
        holder = _holder(fd)
        os.close(fd)
        raise RunBusy(_busy_message(run_id, holder)) from None
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    record = {"pid": os.getpid(), "started": started, "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
    return RunLock(fd)


def _holder(fd: int, wait: float = 2.0) -> dict[str, object]:
    """The holder's record.  It writes it just after it takes the lock, so for a moment the file
    may be empty or still name an earlier holder (who is gone): wait for a live one."""
    deadline = time.monotonic() + wait
    while True:
        found = _record(fd)
        if _alive(found.get("pid")) or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def _record(fd: int) -> dict[str, object]:
    try:
        found = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _alive(pid: object) -> bool:
    from .procs import pid_in_use

    return isinstance(pid, int) and pid > 0 and pid_in_use(pid)


def _busy_message(run_id: str, holder: dict[str, object]) -> str:
    who = f"pid {holder.get('pid', '?')}, started {holder.get('started', '?')}"
    verb = "resumed" if holder.get("command") == "resume" else "run"
    return (
        f"run {run_id} is being {verb} by another runner ({who}); one runner at a time runs "
        "or resumes a run: wait for it to end, or stop it"
    )
