"""Child processes of steps: start, stream to the log, stop the whole tree.

Every step process starts in a session of its own, so its process group holds everything it
starts (a grandchild left in the background too).  Stopping means SIGTERM to the group, then
SIGKILL after a grace period.  When the step's main process exits, whatever it left behind in its
group is stopped as well, and the runner never waits on a pipe a grandchild still holds: it
watches the child through a pidfd, not the pipe's end-of-file.
"""

from __future__ import annotations

import functools
import math
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from . import defaults

GRACE = defaults.GRACE
_CHUNK = 65536


def platform_problem() -> str | None:
    """What this operating system lacks for running steps, or None.

    A step's processes are watched through a pidfd (Linux 5.3), and a process worker adopts
    what a step leaves behind with the child-subreaper prctl (Linux 3.4)."""
    import sys

    pidfd_open = getattr(os, "pidfd_open", None)
    if sys.platform.startswith("linux") and pidfd_open is not None:
        try:
            os.close(pidfd_open(os.getpid()))
            return None
        except OSError:
            pass
    import platform

    system = f"{platform.system() or sys.platform} {platform.release()}".strip()
    return (
        "running steps needs Linux 5.3 or later (pidfd_open and the child-subreaper prctl), "
        f"which this system ({system}) does not provide"
    )


@dataclass
class ProcessResult:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stdout: bytes
    timed_out: bool
    stdout_too_big: bool
    stdout_size: int = 0  # bytes the command wrote to stdout, kept or not


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


def process_start_time(pid: int) -> str:
    """The start time of a process in clock ticks since boot ("" if it is gone): with the pid
    it names one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def kill_recorded_group(pgid: int, start_time: str) -> bool:
    """SIGKILL a recorded step's process group if its leader is still that same process."""
    if not start_time or process_start_time(pgid) != start_time:
        return False
    return kill_group(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether the group has a member that is not a zombie (a zombie is already dead; it only
    waits for its parent to collect it)."""
    if not kill_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, grace: float = GRACE) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after `grace` seconds."""
    if not kill_group(pgid, signal.SIGTERM):
        return
    if not _wait_gone(pgid, grace):
        kill_group(pgid, signal.SIGKILL)
        _wait_gone(pgid, 1.0)


def kill_group_now(pgid: int) -> None:
    """SIGKILL the group and wait (briefly) until its members are dead, so that nothing
    killed here is later taken for a process that escaped."""
    if kill_group(pgid, signal.SIGKILL):
        _wait_gone(pgid, 1.0)


def _wait_gone(pgid: int, timeout: float) -> bool:
    """Whether the group is gone (its members dead) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    write: Callable[[bytes], None],
    timeout: float | None,
    grace: float = GRACE,
    max_stdout: int = 16 * 1024 * 1024,
    on_start: Callable[[int], None] | None = None,
    preexec: Callable[[], None] | None = None,
) -> ProcessResult:
    """Run `argv` with stdin empty; stdout is captured, and both streams go to `write`."""
    proc = subprocess.Popen(
        list(argv),
        stdin=_devnull(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        preexec_fn=preexec,
    )
    if on_start is not None:
        on_start(proc.pid)
    assert proc.stdout is not None and proc.stderr is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    captured = _Capture(write, max_stdout)
    timed_out = False
    pidfd = os.pidfd_open(proc.pid)
    poller = select.poll()  # made per command: cheaper than an epoll selector
    poller.register(pidfd, select.POLLIN)
    streams = {s.fileno(): (s, is_out) for s, is_out in ((proc.stdout, True), (proc.stderr, False))}
    for fd in streams:
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    try:
        exited = False
        while not exited:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                timed_out = True
                break
            for fd, _ in poller.poll(None if wait is None else math.ceil(wait * 1000)):
                if fd == pidfd:
                    exited = True
                elif not captured.pump(*streams[fd]):
                    poller.unregister(fd)
        if timed_out:
            kill_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)  # reap the leader, so it does not count as alive
            except subprocess.TimeoutExpired:
                pass
            stop_group(proc.pid, max(grace - (time.monotonic() - deadline), 0.0))  # type: ignore[operator]
            proc.wait()
        else:
            # Reap the main process first (a zombie still counts as a group member), then stop
            # whatever it left running in its group.
            proc.wait()
            stop_group(proc.pid, min(grace, 1.0))
        # Read what is left without waiting on a pipe held open by an escaped process.
        end = time.monotonic() + 0.5
        leftovers = ((proc.stdout, True), (proc.stderr, False))
        for stream, is_out in leftovers:
            while time.monotonic() < end and captured.pump(stream, is_out):
                pass
    finally:
        os.close(pidfd)
        proc.stdout.close()
        proc.stderr.close()
        if proc.returncode is None:  # the log could not be written, or a bug: stop it all
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            kill_group_now(proc.pid)
    code = proc.returncode
    return ProcessResult(
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        stdout=b"".join(captured.chunks),
        timed_out=timed_out,
        stdout_too_big=captured.size > max_stdout,
        stdout_size=captured.size,
    )


@functools.cache
def _devnull() -> int:
    """One /dev/null for the stdin of every command (subprocess.DEVNULL opens it each time)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


class _Capture:
    def __init__(self, write: Callable[[bytes], None], max_stdout: int) -> None:
        self.write = write
        self.max_stdout = max_stdout
        self.chunks: list[bytes] = []
        self.size = 0

    def pump(self, stream: IO[bytes], is_out: bool) -> bool:
        """Move what is readable now; False at end-of-file."""
        data = _read(stream)
        if data is None:
            return True
        if not data:
            return False
        self.write(data)
        if is_out:
            if self.size <= self.max_stdout:
                self.chunks.append(data)
            self.size += len(data)
        return True


def _read(stream: IO[bytes]) -> bytes | None:
    """A chunk, b"" at end-of-file, None when nothing is there yet."""
    try:
        return os.read(stream.fileno(), _CHUNK)
    except BlockingIOError:
        return None
    except (OSError, ValueError):
        return b""
