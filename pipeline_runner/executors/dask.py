"""The `dask` executor: attempts run on the workers of a Dask distributed cluster.

This module is the runner's half; the cluster's half (what runs in a Dask worker's process)
is `dask_worker.py`, which uses only public names of the package.

The runner's side, `DaskExecutor`, starts a `LocalCluster` (no `--scheduler`) or connects a
`Client` to one, and submits one Dask task per attempt: `dask_worker.run_attempt(task, ...)`, a
top-level function the workers import, so this package (the yaml-pipeline-runner distribution)
must be installed on them.
A small thread takes the finished Dask tasks and moves their results to a queue and writes a
byte to a pipe, so `wait` selects on that pipe and the scheduler's signal pipe and never waits on
a network round trip itself.
Capacity is four tasks per worker thread: Dask's own round trip per task (~10 ms) is longer than
a trivial step, so a worker that finishes one finds the next already there (the Dask scheduler
hands them to threads as they free up, highest priority first: the runner's order).

Speed shortcuts (each off with PIPELINE_RUNNER_NO_SHORTCUTS=1, which leaves the plain form just
described): ready attempts are packed several to a Dask task when there are more than threads
(dask_packing.py; capacity is then BATCH_MAX times as many attempts); the results of the tasks
that finished are fetched with one `Client.gather` per batch of them instead of one fetch per
task; a chain's follow-ups (chains.py) are packed behind the attempt they follow; the cluster is
started (or connected to) in a thread while the file is planned (`early_start`), and each worker
starts the run's host process as soon as the run's secrets are known (`dask_worker.warm_host`).

On the worker's side an attempt runs in a *host* process (the process pool's own `worker_main`
loop), which enforces the attempt's deadline by the same rule as every executor
(`procs.attempt_deadline`); a host that dies gives a `crash` (or `timeout`/`cancelled` when it
was stopped on purpose).  See dask_worker.py.

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
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .. import defaults, shortcuts
from ..errors import UsageError
from ..messages import Completion, Task
from ..worker import failure
from . import Event, Returned, slack_of
from .dask_packing import RunTimes, groups
from .dask_worker import (
    AttemptResult,
    cancel_attempts,
    retire_hosts,
    run_attempt,
    run_batch,
    warm_host,
)

INSTALL_HINT = "pip install 'yaml-pipeline-runner[dask]'"
QUEUE_PER_THREAD = 4  # tasks handed to Dask per worker thread: Dask's own round trip is ~10 ms
INFO_MAX_AGE = 1.0  # seconds between refreshes of the cluster's size and resources
CONNECT_TIMEOUT = 10.0
OUTCOME_TIMEOUT = 30.0  # seconds to fetch one done task's result or error


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
    future: Any  # the Dask task running it (several attempts share a packed one)
    submitted: float


class _Connection:
    """A Dask client (and the local cluster it talks to, if the runner started one)."""

    def __init__(self, workers: int, address: str | None) -> None:
        self.workers = workers
        self.address = address
        self.cluster: Any = None
        self.client: Any = None
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.abandoned = False  # no longer wanted (`abandon`): start nothing
        self.starting = False  # past the import: it must be waited for, and closed

    def abandon(self) -> bool:
        """Do not start; True if it started already (then wait for `open` and close it)."""
        with self.lock:
            self.abandoned = True
            return self.starting

    def open(self) -> None:
        """Start the local cluster or connect; an error is kept in `error` (UsageError)."""
        try:
            distributed = _import_distributed()
            with self.lock:
                if self.abandoned:  # the file did not plan while Dask was imported
                    return
                self.starting = True
            if self.address is None:
                from .process import without_main_module

                with without_main_module():  # the workers need nothing from our __main__
                    self.cluster = distributed.LocalCluster(
                        n_workers=self.workers,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                    )
                self.client = distributed.Client(self.cluster, set_as_default=False)
                self.client.wait_for_workers(self.workers, timeout=60)
            else:
                self.client = distributed.Client(
                    self.address, timeout=CONNECT_TIMEOUT, set_as_default=False
                )
        except UsageError as exc:
            self.error = exc
        except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
            self.close()
            where = f"the Dask scheduler at {self.address}" if self.address else "a local cluster"
            self.error = UsageError(f"cannot use {where}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self.client is not None:
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


class EarlyStart:
    """The cluster started (or connected to) in a thread while the runner plans the file (a
    speed shortcut: a local cluster takes seconds to start).  `take` hands it to the executor;
    one that is never taken (the file did not plan, a dry run) is closed on `close`."""

    def __init__(self, workers: int, address: str | None) -> None:
        self.connection = _Connection(workers, address)
        self.taken = False
        self.thread = threading.Thread(
            target=self.connection.open, name="runner-dask-start", daemon=True
        )
        self.thread.start()

    def take(self, address: str | None) -> _Connection | None:
        """The connection, once ready, if it is to `address`; None otherwise."""
        self.thread.join()
        if address != self.connection.address:
            return None
        self.taken = True
        return self.connection

    def close(self) -> None:
        """Stop what was started and not taken.  While Dask is still being imported, nothing
        was: the thread then ends by itself, and is not waited for."""
        if not self.taken and self.connection.abandon():
            self.thread.join()
            self.connection.close()


def early_start(workers: int | None, address: str | None) -> EarlyStart | None:
    """Start the cluster now, in a thread (None when shortcuts are off or `workers` is not
    usable: the executor then connects itself, and reports the error)."""
    if not shortcuts.enabled():
        return None
    count = defaults.workers() if workers is None else workers
    if count < 1:
        return None
    return EarlyStart(count, address)


class DaskExecutor:
    name = "dask"

    def __init__(
        self,
        workers: int,
        secrets: list[str],
        scheduler: str | None = None,
        early: EarlyStart | None = None,
    ) -> None:
        self.distributed = _import_distributed()
        self.secrets = list(secrets)
        self.token = uuid.uuid4().hex
        self.address = scheduler
        self.connection: _Connection | None = None
        self.cluster: Any = None
        self.client: Any = None
        self.shortcuts = shortcuts.enabled()
        self.run_times = RunTimes()  # how many attempts a Dask task may hold (packing)
        self.futures: dict[int, _Pending] = {}
        self.by_key: dict[str, list[int]] = {}  # a Dask task's key -> its attempts
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.notify_r, self.notify_w = os.pipe()
        os.set_blocking(self.notify_r, False)
        os.set_blocking(self.notify_w, False)
        self.killing = False
        self.threads = 0
        self.resources: list[dict[str, float]] = []
        self.info_at = 0.0
        self.added = threading.Event()  # set by submit(): the pump has something to wait for
        self.closing = False
        self._connect(max(1, workers), early)
        self.size = max(1, self.threads)
        pump = self._pump_gathered if self.shortcuts else self._pump
        self.pump = threading.Thread(target=pump, name="runner-dask-results", daemon=True)

    # -- the cluster ----------------------------------------------------------------------------

    def _connect(self, workers: int, early: EarlyStart | None) -> None:
        connection = early.take(self.address) if early is not None else None
        if connection is None:
            connection = _Connection(workers, self.address)
            connection.open()
        self.connection = connection
        self.cluster, self.client = connection.cluster, connection.client
        if connection.error is not None:
            self.close()
            raise connection.error
        if self.cluster is not None and connection.workers > workers:
            self.cluster.scale(workers)  # started before the plan said how many it can use
        self._refresh(force=True)
        if self.shortcuts:
            # The run's host on every worker now, while the runner opens the store.
            try:
                self.client.run(warm_host, self.token, self.secrets, on_error="ignore")
            except Exception:
                pass  # the first attempt starts it then
            # The pump thread fetches finished tasks' results together (`_pump_gathered`).
            self.completed = self.distributed.as_completed([], loop=self.client.loop)
            return
        # Results are fetched in the client's event loop as soon as each task finishes
        # (`as_completed(with_results=True)`); the pump thread moves them to `done`.
        self.completed = self.distributed.as_completed(
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

    def _pump_gathered(self) -> None:
        """`_pump`, with the results of the tasks that finished fetched in one `gather`."""
        while not self.closing:
            try:
                batch = self.completed.next_batch(block=True)
            except StopIteration:
                self.added.wait(0.5)
                self.added.clear()
                continue
            for item in self._results(batch):
                self.done.put(item)
            self._notify()

    def _results(self, futures: list[Any]) -> list[tuple[Any, Any]]:
        """(future, result) for each: its result, or the exception it ended with."""
        finished = [f for f in futures if f.status == "finished"]
        try:
            values = self.client.gather(finished) if finished else []
        except Exception:  # one of them was lost meanwhile: each on its own
            values = [_outcome(f) for f in finished]
        found = dict(zip((f.key for f in finished), values, strict=True))
        return [(f, found[f.key] if f.key in found else _outcome(f)) for f in futures]

    def capacity(self) -> int:
        self._refresh()
        per_thread = QUEUE_PER_THREAD * self._batch_size()
        return max(per_thread * max(self.threads, 1) - len(self.futures), 0)

    def _batch_size(self) -> int:
        return self.run_times.batch_size() if self.shortcuts else 1

    def can_follow(self, attempt_id: int) -> bool:
        """Whether a follow-up (chains.py) may be queued behind this attempt: it has not
        finished yet (the follow-up's Dask task then waits for its Dask task)."""
        return self.shortcuts and attempt_id in self.futures

    # -- work -----------------------------------------------------------------------------------

    def submit(self, tasks: list[Task]) -> None:
        accepted: list[Task] = []
        for task in tasks:
            if task.resources and not self._offered(task.resources):
                self._finish_now(task, self._no_worker_message(task.resources))
            else:
                accepted.append(task)
        for group in groups(accepted, self.threads, self._batch_size()):
            head = group[0]
            before = None
            if head.after and head.after not in {t.attempt_id for t in group}:
                pending = self.futures.get(head.after)
                if pending is None:  # it finished meanwhile: the scheduler starts it itself
                    self.done.put(Returned(head))
                    self._notify()
                    continue
                before = pending.future
            self._submit(group, before)
        self.added.set()

    def _submit(self, group: list[Task], before: Any) -> None:
        """One Dask task for the attempts of `group` (`before`: the Dask task it waits for)."""
        head = group[0]
        shipped = [
            task._replace(
                log_path=os.path.abspath(task.log_path),
                scratch_dir=os.path.abspath(task.scratch_dir),
                resources=None,
            )
            for task in group
        ]
        if len(group) == 1 and before is None:
            key = f"runner-{head.node_id}-{head.attempt_id}-{self.token[:12]}"
            call: tuple[Any, ...] = (run_attempt, shipped[0], self.secrets, self.token)
            call += (slack_of(head),)
        else:
            key = f"runner-batch-{head.attempt_id}-{len(group)}-{self.token[:12]}"
            slacks = [slack_of(task) for task in group]
            call = (run_batch, shipped, self.secrets, self.token, slacks, before)
        future = self.client.submit(
            *call,
            key=key,
            pure=False,
            resources=head.resources,
            priority=-head.attempt_id,
        )
        now = time.time()
        for task in group:
            self.futures[task.attempt_id] = _Pending(task, future, now)
        self.by_key[key] = [task.attempt_id for task in group]
        self.completed.add(future)

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
            if isinstance(item, Completion | Returned):
                events.append(item)
            else:
                events.extend(self._finished(*item))

    def _finished(self, future: Any, result: Any) -> list[Event]:
        """The completions of a finished Dask task's attempts (of those still wanted)."""
        mine = [
            p
            for aid in self.by_key.pop(future.key, ())
            if (p := self.futures.get(aid)) is not None and p.future is future
        ]  # the rest were handed back or given up already
        events: list[Event] = []
        if isinstance(result, AttemptResult):
            result = [result]
        if not isinstance(result, list):
            for pending in mine:
                self._forget(pending)
                events.append(self._lost(pending, result))
            return events
        for got in result:
            found = self.futures.get(got.completion.attempt_id)
            if found is not None and found.future is future:
                self._forget(found)
                _store_log(found.task.log_path, got)
                self.run_times.add(got.completion)
                events.append(got.completion)
        for pending in mine:
            # Not run: a follow-up of an attempt that failed (the scheduler drops it too), or
            # left out by a batch that was no longer wanted.
            if (
                self.futures.pop(pending.task.attempt_id, None) is not None
                and not pending.task.after
            ):
                events.append(self._lost(pending, None))
        return events

    def _lost(self, pending: _Pending, result: Any) -> Completion:
        """A task that gave no AttemptResult: its workers died, or Dask dropped it.  `result`
        is what `as_completed` gives then: (type, exception, traceback) or an exception."""
        future = pending.future
        exc = result[1] if isinstance(result, tuple) and len(result) == 3 else result
        cancelled = type(exc).__name__ in ("CancelledError", "FutureCancelledError")
        if not isinstance(exc, BaseException) or cancelled:
            message = f"Dask dropped the task ({future.status}): the scheduler restarted or lost it"
        elif type(exc).__name__ == "KilledWorker":
            message = f"the Dask workers running this attempt died ({exc})"
        else:
            message = f"Dask could not run the attempt: {type(exc).__name__}: {exc}"
        return failure(pending.task, "crash", message, pending.submitted, "dask")

    def _forget(self, pending: _Pending) -> None:
        self.futures.pop(pending.task.attempt_id, None)

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
            replies = self.client.run(cancel_attempts, self.token, grace, on_error="ignore")
        except Exception:
            return set()
        return {aid for ids in replies.values() if isinstance(ids, list) for aid in ids}

    def _drop(self, pending: list[_Pending]) -> None:
        """Forget these attempts and cancel their Dask tasks, but not a packed one that still
        runs another attempt (that one's completion is still wanted)."""
        if not pending:
            return
        for p in pending:
            self._forget(p)
        kept = {id(p.future) for p in self.futures.values()}
        futures = {id(p.future): p.future for p in pending if id(p.future) not in kept}
        try:
            self.client.cancel(list(futures.values()))
        except Exception:
            pass

    def kill(self) -> None:
        # Called from a signal handler: only a flag; cancel() (running or next) acts on it.
        self.killing = True

    def close(self) -> None:
        self.closing = True
        self.added.set()
        if self.client is not None:
            try:
                self.client.run(retire_hosts, self.token, on_error="ignore")
            except Exception:
                pass
        if self.connection is not None:
            self.connection.close()  # the client, then the local cluster it started
        self.client = self.cluster = None
        for fd in (self.notify_r, self.notify_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.notify_r = self.notify_w = -1


def _outcome(future: Any) -> Any:
    """A done Dask task's result, or the exception it ended with (a crash of its attempts)."""
    try:
        return future.result(timeout=OUTCOME_TIMEOUT)
    except BaseException as exc:  # CancelledError is one: whatever it is, the attempts crashed
        return exc


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
