"""The `dask` executor: attempts run on the workers of a Dask distributed cluster.

Two halves live here, one on each side of the network.

The runner's side, `DaskExecutor`, starts a `LocalCluster` (no `--scheduler`) or connects a
`Client` to one, and submits one Dask task per attempt: `run_attempt(task, ...)`, a top-level
function the workers import from this module, so this package (the yaml-pipeline-runner
distribution) must be installed on them.
Results are fetched by the client's event loop as each task finishes (`as_completed` with
results); a small thread moves them to a queue and writes a byte to a pipe, so `wait` selects on
that pipe and the scheduler's signal pipe and never waits on a network round trip itself.
Capacity is four tasks per worker thread: Dask's own round trip per task (~10 ms) is longer than
a trivial step, so a worker that finishes one finds the next already there (the Dask scheduler
hands them to threads as they free up, highest priority first: the runner's order).

The worker's side, `run_attempt`, never runs a step in the Dask worker's own process: a thread
cannot be stopped, and a step that hangs or swallows exceptions must be.  It hands the attempt to
a *host*, a child process running the process pool's own `worker_main` loop over a socket: the
same `execute` (plugin by name, log file, output checks, secret masking), so a step behaves the
same under both executors.  Hosts are started once and reused for the attempts of the same run
(imports stay warm); the runner stops its run's hosts when it closes, and an idle host left by a
runner that died is stopped a minute later.  `run_attempt` waits
for the host's answer and enforces the attempt's timeout itself: SIGTERM to the host's process
group and to the group of the command it started, SIGKILL after the grace period (a plugin that
stops its own processes at the timeout, like `shell`, is given a grace period more to do so).
A host that dies
gives a `crash` (or `timeout`/`cancelled` when it was stopped on purpose).  Hosts are started
from one long-lived thread and ask the kernel to SIGTERM them when it goes
(PR_SET_PDEATHSIG), so they, and the commands they run, die with the Dask worker.

Logs: an attempt writes its log into the run's folder when that path is writable on the
worker (a shared file system, or the local cluster: the log is live), else into a temporary file;
either way the bytes travel back with the `Completion` and the runner appends them to the step's
log unless its file already holds exactly them.  So `runner logs` works whether the workers share
the runner's disk or not.  Without the run's folder, a step's scratch folder is a temporary
one on the worker; without the pipeline's folder, steps run in the worker's current folder.

Stopping: `cancel` asks every worker (out of band, `Client.run`) to stop this run's attempts
and to refuse new ones, waits up to the grace period for the stopped attempts to report, and
hands tasks that never started back as `Returned`.  A host also checks that its Dask task is still
wanted, so attempts stop when the runner is gone (its client's futures are released).

Worker loss: Dask re-runs a task whose worker died on another worker (up to its
`allowed-failures`, 3 by default), and the scheduler sees only the one `Completion` of the
attempt that finished; past that limit the future errs (`KilledWorker`) and becomes a `crash`,
which the step's retry policy handles.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any, NamedTuple

from ..errors import UsageError
from ..messages import Completion, Started, Task
from ..procs import GRACE, kill_group
from ..worker import death, failure
from . import Event, Returned

INSTALL_HINT = "pip install 'yaml-pipeline-runner[dask]'"
QUEUE_PER_THREAD = 4  # tasks handed to Dask per worker thread: Dask's own round trip is ~10 ms
INFO_MAX_AGE = 1.0  # seconds between refreshes of the cluster's size and resources
CONNECT_TIMEOUT = 10.0
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


# =============================================================================== the runner


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise UsageError(
            f"--executor dask needs Dask distributed, which is not installed ({exc}); "
            f"install the `dask` extra: {INSTALL_HINT}"
        ) from None
    return distributed


@dataclass
class _Pending:
    task: Task
    future: Any
    submitted: float


class DaskExecutor:
    name = "dask"

    def __init__(self, workers: int, secrets: list[str], scheduler: str | None = None) -> None:
        self.distributed = _import_distributed()
        self.secrets = list(secrets)
        self.token = uuid.uuid4().hex
        self.address = scheduler
        self.cluster: Any = None
        self.client: Any = None
        self.futures: dict[int, _Pending] = {}
        self.by_key: dict[str, int] = {}
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.notify_r, self.notify_w = os.pipe()
        os.set_blocking(self.notify_r, False)
        os.set_blocking(self.notify_w, False)
        self.killing = False
        self.self_timed: dict[str, bool] = {}
        self.threads = 0
        self.resources: list[dict[str, float]] = []
        self.info_at = 0.0
        self.added = threading.Event()  # set by submit(): the pump has something to wait for
        self.closing = False
        self._connect(max(1, workers))
        self.size = max(1, self.threads)
        self.pump = threading.Thread(target=self._pump, name="runner-dask-results", daemon=True)

    # -- the cluster ----------------------------------------------------------------------------

    def _connect(self, workers: int) -> None:
        distributed = self.distributed
        try:
            if self.address is None:
                from .process import _without_main_module

                with _without_main_module():  # the workers need nothing from our __main__
                    self.cluster = distributed.LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                    )
                self.client = distributed.Client(self.cluster, set_as_default=False)
                self.client.wait_for_workers(workers, timeout=60)
            else:
                self.client = distributed.Client(
                    self.address, timeout=CONNECT_TIMEOUT, set_as_default=False
                )
        except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
            self.close()
            where = f"the Dask scheduler at {self.address}" if self.address else "a local cluster"
            raise UsageError(f"cannot use {where}: {type(exc).__name__}: {exc}") from None
        self._refresh(force=True)
        # Results are fetched in the client's event loop as soon as each task finishes
        # (`as_completed(with_results=True)`); the pump thread moves them to `done`.
        self.completed = distributed.as_completed(
            [], loop=self.client.loop, with_results=True, raise_errors=False
        )

    def _refresh(self, force: bool = False) -> None:
        """The cluster's threads and each worker's resources, at most once a second."""
        now = time.monotonic()
        if not force and now - self.info_at < INFO_MAX_AGE:
            return
        self.info_at = now
        try:
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        except (OSError, TimeoutError):
            return
        self.threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
        self.resources = [dict(w.get("resources") or {}) for w in workers.values()]

    def start(self) -> None:
        # Connected (or the local cluster started) in __init__, so errors come before the run.
        self.pump.start()

    def _pump(self) -> None:
        while not self.closing:
            try:
                batch = self.completed.next_batch(block=True)
            except StopIteration:  # nothing in flight: sleep until submit() adds something
                self.added.wait(0.5)
                self.added.clear()
                continue
            for item in batch:
                self.done.put(item)
            self._notify()

    def capacity(self) -> int:
        self._refresh()
        return max(QUEUE_PER_THREAD * max(self.threads, 1) - len(self.futures), 0)

    # -- work -----------------------------------------------------------------------------------

    def submit(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.resources and not self._offered(task.resources):
                self._finish_now(task, self._no_worker_message(task.resources))
                continue
            shipped = task._replace(
                log_path=os.path.abspath(task.log_path),
                scratch_dir=os.path.abspath(task.scratch_dir),
                resources=None,
            )
            key = f"runner-{task.node_id}-{task.attempt_id}-{self.token[:12]}"
            future = self.client.submit(
                run_attempt,
                shipped,
                self.secrets,
                self.token,
                self._slack(task.uses),
                key=key,
                pure=False,
                resources=task.resources,
                priority=-task.attempt_id,
            )
            self.futures[task.attempt_id] = _Pending(task, future, time.time())
            self.by_key[key] = task.attempt_id
            self.completed.add(future)
        self.added.set()

    def _offered(self, wanted: dict[str, float]) -> bool:
        self._refresh()
        return any(
            all(have.get(name, 0) >= amount for name, amount in wanted.items())
            for have in self.resources
        )

    def _no_worker_message(self, wanted: dict[str, float]) -> str:
        asked = ", ".join(f"{k}={v:g}" for k, v in wanted.items())
        return (
            f"no Dask worker offers the resources this step needs ({asked}); start workers "
            f'with `dask worker ADDRESS --resources "{asked.replace(", ", ",")}"`'
        )

    def _finish_now(self, task: Task, message: str) -> None:
        self.done.put(failure(task, "error", message, time.time(), "dask"))
        self._notify()

    def _slack(self, uses: str) -> float:
        """Extra time before the worker stops an attempt of a plugin that enforces the timeout
        itself (`shell` stops its process group first, and reports it better)."""
        if uses not in self.self_timed:
            from .process import _safe_load

            plugin = _safe_load(uses)
            self.self_timed[uses] = bool(getattr(plugin, "enforces_timeout", False))
        return GRACE + 1.0 if self.self_timed[uses] else 0.0

    def _notify(self) -> None:
        try:
            os.write(self.notify_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (wait() is already due) or closed (we are shutting down)

    def wait(self, timeout: float | None, wake_fd: int | None) -> list[Event]:
        if self.done.empty():
            fds = [self.notify_r] + ([wake_fd] if wake_fd is not None else [])
            select.select(fds, [], [], timeout)
        return self._collect()

    def _collect(self) -> list[Event]:
        _drain(self.notify_r)
        events: list[Event] = []
        while True:
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return events
            if isinstance(item, Completion):
                events.append(item)
                continue
            future, result = item
            pending = self.futures.get(self.by_key.get(future.key, -1))
            if pending is None or pending.future is not future:
                continue  # handed back or given up already
            self._forget(pending)
            if isinstance(result, AttemptResult):
                _store_log(pending.task.log_path, result)
                events.append(result.completion)
            else:
                events.append(self._lost(pending, result))

    def _lost(self, pending: _Pending, result: Any) -> Completion:
        """A task that gave no AttemptResult: its workers died, or Dask dropped it.  `result`
        is what `as_completed` gives then: (type, exception, traceback) or an exception."""
        future = pending.future
        exc = result[1] if isinstance(result, tuple) and len(result) == 3 else result
        if not isinstance(exc, BaseException) or type(exc).__name__ == "CancelledError":
            message = f"Dask dropped the task ({future.status}): the scheduler restarted or lost it"
        elif type(exc).__name__ == "KilledWorker":
            message = f"the Dask workers running this attempt died ({exc})"
        else:
            message = f"Dask could not run the attempt: {type(exc).__name__}: {exc}"
        return failure(pending.task, "crash", message, pending.submitted, "dask")

    def _forget(self, pending: _Pending) -> None:
        self.futures.pop(pending.task.attempt_id, None)
        self.by_key.pop(pending.future.key, None)

    # -- stopping -------------------------------------------------------------------------------

    def cancel(self, grace: float) -> list[Event]:
        events = self._collect()
        if not self.futures:
            return events
        running = self._stop_on_workers(grace)
        unstarted = [p for aid, p in self.futures.items() if aid not in running]
        self._drop(unstarted)
        events.extend(Returned(p.task) for p in unstarted)
        deadline = time.monotonic() + grace + 5.0
        killed = grace <= 0
        while self.futures and time.monotonic() < deadline:
            if self.killing and not killed:
                self._stop_on_workers(0.0)
                killed = True
            select.select([self.notify_r], [], [], min(0.1, max(deadline - time.monotonic(), 0)))
            events.extend(self._collect())
        left = list(self.futures.values())
        self._drop(left)
        now = time.time()
        events.extend(
            Completion(
                p.task.attempt_id,
                False,
                None,
                "cancelled",
                "cancelled; the Dask worker did not confirm that its processes stopped",
                "",
                None,
                p.submitted,
                now,
                "dask",
            )
            for p in left
        )
        return events

    def _stop_on_workers(self, grace: float) -> set[int]:
        """Tell every worker to stop this run's attempts; the ids of those that were running."""
        try:
            replies = self.client.run(_cancel_attempts, self.token, grace, on_error="ignore")
        except Exception:
            return set()
        return {aid for ids in replies.values() if isinstance(ids, list) for aid in ids}

    def _drop(self, pending: list[_Pending]) -> None:
        if not pending:
            return
        try:
            self.client.cancel([p.future for p in pending])
        except Exception:
            pass
        for p in pending:
            self._forget(p)

    def kill(self) -> None:
        # Called from a signal handler: only a flag; cancel() (running or next) acts on it.
        self.killing = True

    def close(self) -> None:
        self.closing = True
        self.added.set()
        if self.client is not None:
            try:
                self.client.run(_retire_hosts, self.token, on_error="ignore")
            except Exception:
                pass
            try:
                self.client.close(timeout=10)
            except Exception:
                pass
            self.client = None
        if self.cluster is not None:
            try:
                self.cluster.close(timeout=20)
            except Exception:
                pass
            self.cluster = None
        for fd in (self.notify_r, self.notify_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.notify_r = self.notify_w = -1


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except (BlockingIOError, OSError):
        pass


def _store_log(path: str, result: AttemptResult) -> None:
    """Append the shipped log to the step's log, unless the worker wrote this very file."""
    if not result.log_size:
        return
    if result.log_offset is not None and _holds(path, result):
        return
    try:
        with open(path, "ab") as f:
            f.write(result.log)
    except OSError:
        pass  # the run's folder went away; the attempt's outcome is what matters


def _holds(path: str, result: AttemptResult) -> bool:
    assert result.log_offset is not None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            f.seek(result.log_offset)
            left = result.log_size
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    return False
                digest.update(chunk)
                left -= len(chunk)
    except OSError:
        return False
    return digest.hexdigest() == result.log_digest


# =============================================================================== the worker
#
# Everything below runs in a Dask worker's process (run_attempt, _cancel_attempts,
# _retire_hosts) or in a host process (host_main).  State is per worker process.

HOST_CODE = "from pipeline_runner.executors.dask import host_main; host_main()"

_lock = threading.Lock()
_idle: list[_Host] = []
_running: dict[tuple[str, int], _Slot] = {}
_cancelled: set[str] = set()  # tokens of runs that were cancelled: refuse their attempts
_spawner: ThreadPoolExecutor | None = None


def run_attempt(task: Task, secrets: list[str], token: str, slack: float) -> AttemptResult:
    """Run one attempt in a host process of this Dask worker (the Dask task of an attempt)."""
    name, still_wanted = _dask_context()
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
    name = worker.name
    label = name if isinstance(name, str) and name and name != worker.address else worker.address

    def still_wanted() -> bool:
        return state is None or state.state not in ("cancelled", "released", "forgotten")

    return str(label), still_wanted


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
        try:
            self.proc.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            kill_group(self.pid, signal.SIGKILL)
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
                self.stop("timeout", GRACE)
            elif self.reason is None and not still_wanted():
                self.stop("cancelled", GRACE)
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
        try:
            while not host.eof and host.conn.poll():
                for message in host.conn.recv():  # a batch of Started and Completion
                    if isinstance(message, Started):
                        host.step_pgid = message.pgid
                    elif message.attempt_id == self.task.attempt_id:
                        host.step_pgid = None
                        return message  # type: ignore[no-any-return]
        except (EOFError, OSError):
            host.eof = True
        return None

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


def _cancel_attempts(token: str, grace: float) -> list[int]:
    """Stop this run's attempts on this worker and refuse its next ones (run by `Client.run`,
    in the worker's event loop: it only sends signals).  Returns the ids it stopped."""
    with _lock:
        _cancelled.add(token)
        slots = [slot for (t, _), slot in _running.items() if t == token]
    for slot in slots:
        slot.stop("cancelled", grace)
    return [slot.task.attempt_id for slot in slots]


def _retire_hosts(token: str) -> int:
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
    from ..worker import _set_parent_death_signal, worker_main
    from . import _preload  # noqa: F401  (the built-in plugins, imported once)

    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:
        return  # the Dask worker died before we could ask to follow it
    conn = Connection(fd)
    try:
        name, secrets = conn.recv()
    except (EOFError, OSError):
        return
    worker_main(conn, name, secrets)
