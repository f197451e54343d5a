"""The cluster's half of the `dask` executor: what runs in a Dask worker's process.

`run_attempt(task, secrets, token, slack)` is the Dask task of one attempt (a top-level function
the Dask workers import from here, so this package must be installed on them).  It never runs a
step in the Dask worker's own process: a thread cannot be stopped, and a step that hangs or
swallows exceptions must be.  It hands the attempt to a *host*, a child process running the
process pool's own `worker_main` loop over a socket: the same `execute` (plugin by name, log
file, output checks, secret masking), so a step behaves the same under both executors.  Hosts
are started once and reused for the attempts of the same run (imports stay warm); the runner
stops its run's hosts when it closes (`retire_hosts`), and an idle host left by a runner that
died is stopped a minute later.  `run_attempt` waits for the host's answer and enforces the
attempt's deadline itself (the one rule, `procs.attempt_deadline`: `slack` is how long past
the timeout): SIGTERM to the host's process group and to the group of the command it started,
SIGKILL after the grace period.  A host that dies gives a `crash` (or `timeout`/`cancelled`
when it was stopped on purpose).  Hosts are started from one long-lived thread and ask the
kernel to SIGTERM them when it goes (PR_SET_PDEATHSIG), so they, and the commands they run,
die with the Dask worker.

An attempt writes its log into the run's folder when that path is writable here (a shared file
system, or the local cluster), else into a temporary file; either way the bytes travel back in
the `AttemptResult`.  `cancel_attempts` (run by `Client.run`) stops a run's attempts here and
refuses its next ones.

Only public names of the rest of the package are used here.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any, NamedTuple

from .. import wire
from ..messages import Completion, Started, Task
from ..procs import GRACE, kill_group, terminate
from ..worker import death, failure

LOG_SHIP_LIMIT = 32 * 1024 * 1024  # at most this much of one attempt's log travels back
IDLE_HOST_SECONDS = 60.0  # an idle host of another run is stopped after this long
POLL = 0.25  # how often a waiting attempt checks its deadline and whether it is still wanted


class AttemptResult(NamedTuple):
    """What `run_attempt` sends back: plain data."""

    completion: Completion
    log: bytes  # what the attempt wrote to its log (the tail, past LOG_SHIP_LIMIT)
    log_size: int  # how many bytes it wrote
    log_digest: str  # sha256 of those bytes
    log_offset: int | None  # where the worker appended them to task.log_path; None: elsewhere


# Everything below runs in a Dask worker's process (run_attempt, cancel_attempts,
# retire_hosts) or in a host process (host_main).  State is per worker process.

HOST_CODE = "from pipeline_runner.executors.dask_worker import host_main; host_main()"

_lock = threading.Lock()
_idle: list[_Host] = []
_running: dict[tuple[str, int], _Slot] = {}
_cancelled: set[str] = set()  # tokens of runs that were cancelled: refuse their attempts
_spawner: ThreadPoolExecutor | None = None


def run_attempt(task: Task, secrets: list[str], token: str, slack: float) -> AttemptResult:
    """Run one attempt in a host process of this Dask worker (the Dask task of an attempt)."""
    name, still_wanted = _dask_context()
    return _attempt(task, secrets, token, slack, name, still_wanted)


def run_batch(
    tasks: list[Task],
    secrets: list[str],
    token: str,
    slacks: list[float],
    before: list[AttemptResult] | None = None,
) -> list[AttemptResult]:
    """Run attempts one after the other, each exactly as `run_attempt` runs it (its own
    deadline, its own host round trip), as one Dask task: the packed form of several Dask
    tasks of one attempt each.  A follow-up (`Task.after`) runs only if the attempt it follows
    succeeded, earlier in this batch or in `before` (the result of the batch this one was
    queued behind); it is skipped otherwise and has no result.  Once the Dask task is no
    longer wanted (the runner is gone, or dropped it), the attempts not started are left out."""
    name, still_wanted = _dask_context()
    succeeded = {r.completion.attempt_id for r in before or () if r.completion.ok}
    results: list[AttemptResult] = []
    for task, slack in zip(tasks, slacks, strict=True):
        if task.after and task.after not in succeeded:
            continue
        if not still_wanted():
            break
        result = _attempt(task, secrets, token, slack, name, still_wanted)
        if result.completion.ok:
            succeeded.add(task.attempt_id)
        results.append(result)
    return results


def warm_host(token: str, secrets: list[str], dask_worker: Any = None) -> bool:
    """Start this run's host on this worker ahead of its first attempt (run by `Client.run`,
    in the worker's event loop: it only starts a process), so that the first attempt finds the
    host's imports done."""
    name = _label(dask_worker) if dask_worker is not None else f"pid{os.getpid()}"
    _release(_acquire(token, secrets, name))
    return True


def _attempt(
    task: Task, secrets: list[str], token: str, slack: float, name: str, still_wanted: Any
) -> AttemptResult:
    task, offset, temp = _localise(task, name)
    slot = _Slot(task)
    with _lock:
        if token in _cancelled:
            slot.reason = "cancelled"
        _running[(token, task.attempt_id)] = slot
    try:
        if slot.reason is None:
            slot.host = _acquire(token, secrets, name)
        done = slot.run(slack, still_wanted, name)
    finally:
        with _lock:
            _running.pop((token, task.attempt_id), None)
        if slot.host is not None:
            _release(slot.host)
    return _ship(done, task.log_path, offset, temp, name)


def _dask_context() -> tuple[str, Any]:
    """This worker's name (its address if it was not named) and a check that the Dask task
    running this attempt is still wanted (not cancelled, its client not gone)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        state = worker.state.tasks.get(worker.get_current_task())
    except Exception:  # not in a Dask task (tests call run_attempt directly)
        return f"pid{os.getpid()}", lambda: True

    def still_wanted() -> bool:
        return state is None or state.state not in ("cancelled", "released", "forgotten")

    return _label(worker), still_wanted


def _label(worker: Any) -> str:
    """How completions name a Dask worker: its name, else its address."""
    name, address = worker.name, worker.address
    return str(name if isinstance(name, str) and name and name != address else address)


def _localise(task: Task, worker: str) -> tuple[Task, int | None, str | None]:
    """Where the attempt logs and works on this machine: the run's own folders when they are
    here (a shared disk, the local cluster), else temporary ones.  Returns the task to run, the
    offset the log starts at when it is the run's own file, and the temporary log's path."""
    changes: dict[str, Any] = {}
    if not os.path.isdir(task.pipeline_dir):
        changes["pipeline_dir"] = os.getcwd()
    folder = os.path.dirname(task.log_path)
    if os.path.isdir(folder) and os.access(folder, os.W_OK):
        try:
            offset = os.path.getsize(task.log_path)
        except OSError:
            offset = 0
        return task._replace(**changes), offset, None
    fd, temp = tempfile.mkstemp(prefix="runner-attempt-", suffix=".log")
    os.close(fd)
    changes["log_path"] = temp
    scratch = os.path.join(tempfile.gettempdir(), "runner-scratch", task.run_id, task.node_id)
    changes["scratch_dir"] = scratch
    if "pipeline_dir" in changes:
        note = (
            f"runner: note: the pipeline folder {task.pipeline_dir} does not exist on Dask worker "
            f"{worker}; the step runs in {changes['pipeline_dir']}\n"
        )
        with open(temp, "ab") as f:
            f.write(note.encode())
    return task._replace(**changes), None, temp


def _ship(
    done: Completion, path: str, offset: int | None, temp: str | None, worker: str
) -> AttemptResult:
    """Read back what the attempt wrote to its log (and remove a temporary log)."""
    start = offset or 0
    digest = hashlib.sha256()
    tail = b""
    size = 0
    try:
        with open(path, "rb") as f:
            f.seek(start)
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                tail = (tail + chunk)[-LOG_SHIP_LIMIT:]
    except OSError:
        pass
    if size > LOG_SHIP_LIMIT:
        kept = f" (kept at {path})" if temp else ""
        head = f"runner: the first {size - len(tail)} bytes of this log stayed on {worker}{kept}\n"
        tail = head.encode() + tail
    elif temp:
        try:
            os.unlink(temp)
        except OSError:
            pass
    return AttemptResult(done, tail, size, digest.hexdigest(), offset)


class _Host:
    """A child process of the Dask worker that runs attempts one at a time (`worker_main`)."""

    def __init__(self, key: tuple[str, tuple[str, ...]], proc: Any, conn: Connection) -> None:
        self.key = key
        self.proc = proc
        self.conn = conn
        self.pidfd = os.pidfd_open(proc.pid)
        self.step_pgid: int | None = None
        self.idle_since = time.monotonic()
        self.eof = False

    @classmethod
    def spawn(cls, key: tuple[str, tuple[str, ...]], secrets: list[str], name: str) -> _Host:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-c", HOST_CODE, str(theirs.fileno()), str(os.getpid())]
        try:
            # From a thread that lives as long as this process: the host's parent-death
            # signal fires when the thread that started it ends.
            proc = (
                _spawner_thread()
                .submit(
                    subprocess.Popen,
                    argv,
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                .result()
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        conn.send((name, list(secrets)))  # secrets on the socket, never on a command line
        return cls(key, proc, conn)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def alive(self) -> bool:
        return not self.eof and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        kill_group(self.pid, sig)
        if self.step_pgid is not None:
            kill_group(self.step_pgid, sig)

    def close(self) -> None:
        """Stop the host and anything it left in its process group; release its fds."""
        self.signal(signal.SIGKILL if not self.alive() else signal.SIGTERM)
        for close in (self.conn.close, lambda: os.close(self.pidfd)):
            try:
                close()
            except OSError:
                pass
        if self.proc.poll() is None:
            threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        terminate([self.pid], GRACE, term=False, gone=lambda _: self.proc.poll() is not None)
        self.proc.wait()


class _Slot:
    """One attempt running on this worker: its host, and why it is being stopped."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.host: _Host | None = None
        self.reason: str | None = None  # timeout | cancelled
        self.kill_at: float | None = None

    def stop(self, reason: str, grace: float) -> None:
        """SIGTERM the attempt's processes now, SIGKILL them after `grace` (any thread)."""
        if self.reason is None:
            self.reason = reason
        kill_at = time.monotonic() + grace
        self.kill_at = kill_at if self.kill_at is None else min(self.kill_at, kill_at)
        host = self.host
        if host is not None:
            host.signal(signal.SIGKILL if grace <= 0 else signal.SIGTERM)

    def run(self, slack: float, still_wanted: Any, worker: str) -> Completion:
        started = time.time()
        host = self.host
        if host is None or self.reason is not None:
            return failure(self.task, "cancelled", "cancelled before it started", started, worker)
        timeout = self.task.timeout
        deadline = None if timeout is None else time.monotonic() + timeout + slack
        try:
            host.conn.send([self.task])
        except OSError:
            pass  # it died: the pidfd says so below
        while True:
            now = time.monotonic()
            if self.reason is None and deadline is not None and now >= deadline:
                self.stop("timeout", self.task.grace)
            elif self.reason is None and not still_wanted():
                self.stop("cancelled", self.task.grace)
            if self.kill_at is not None and now >= self.kill_at:
                host.signal(signal.SIGKILL)
                self.kill_at = now + 1.0  # again, should it not be gone in a second
            pending = (deadline if self.reason is None else None, self.kill_at)
            limits = [now + POLL] + [t for t in pending if t is not None]
            objects: list[Any] = [host.pidfd] if host.eof else [host.conn, host.pidfd]
            ready = wait_ready(objects, max(min(limits) - now, 0.0))
            if host.conn in ready:
                done = self._receive(host)
                if done is not None:
                    return done
            if host.pidfd in ready:
                return self._receive(host) or self._died(host, started, worker)

    def _receive(self, host: _Host) -> Completion | None:
        """Take what the host sent; this attempt's Completion if it is there."""
        found: Completion | None = None
        try:
            # Everything there now: a retiring host's RETIRE comes with its last completion.
            while not host.eof and host.conn.poll():
                for message in wire.decode(host.conn.recv()):  # Started and Completion
                    if message == wire.RETIRE:  # it exits now (see worker_main)
                        host.eof = True
                    elif isinstance(message, Started):
                        host.step_pgid = message.pgid
                    elif message.attempt_id == self.task.attempt_id:
                        host.step_pgid = None
                        found = message
        except (EOFError, OSError):
            host.eof = True
        return found

    def _died(self, host: _Host, started: float, worker: str) -> Completion:
        code = host.proc.wait()
        host.eof = True
        host.signal(signal.SIGKILL)  # whatever the step left behind in its groups
        return death(self.task, self.reason, code, "attempt process", started, worker)


def _spawner_thread() -> ThreadPoolExecutor:
    global _spawner
    with _lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(1, thread_name_prefix="runner-host-spawner")
        return _spawner


def _acquire(token: str, secrets: list[str], name: str) -> _Host:
    key = (token, tuple(secrets))
    stale: list[_Host] = []
    found: _Host | None = None
    now = time.monotonic()
    with _lock:
        for host in list(_idle):
            if not host.alive() or (
                host.key[0] != token and now - host.idle_since > IDLE_HOST_SECONDS
            ):
                _idle.remove(host)
                stale.append(host)
            elif found is None and host.key == key:
                _idle.remove(host)
                found = host
    for host in stale:
        host.close()
    return found or _Host.spawn(key, secrets, name)


def _release(host: _Host) -> None:
    if host.alive():
        host.idle_since = time.monotonic()
        with _lock:
            _idle.append(host)
    else:
        host.close()


def cancel_attempts(token: str, grace: float) -> list[int]:
    """Stop this run's attempts on this worker and refuse its next ones (run by `Client.run`,
    in the worker's event loop: it only sends signals).  Returns the ids it stopped."""
    with _lock:
        _cancelled.add(token)
        slots = [slot for (t, _), slot in _running.items() if t == token]
    for slot in slots:
        slot.stop("cancelled", grace)
    return [slot.task.attempt_id for slot in slots]


def retire_hosts(token: str) -> int:
    """Stop this run's idle hosts (the run is over).  Returns how many."""
    with _lock:
        mine = [h for h in _idle if h.key[0] == token]
        for host in mine:
            _idle.remove(host)
    for host in mine:
        host.close()
    return len(mine)


def host_main() -> None:
    """The host process: `python -c HOST_CODE FD PARENT_PID`."""
    from ..worker import set_parent_death_signal, worker_main
    from . import _preload  # noqa: F401  (the built-in plugins, imported once)

    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:
        return  # the Dask worker died before we could ask to follow it
    conn = Connection(fd)
    try:
        name, secrets = conn.recv()
    except (EOFError, OSError):
        return
    worker_main(conn, name, secrets)
