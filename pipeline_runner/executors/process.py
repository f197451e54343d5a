"""The default executor: a pool of long-lived worker processes.

Why not `concurrent.futures.ProcessPoolExecutor` or `multiprocessing.Pool`: one killed worker
breaks the former's whole pool and silently loses the latter's task.  Here each worker has a pipe
of its own and a queue of tasks the runner knows about, so a dead worker costs exactly its
current attempt (reported as `crash`, or `timeout` when the runner killed it), its queued tasks
are handed back unstarted, and a new worker takes its place.

Throughput: a ready step costs no process start and no round trip of its own.  Tasks go to
workers in batches; how many a worker may hold is set from the measured step duration (a few
milliseconds of work each), so cheap steps stream and slow steps are dealt one at a time and
balance across workers.  A task may be a follow-up (`Task.after`): queued behind the attempt it
needs on that attempt's worker, run there only if that attempt succeeded, so that a chain needs
no round trip between its steps (the scheduler decides when; see `Scheduler.follow_up`).

Start method, chosen deliberately.  The runner has threads at times (the live display's refresher,
Dask's client), and forking a process while another thread holds a lock copies that lock, held,
into the child.  So the pool is started by `fork` only while the runner has a single thread (the
engine starts it right after planning, before the store is opened and before any reporter
starts a thread): the workers then begin with every module already imported, at a cost of about
a millisecond each.  Whenever another thread exists (a worker replaced during a run with the live
display on), workers come from a forkserver instead: a fresh single-threaded process that
imported the worker code once, from which forking is safe.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from .. import journal, shortcuts, wire
from ..messages import Completion, Started, Task
from ..procs import GRACE, kill_group, terminate
from ..worker import death, worker_main
from . import Event, Returned, deadline_of

TARGET_BATCH_SECONDS = 0.01
# While every worker has work queued past the attempt it runs, the runner reads their
# completions this long after the first instead of one wake-up each (see `_gather`).
GATHER_SECONDS = 0.002
MARGIN = 0.5  # after a worker's own grace period, before it is SIGKILLed from here
MAX_DEPTH = 64


class _Worker:
    def __init__(
        self, index: int, generation: int, process: Any, conn: Any, kept: int | None = None
    ) -> None:
        self.index = index
        self.name = f"w{index}" if generation == 0 else f"w{index}.{generation}"
        self.generation = generation
        self.process = process
        self.conn = conn
        self.queue: deque[Task] = deque()
        self.outgoing: deque[memoryview] = deque()  # framed messages not yet in the pipe
        # What the worker sends, read many messages at a time (None: one recv per message).
        self.reader = wire.FrameReader(conn.fileno()) if shortcuts.enabled() else None
        self.head_started = 0.0
        self.child_pgid: int | None = None
        self.kill_reason: str | None = None
        self.kill_at: float | None = None  # SIGKILL time after a SIGTERM
        self.journal = kept  # completions it has not sent yet (journal.py), or None

    def close(self) -> None:
        self.conn.close()
        if self.journal is not None:
            os.close(self.journal)
            self.journal = None

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def stop(self, sig: int) -> None:
        """SIGTERM asks the worker, which stops its step's command itself (SIGTERM to the
        command's group, SIGKILL after the grace period); SIGKILL ends both at once."""
        kill_group(self.pid, sig)
        if sig == signal.SIGKILL and self.child_pgid is not None:
            kill_group(self.child_pgid, sig)


class ProcessExecutor:
    name = "process"

    def __init__(self, workers: int, secrets: list[str]) -> None:
        self.size = max(1, workers)
        self.secrets = secrets
        self.workers: list[_Worker] = []
        self.durations: deque[float] = deque(maxlen=31)
        self._poller: Any = None
        self._returned: list[Event] = []  # follow-ups that could not be placed
        self._polled_wake: int | None = None
        self.gathers = shortcuts.enabled()

    # -- pool ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.workers:
            return  # the engine started the pool early
        for index in range(self.size):
            self.workers.append(self._spawn(index, 0))

    @staticmethod
    def _context() -> Any:
        if threading.active_count() == 1:
            return multiprocessing.get_context("fork")
        return warm_up()

    def _spawn(self, index: int, generation: int) -> _Worker:
        ctx = self._context()
        parent, child = ctx.Pipe(duplex=True)
        name = f"w{index}" if generation == 0 else f"w{index}.{generation}"
        kept = journal.create() if shortcuts.enabled() else None
        journal_of = None if kept is None else (os.getpid(), kept)
        process = ctx.Process(
            target=worker_main,
            args=(child, name, self.secrets, journal_of),
            name=f"runner-{name}",
            daemon=True,
        )
        with without_main_module():
            process.start()
        child.close()
        return _Worker(index, generation, process, parent, kept)

    def _replace(self, worker: _Worker) -> None:
        position = self.workers.index(worker)
        worker.close()
        worker.process.join(timeout=0)
        self.workers[position] = self._spawn(worker.index, worker.generation + 1)
        self._poller = None

    def depth(self) -> int:
        """How many tasks a worker may hold: about 10 ms of work (commands of a millisecond go
        ten at a time, and at most that much is left on one worker when another runs out),
        judged by the median duration of recent steps (one slow first import does not skew
        it)."""
        if not self.durations:
            return 1
        typical = sorted(self.durations)[len(self.durations) // 2]
        return max(1, min(MAX_DEPTH, int(TARGET_BATCH_SECONDS / max(typical, 1e-6))))

    def capacity(self) -> int:
        """Free places, counting only workers whose queue ran at least half empty, so that
        refills go out as batches rather than one task per completion."""
        depth = self.depth()
        return sum(
            depth - len(w.queue)
            for w in self.workers
            if w.kill_reason is None and len(w.queue) <= depth // 2
        )

    # -- work ---------------------------------------------------------------------------------

    def submit(self, tasks: list[Task]) -> None:
        batches: dict[int, list[Task]] = {}
        live = [w for w in self.workers if w.kill_reason is None]
        placed: dict[int, _Worker] = {}
        now = time.monotonic()
        for task in tasks:
            if task.after:
                # A follow-up goes to the worker of the attempt it follows, or nowhere.
                found = placed.get(task.after) or self._holder(task.after)
                if found is None:
                    self._returned.append(Returned(task))
                    continue
                worker = found
            else:
                worker = min(
                    live, key=lambda w: (len(w.queue) + len(batches.get(w.index, ())), w.index)
                )
            placed[task.attempt_id] = worker
            batches.setdefault(worker.index, []).append(task)
        for worker in live:
            batch = batches.get(worker.index)
            if not batch:
                continue
            if not worker.queue:
                worker.head_started = now
            worker.queue.extend(batch)
            for payload in wire.encode(batch):
                self._send(worker, payload)

    def _send(self, worker: _Worker, payload: bytes) -> None:
        """Queue a message for a worker and write what the pipe takes now, never waiting: a
        worker busy with its batch reads no more tasks until it is done, and may itself be
        waiting for the runner to read a large output; a blocking write would hang both."""
        worker.outgoing.append(memoryview(wire.frame(payload)))
        self._write_out(worker)

    def _write_out(self, worker: _Worker) -> None:
        fd = worker.conn.fileno()
        os.set_blocking(fd, False)
        try:
            while worker.outgoing:
                head = worker.outgoing[0]
                written = os.write(fd, head)
                if written < len(head):
                    worker.outgoing[0] = head[written:]
                else:
                    worker.outgoing.popleft()
        except BlockingIOError:
            pass
        except OSError:
            worker.outgoing.clear()  # its sentinel fires next; the tasks come back as Returned
        finally:
            os.set_blocking(fd, True)
        if self._poller is not None:
            flags = select.POLLIN | (select.POLLOUT if worker.outgoing else 0)
            self._poller.modify(fd, flags)

    def _holder(self, attempt_id: int) -> _Worker | None:
        for worker in self.workers:
            if worker.kill_reason is None and any(t.attempt_id == attempt_id for t in worker.queue):
                return worker
        return None

    def can_follow(self, attempt_id: int) -> bool:
        """Whether a task may be queued to run right after this attempt, on its worker, if the
        attempt succeeds (the worker skips it otherwise): a chain of steps then goes on without
        waiting for the runner between them."""
        return self._holder(attempt_id) is not None

    def _deadline(self, worker: _Worker) -> float | None:
        if worker.kill_at is not None:
            return worker.kill_at
        if not worker.queue:
            return None
        return deadline_of(worker.queue[0], worker.head_started)

    def wait(self, timeout: float | None, wake_fd: int | None) -> list[Event]:
        now = time.monotonic()
        deadlines = [d for d in (self._deadline(w) for w in self.workers) if d is not None]
        if deadlines:
            until = max(min(deadlines) - now, 0.0)
            timeout = until if timeout is None else min(timeout, until)
        if self._returned:
            timeout = 0.0
        if self._poller is None or self._polled_wake != wake_fd:
            self._poller = self._make_poller(wake_fd)
        if self.gathers:
            timeout = self._gather(timeout, wake_fd)
        ms = None if timeout is None else math.ceil(timeout * 1000)
        try:
            ready = dict(self._poller.poll(ms))
        except InterruptedError:  # a signal; its handler has written to wake_fd
            ready = {}
        events, self._returned = self._returned, []
        for worker in list(self.workers):
            conn = ready.get(worker.conn.fileno(), 0)
            if conn & select.POLLOUT:
                self._write_out(worker)
            if conn & ~select.POLLOUT or worker.process.sentinel in ready:
                self._drain(worker, events)
            if worker.process.sentinel in ready:
                self._died(worker, events)
        self._enforce_deadlines()
        return events

    def _gather(self, timeout: float | None, wake_fd: int | None) -> float | None:
        """The speed shortcut of the read side (RUNNER_NO_SHORTCUTS=1 turns it off): while
        every worker has at least one more attempt queued after the one it runs, and the
        recent steps say it will be busy for a while, wait a little (up to GATHER_SECONDS,
        never past `timeout`; a signal still wakes the loop at once) before reading, so that
        the completions of short steps are read and recorded together (never when something
        is readable already: a busy runner does not wait).  Each completion is
        in its pipe before its worker goes on, as always: only the reading waits, and no
        worker runs out of work meanwhile.  Returns what is left of `timeout`."""
        if not self.durations or any(w.kill_reason or w.outgoing for w in self.workers):
            return timeout
        if self._poller.poll(0):  # something came while the runner was busy: read it now
            return timeout
        busy_for = min((len(w.queue) - 1 for w in self.workers), default=0) * min(self.durations)
        pause = min(GATHER_SECONDS, busy_for, GATHER_SECONDS if timeout is None else timeout)
        if pause <= 0:
            return timeout
        start = time.monotonic()
        if wake_fd is None:
            time.sleep(pause)
        else:
            try:
                select.select([wake_fd], [], [], pause)
            except InterruptedError:  # a signal; its handler has written to wake_fd
                pass
        return None if timeout is None else max(timeout - (time.monotonic() - start), 0.0)

    def _make_poller(self, wake_fd: int | None) -> Any:
        """One poll set for the whole run (multiprocessing.connection.wait builds a selector on
        every call, a noticeable cost per step), made again when a worker is replaced."""
        poller = select.poll()
        for worker in self.workers:
            writing = select.POLLOUT if worker.outgoing else 0
            poller.register(worker.conn.fileno(), select.POLLIN | writing)
            poller.register(worker.process.sentinel, select.POLLIN)
        if wake_fd is not None:
            poller.register(wake_fd, select.POLLIN)
        self._polled_wake = wake_fd
        return poller

    def _drain(self, worker: _Worker, events: list[Event]) -> None:
        reader = worker.reader
        try:
            while _readable(worker.conn.fileno()):
                received = reader.read() if reader else wire.decode(worker.conn.recv())
                for message in received:
                    if type(message) is Started:
                        worker.child_pgid = message.pgid
                        events.append(message)
                    elif message == wire.RETIRE:
                        worker.kill_reason = "retired"  # no more tasks; it exits next
                    else:
                        self._completed(worker, message, events)
        except (EOFError, OSError):
            pass

    def _completed(self, worker: _Worker, done: Completion, events: list[Event]) -> None:
        if not worker.queue or worker.queue[0].attempt_id != done.attempt_id:
            return  # a late message from a worker we already gave up on
        worker.queue.popleft()
        if not done.ok and any(t.after == done.attempt_id for t in worker.queue):
            # The worker skips the follow-ups of a failed attempt, and theirs; so do we.
            skipped = {done.attempt_id}
            kept: deque[Task] = deque()
            for task in worker.queue:
                if task.after in skipped:
                    skipped.add(task.attempt_id)
                else:
                    kept.append(task)
            worker.queue = kept
        worker.child_pgid = None
        now = time.monotonic()
        self.durations.append(max(done.finished - done.started, 0.0))
        worker.head_started = now
        events.append(done)

    def _died(self, worker: _Worker, events: list[Event]) -> None:
        worker.process.join(timeout=1)
        code = worker.process.exitcode
        if worker.child_pgid is not None:
            kill_group(worker.child_pgid, signal.SIGKILL)
        kill_group(worker.pid, signal.SIGKILL)  # anything the step left in the worker's group
        if worker.journal is not None:  # what it had not sent yet (journal.py)
            for done in journal.read(worker.journal):
                self._completed(worker, done, events)
        if worker.queue and worker.kill_reason != "retired":
            # Each completion is in the pipe (drained above) or in the journal before its
            # worker goes on, so the head is the attempt that was running: it died with the
            # worker.
            task = worker.queue.popleft()
            events.append(self._death_completion(worker, task, code))
        events.extend(Returned(t) for t in worker.queue)  # none of these started
        worker.queue.clear()
        self._replace(worker)

    def _death_completion(self, worker: _Worker, task: Task, code: int | None) -> Completion:
        started = time.time() - (time.monotonic() - worker.head_started)
        return death(task, worker.kill_reason, code, "worker process", started, worker.name)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            deadline = self._deadline(worker)
            if deadline is None or now < deadline:
                continue
            if worker.kill_at is None:
                worker.kill_reason = worker.kill_reason or "timeout"
                worker.stop(signal.SIGTERM)
                head = worker.queue[0] if worker.queue else None
                worker.kill_at = now + (head.grace if head is not None else GRACE) + MARGIN
            else:
                worker.stop(signal.SIGKILL)

    # -- stopping -----------------------------------------------------------------------------

    def cancel(self, grace: float) -> list[Event]:
        events: list[Event] = []
        busy = {w.pid: w for w in self.workers if w.queue}
        for worker in busy.values():
            worker.kill_reason = "cancelled"
        # SIGTERM asks each worker to stop its command (and exit); what is left after the
        # grace period, and the commands of those, are killed.
        left = terminate(
            list(busy),
            grace + MARGIN if grace > 0 else 0.0,
            gone=lambda pid: not busy[pid].process.is_alive(),
        )
        for pid in left:
            busy[pid].stop(signal.SIGKILL)
        for worker in busy.values():
            self._drain(worker, events)
            worker.process.join(timeout=2)
            self._died(worker, events)
        return events

    def kill(self) -> None:
        for worker in self.workers:
            worker.stop(signal.SIGKILL)

    def close(self) -> None:
        for worker in self.workers:
            # An idle worker reads the None that ends it; one that does not is killed below.
            self._send(worker, wire.encode_end())
        deadline = time.monotonic() + 2.0
        for worker in self.workers:
            worker.process.join(timeout=max(deadline - time.monotonic(), 0))
            if worker.process.is_alive():
                worker.stop(signal.SIGKILL)
                worker.process.join(timeout=1)
            worker.close()
        self.workers.clear()


def warm_up() -> Any:
    """Start the forkserver now (it imports the worker code in the background while the
    caller goes on planning); returns the multiprocessing context to start workers from."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["pipeline_runner.executors._preload"])
    from multiprocessing import forkserver

    with without_main_module():
        forkserver.ensure_running()
    return ctx


@contextlib.contextmanager
def without_main_module() -> Iterator[None]:
    """Workers need nothing from the program's `__main__` (the `runner` script, pytest, a
    user's script), so keep multiprocessing from re-importing it in every worker."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if hasattr(main, k)}
    try:
        if main is not None:
            main.__spec__ = None
            if "__file__" in saved:
                del main.__file__
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


def _readable(fd: int) -> bool:
    """Whether a read from `fd` would not block (Connection.poll builds a selector to ask)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
