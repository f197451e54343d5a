"""Executors run attempts; the scheduler decides which.  One small interface:

- `capacity()`: how many more tasks it takes now (the scheduler never queues more);
- `submit(tasks)`: hand over ready tasks (a batch);
- `wait(timeout, wake_fd)`: block until something finished, `timeout` passed, or `wake_fd`
  (the signal self-pipe) is readable; returns the `Completion`s (and tasks handed back unstarted
  after a worker died, as `Returned`);
- `cancel()`: stop every running attempt (SIGTERM, then SIGKILL after the grace period);
  `kill()` does it at once;
- `close()`: stop the workers.

`process` (default) keeps a pool of long-lived worker processes; `thread` and `inline` run
attempts in the runner's own process; `dask` sends them to a Dask cluster.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

from ..messages import Completion, Started, Task
from ..procs import attempt_deadline, timeout_slack


class Returned(NamedTuple):
    """A task handed back without having started (its worker died first)."""

    task: Task


Event = Completion | Returned | Started


@functools.cache
def enforces_timeout(uses: str) -> bool:
    """Whether the plugin stops its own processes at the timeout (`shell` does)."""
    from ..plugins import registry

    try:
        plugin = registry().load(uses)
    except Exception:  # the attempt itself reports a plugin that cannot be loaded
        return False
    return bool(getattr(plugin, "enforces_timeout", False))


def slack_of(task: Task) -> float:
    """How long past its timeout `task`'s attempt is stopped from outside."""
    return timeout_slack(task.grace, enforces_timeout(task.uses))


def deadline_of(task: Task, started: float) -> float | None:
    """When an executor stops `task`'s attempt from outside (`procs.attempt_deadline`, the
    one rule), on the clock `started` was read from; None without a timeout."""
    if task.timeout is None:
        return None
    return attempt_deadline(started, task.timeout, task.grace, enforces_timeout(task.uses))


class Executor(Protocol):
    name: str

    def start(self) -> None: ...

    def capacity(self) -> int: ...

    def submit(self, tasks: list[Task]) -> None: ...

    def wait(self, timeout: float | None, wake_fd: int | None) -> list[Event]: ...

    def cancel(self, grace: float) -> list[Event]: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


def make_executor(name: str, workers: int, secrets: list[str], **options: Any) -> Executor:
    if name == "process":
        from .process import ProcessExecutor

        return ProcessExecutor(workers, secrets)
    if name == "thread":
        from .local import ThreadExecutor

        return ThreadExecutor(workers, secrets)
    if name == "inline":
        from .local import InlineExecutor

        return InlineExecutor(secrets)
    if name == "dask":
        from .dask import DaskExecutor

        return DaskExecutor(
            workers, secrets, scheduler=options.get("scheduler"), early=options.get("early")
        )
    raise ValueError(f"unknown executor {name!r}")


@contextlib.contextmanager
def early_start(name: str, workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """What an executor can start while the runner plans the file (the dask executor's cluster,
    see dask.py; nothing for the others), for `make_executor(..., early=)`; closed on the way
    out unless the executor took it."""
    early = None
    if name == "dask":
        from .dask import early_start as dask_early_start

        early = dask_early_start(workers, scheduler)
    try:
        yield early
    finally:
        if early is not None:
            early.close()
