"""Executors that run attempts in the runner's own process.

`inline` runs one attempt at a time in the scheduler's thread: what a debugger or a profiler
wants.  `thread` runs attempts on a pool of threads: for steps that mostly wait on I/O.  Neither
can stop a `python` step at its timeout (a thread cannot be killed): the attempt is reported as
timed out and its thread is abandoned; `shell` steps stop their processes as everywhere.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time

from ..secrets import Masker
from ..worker import Completion, Task, execute
from . import Event


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
    name = "inline"

    def __init__(self, secrets: list[str]) -> None:
        self.masker = Masker(secrets)
        self.done: list[Event] = []
        self.stdin = EmptyStdin()

    def start(self) -> None:
        self.stdin.enter()

    def capacity(self) -> int:
        return 0 if self.done else 1

    def submit(self, tasks: list[Task]) -> None:
        for task in tasks:
            self.done.append(execute(task, self.masker, "inline"))

    def wait(self, timeout: float | None, wake_fd: int | None) -> list[Event]:
        if not self.done and timeout:
            _sleep_or_wake(timeout, wake_fd)
        events, self.done = self.done, []
        return events

    def cancel(self, grace: float) -> list[Event]:
        return []

    def kill(self) -> None:
        pass

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

    def start(self) -> None:
        from ..worker import ThreadRouter

        self.stdin.enter()
        self.saved_std = (sys.stdout, sys.stderr)
        sys.stdout = ThreadRouter(sys.stdout)  # type: ignore[assignment]
        sys.stderr = ThreadRouter(sys.stderr)  # type: ignore[assignment]
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
            done = execute(task, self.masker, name, redirect_std=False)
            with self.lock:
                self.running.pop(task.attempt_id, None)
                if task.attempt_id in self.abandoned:
                    continue
            self.results.put(done)
            os.write(self.notify_w, b"x")

    def capacity(self) -> int:
        with self.lock:
            busy = len(self.running) - len(self.abandoned)
        return max(self.size - busy - self.tasks.qsize(), 0)

    def submit(self, tasks: list[Task]) -> None:
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
                started + task.timeout + 5.0
                for aid, (task, started) in self.running.items()
                if task.timeout is not None and aid not in self.abandoned
            ]
        return min(times) if times else None

    def _timeouts(self) -> list[Event]:
        now = time.monotonic()
        out: list[Event] = []
        with self.lock:
            for aid, (task, started) in self.running.items():
                if task.timeout is None or aid in self.abandoned:
                    continue
                if now >= started + task.timeout + 5.0:
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
        while True:
            try:
                self.tasks.get_nowait()
            except queue.Empty:
                break
        return out

    def kill(self) -> None:
        self.cancel(0)

    def close(self) -> None:
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
