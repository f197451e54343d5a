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
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    """How a command ended: its exit code or signal, its stdout and whether it timed out."""

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


def still_running(pid: object, start_time: object) -> bool:
    """Whether the process recorded as `pid` with `start_time` (`process_start_time`) still
    runs: the pid alone may have been given to another process since.  Without a recorded
    start time (a run recorded by an older runner), whether the pid is in use; with no pid
    at all, assumed so."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    if isinstance(start_time, str) and start_time:
        return process_start_time(pid) == start_time and _not_zombie(pid)
    return pid_in_use(pid)


def pid_in_use(pid: int) -> bool:
    """Whether some process has this pid (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_recorded_group(pgid: int, start_time: str) -> bool:
    """SIGKILL a recorded step's process group if its leader is still that same process."""
    if not start_time or process_start_time(pgid) != start_time:
        return False
    return kill_group(pgid, signal.SIGKILL)


def term_recorded_group(pgid: int, start_time: str) -> bool:
    """SIGTERM a running step's process group if its leader is still that same process."""
    if not start_time or process_start_time(pgid) != start_time:
        return False
    return kill_group(pgid, signal.SIGTERM)


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


def terminate(
    groups: Iterable[int],
    grace: float,
    *,
    term: bool = True,
    gone: Callable[[int], bool] | None = None,
) -> list[int]:
    """THE way anything is stopped: SIGTERM each process group (unless `term` is False: it
    was asked already), wait up to `grace` seconds for them to be gone, then SIGKILL what is
    left and wait a moment for that.  `gone(group)` says when one is gone (by default: no
    member that is not a zombie).  Returns the groups that had to be killed."""
    alive = [g for g in groups if kill_group(g, signal.SIGTERM if term else 0)]
    is_gone = gone or (lambda group: not group_alive(group))
    left = _wait_until(alive, is_gone, grace)
    for group in left:
        kill_group(group, signal.SIGKILL)
    _wait_until(left, is_gone, 1.0)  # so that nothing killed here is taken for an escapee
    return left


def _wait_until(groups: list[int], gone: Callable[[int], bool], timeout: float) -> list[int]:
    """The groups not gone within `timeout` seconds."""
    deadline = time.monotonic() + max(timeout, 0.0)
    delay = 0.005
    while groups:
        groups = [g for g in groups if not gone(g)]
        if not groups or time.monotonic() >= deadline:
            break
        time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
        delay = min(delay * 2, 0.05)
    return groups


def stop_group(pgid: int, grace: float = GRACE) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after `grace` seconds."""
    terminate([pgid], grace)


def attempt_deadline(
    started: float, timeout: float | None, grace: float, self_timed: bool
) -> float | None:
    """THE deadline rule, the same for every executor: when (on the clock `started` was read
    from) the executor stops an attempt from outside.  A plugin that stops its own processes
    at the timeout (`enforces_timeout`, like `shell`) is given its grace period and a second
    more to do so and report it; any other is stopped at the timeout itself."""
    if timeout is None:
        return None
    return started + timeout + timeout_slack(grace, self_timed)


def timeout_slack(grace: float, self_timed: bool) -> float:
    """How long past its timeout an attempt is stopped from outside (see attempt_deadline)."""
    return grace + 1.0 if self_timed else 0.0


def kill_group_now(pgid: int) -> None:
    """SIGKILL the group and wait (briefly) until its members are dead, so that nothing
    killed here is later taken for a process that escaped."""
    terminate([pgid], 0.0, term=False)


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    write: Callable[[bytes], None],
    timeout: float | None,
    grace: float = GRACE,
    on_start: Callable[[int], None] | None = None,
) -> ProcessResult:
    """Run `argv` with stdin empty; stdout is captured (up to defaults.MAX_OUTPUT_BYTES), and
    both streams go to `write`."""
    proc = subprocess.Popen(
        list(argv),
        stdin=_devnull(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    if on_start is not None:
        on_start(proc.pid)
    assert proc.stdout is not None and proc.stderr is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    max_stdout = defaults.MAX_OUTPUT_BYTES
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
            # The leader is reaped as soon as it exits (a zombie would count as alive), then
            # what it left in its group is waited for, all within the one grace period.
            terminate([proc.pid], grace, gone=lambda g: _reaped(proc) and not group_alive(g))
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


def _reaped(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


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
