"""Child processes of steps: start, stream to the log, stop the whole tree.

Every step process starts in a session of its own, so its process group holds everything it
starts (a grandchild left in the background too).  Stopping means SIGTERM to the group, then
SIGKILL after a grace period.  When the step's main process exits, whatever it left behind in its
group is stopped as well, and the runner never waits on a pipe a grandchild still holds: it
watches the child through a pidfd, not the pipe's end-of-file.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

GRACE = 3.0
_CHUNK = 65536


@dataclass
class ProcessResult:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stdout: bytes
    timed_out: bool
    stdout_too_big: bool


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def kill_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def group_alive(pgid: int) -> bool:
    return kill_group(pgid, 0)


def stop_group(pgid: int, grace: float = GRACE) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after `grace` seconds."""
    if not kill_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    delay = 0.005
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    kill_group(pgid, signal.SIGKILL)


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    log: BinaryIO,
    timeout: float | None,
    grace: float = GRACE,
    max_stdout: int = 16 * 1024 * 1024,
    capture: bool = True,
    on_start: Callable[[int], None] | None = None,
    write: Callable[[bytes], None] | None = None,
) -> ProcessResult:
    """Run `argv` with stdin empty, stdout captured and copied to `log`, stderr to `log`."""
    log.flush()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else log.fileno(),
        stderr=log.fileno(),
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    if on_start is not None:
        on_start(proc.pid)
    emit = write or log.write
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    timed_out = False
    pidfd = os.pidfd_open(proc.pid)
    sel = selectors.DefaultSelector()
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    if proc.stdout is not None:
        os.set_blocking(proc.stdout.fileno(), False)
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
    exited = False
    try:
        while not exited:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                timed_out = True
                break
            for key, _ in sel.select(wait):
                if key.data == "exit":
                    exited = True
                else:
                    data = _read(proc.stdout)
                    if data is None:
                        continue
                    if not data:
                        sel.unregister(proc.stdout)
                        continue
                    emit(data)
                    if size <= max_stdout:
                        chunks.append(data)
                    size += len(data)
        if timed_out:
            stop_group(proc.pid, grace)
        else:
            # The main process is done: stop anything it left running in its group.
            stop_group(proc.pid, min(grace, 1.0))
        proc.wait()
        if proc.stdout is not None:
            # Read what is left without waiting for a pipe held open by an escaped process.
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                data = _read(proc.stdout)
                if not data:
                    break
                emit(data)
                if size <= max_stdout:
                    chunks.append(data)
                size += len(data)
    finally:
        sel.close()
        os.close(pidfd)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.returncode is None:
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
        log.flush()
    code = proc.returncode
    return ProcessResult(
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        stdout=b"".join(chunks),
        timed_out=timed_out,
        stdout_too_big=size > max_stdout,
    )


def _read(stream: BinaryIO | None) -> bytes | None:
    if stream is None:
        return b""
    with contextlib.suppress(BlockingIOError):
        return os.read(stream.fileno(), _CHUNK)
    return None
