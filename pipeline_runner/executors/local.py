"""Executors that run attempts in the runner's own process.

`inline` runs one attempt at a time in the scheduler's thread: what a debugger or a profiler
wants; a `python` step's timeout raises TimeoutError in its code (SIGALRM), which a step that
swallows every exception can ignore.  `thread` runs attempts on a pool of threads: for steps
that mostly wait on I/O; it cannot stop a `python` step at its timeout (a thread cannot be
killed): the attempt is reported as timed out at its deadline and its thread is abandoned.
Deadlines follow the one rule of every executor (`deadline_of`); `shell` steps stop their
processes as everywhere, at a timeout or when the run is cancelled.  While they run, the
runner's stdin is /dev/null.  With `thread`, a `python` step sees its `env` in `ctx.env`
only (os.environ is shared).
"""

from __future__ import annotations

import importlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..messages import Completion, Task
from ..procs import kill_group, terminate
from ..secrets import Masker
from ..worker import execute
from . import Event, deadline_of

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# _signal's own signal(): signal.signal wraps each handler it returns in an enum (most of the
# cost of the four handlers set and put back around every inline attempt).
_set_handler: Callable[[int, Any], Any] = importlib.import_module("_signal").signal


class EmptyStdin:
    """While steps run in the runner's own process, its stdin (fd 0, inherited by what they
    start) is /dev/null: a step reading stdin gets end-of-file at once, never the runner's."""

    def __init__(self) -> None:
        self.saved: int | None = None

    def enter(self) -> None:
        try:
            self.saved = os.dup(0)
        except OSError:  # no stdin at all: /dev/null takes fd 0 below
            self.saved = None
        devnull = os.open(os.devnull, os.O_RDONLY)
        if devnull != 0:
            os.dup2(devnull, 0)
            os.close(devnull)

    def exit(self) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 0)
            os.close(self.saved)
            self.saved = None


class InlineExecutor:
    """Runs each attempt in the scheduler's own thread.  A signal arriving meanwhile reaches
    the scheduler's handler as usual, and also stops the command the attempt is running (as
    for a timeout: SIGTERM to its group, SIGKILL after the grace period), so Ctrl-C works here
    too; a second Ctrl-C kills it at once.  A `python` step cannot be stopped this way."""

    name = "inline"

    def __init__(self, secrets: list[str]) -> None:
        self.masker = Masker(secrets)
        self.done: list[Event] = []
        self.stdin = EmptyStdin()
        self.group: int | None = None  # the process group the current attempt started
        self.stopped = False

    def start(self) -> None:
        self.stdin.enter()

    def capacity(self) -> int:
        return 0 if self.done else 1

    def submit(self, tasks: list[Task]) -> None:
        for task in tasks:
            self.done.append(self._execute(task))

    def _execute(self, task: Task) -> Completion:
        def started(pid: int) -> None:
            self.group = pid

        def on_signal(signum: int, frame: Any) -> None:
            handler = previous.get(signum)
            if callable(handler):
                handler(signum, frame)
            if self.group is not None and not self.stopped:
                self.stopped = True
                kill_group(self.group, signal.SIGTERM)
                timer = threading.Timer(task.grace, kill_group, (self.group, signal.SIGKILL))
                timer.daemon = True
                timer.start()
                timers.append(timer)

        def on_alarm(signum: int, frame: Any) -> None:
            # The deadline, in the step's own code: the one way to stop it in this thread.
            raise TimeoutError(f"timed out after {task.timeout:g}s")

        timers: list[threading.Timer] = []
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: _set_handler(sig, on_signal) for sig in _STOP_SIGNALS}
            now = time.monotonic()
            deadline = deadline_of(task, now)
            if deadline is not None:
                previous[signal.SIGALRM] = _set_handler(signal.SIGALRM, on_alarm)
                signal.setitimer(signal.ITIMER_REAL, max(deadline - now, 0.001))
        self.stopped = False
        try:
            done = execute(task, self.masker, "inline", started)
        finally:
            if signal.SIGALRM in previous:
                signal.setitimer(signal.ITIMER_REAL, 0)
            for sig, handler in previous.items():
                _set_handler(sig, handler)
            for timer in timers:  # the group is gone: its number must not be signalled later
                timer.cancel()
            self.group = None
        if self.stopped:  # whatever its command made of the SIGTERM, it did not finish its work
            message = "cancelled; its processes were stopped"
            done = done._replace(ok=False, output_json=None, kind="cancelled", message=message)
        return done

    def wait(self, timeout: float | None, wake_fd: int | None) -> list[Event]:
        if not self.done and timeout:
            _sleep_or_wake(timeout, wake_fd)
        events, self.done = self.done, []
        return events

    def cancel(self, grace: float) -> list[Event]:
        return []

    def kill(self) -> None:
        if self.group is not None:
            kill_group(self.group, signal.SIGKILL)

    def close(self) -> None:
        self.stdin.exit()


def _sleep_or_wake(timeout: float, wake_fd: int | None) -> None:
    if wake_fd is None:
        time.sleep(timeout)
        return
    import select

    select.select([wake_fd], [], [], timeout)


class ThreadExecutor:
    name = "thread"

    def __init__(self, workers: int, secrets: list[str]) -> None:
        self.size = max(1, workers)
        self.masker = Masker(secrets)
        self.tasks: queue.Queue[Task | None] = queue.Queue()
        self.results: queue.Queue[Completion] = queue.Queue()
        self.running: dict[int, tuple[Task, float]] = {}
        self.abandoned: set[int] = set()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.notify_r, self.notify_w = os.pipe()
        self.stdin = EmptyStdin()
        self.groups: dict[int, int] = {}  # attempt id -> process group its command runs in
        self.stop_grace: float | None = None  # set once cancelled: commands are stopped

    def start(self) -> None:
        from ..worker import ThreadRouter

        self.stdin.enter()
        self.saved_std = (sys.stdout, sys.stderr)
        sys.stdout = ThreadRouter(sys.stdout)
        sys.stderr = ThreadRouter(sys.stderr)
        for i in range(self.size):
            thread = threading.Thread(target=self._loop, args=(f"t{i}",), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _loop(self, name: str) -> None:
        while True:
            task = self.tasks.get()
            if task is None:
                return
            with self.lock:
                self.running[task.attempt_id] = (task, time.monotonic())
            done = execute(task, self.masker, name, self._on_process(task), redirect_std=False)
            with self.lock:
                self.running.pop(task.attempt_id, None)
                self.groups.pop(task.attempt_id, None)
                if task.attempt_id in self.abandoned:
                    self.abandoned.discard(task.attempt_id)  # reported already
                    continue
            self.results.put(done)
            os.write(self.notify_w, b"x")

    def _on_process(self, task: Task) -> Callable[[int], None]:
        def started(pid: int) -> None:
            with self.lock:
                self.groups[task.attempt_id] = pid
                late = self.stop_grace is not None
            if late:  # started while the run was being cancelled: close() finishes it off
                kill_group(pid, signal.SIGTERM)

        return started

    def capacity(self) -> int:
        with self.lock:
            busy = len(self.running) - len(self.abandoned)  # queued ones included
        return max(self.size - busy, 0)

    def submit(self, tasks: list[Task]) -> None:
        now = time.monotonic()
        with self.lock:  # known from now on, so that wait() sees its deadline at once
            for task in tasks:
                self.running[task.attempt_id] = (task, now)
        for task in tasks:
            self.tasks.put(task)

    def wait(self, timeout: float | None, wake_fd: int | None) -> list[Event]:
        import select

        deadline = self._next_deadline()
        if deadline is not None:
            until = max(deadline - time.monotonic(), 0.0)
            timeout = until if timeout is None else min(timeout, until)
        if self.results.empty():
            fds = [self.notify_r] + ([wake_fd] if wake_fd is not None else [])
            select.select(fds, [], [], timeout)
        events: list[Event] = []
        while True:
            try:
                events.append(self.results.get_nowait())
            except queue.Empty:
                break
        if events:
            os.read(self.notify_r, 65536)
        events.extend(self._timeouts())
        return events

    def _next_deadline(self) -> float | None:
        with self.lock:
            times = [
                deadline
                for aid, (task, started) in self.running.items()
                if aid not in self.abandoned
                and (deadline := deadline_of(task, started)) is not None
            ]
        return min(times) if times else None

    def _timeouts(self) -> list[Event]:
        now = time.monotonic()
        out: list[Event] = []
        with self.lock:
            for aid, (task, started) in self.running.items():
                deadline = deadline_of(task, started)
                if deadline is None or aid in self.abandoned:
                    continue
                if now >= deadline:
                    self.abandoned.add(aid)
                    out.append(_abandoned(task, "timeout", f"timed out after {task.timeout:g}s"))
        return out

    def cancel(self, grace: float) -> list[Event]:
        out: list[Event] = []
        with self.lock:
            for aid, (task, _) in self.running.items():
                if aid not in self.abandoned:
                    self.abandoned.add(aid)
                    out.append(_abandoned(task, "cancelled", "cancelled"))
            groups = list(self.groups.values())
            self.stop_grace = grace
        while True:
            try:
                self.tasks.get_nowait()
            except queue.Empty:
                break
        terminate(groups, grace)  # the threads themselves cannot be stopped
        return out

    def kill(self) -> None:
        # Called from a signal handler, perhaps while this thread holds the lock: no lock.
        self.stop_grace = 0.0
        for group in list(self.groups.values()):
            kill_group(group, signal.SIGKILL)

    def close(self) -> None:
        if self.stop_grace is not None:  # commands that started while cancel() stopped others
            with self.lock:
                late = list(self.groups.values())
            terminate(late, self.stop_grace, term=False)
        if hasattr(self, "saved_std"):
            sys.stdout, sys.stderr = self.saved_std
        for _ in self.threads:
            self.tasks.put(None)
        for thread in self.threads:
            thread.join(timeout=0.5)
        os.close(self.notify_r)
        os.close(self.notify_w)
        self.stdin.exit()


def _abandoned(task: Task, kind: str, message: str) -> Completion:
    now = time.time()
    return Completion(task.attempt_id, False, None, kind, message, "", None, now, now, "thread")


__all__ = ["EmptyStdin", "InlineExecutor", "ThreadExecutor"]
