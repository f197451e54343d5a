"""How the dask executor turns the tasks of one `submit` into Dask tasks (a speed shortcut).

The plain form is one Dask task per attempt (`dask_worker.run_attempt`).  Dask's own cost per
task (the scheduler's round trip, ~2-10 ms) is far longer than a trivial step, so when more
tasks are ready than the cluster has threads, they are *packed*: several attempts in one Dask
task (`dask_worker.run_batch`), which runs them one after the other on one worker, each exactly
as `run_attempt` would (its own deadline, its own host round trip, its own log).  Packing only
changes how many attempts share Dask's round trip:

- only short attempts are packed: the median run time of the last attempts (as the workers
  timed them) must be under PACK_BELOW, and a batch holds at most about BATCH_SECONDS of them
  (and at most BATCH_MAX), so no attempt waits long behind others in its batch, and a step's
  recorded start (when it was handed to Dask) stays close to its real one.  Until the first
  attempts have finished, nothing is packed;
- at most as many attempts are ready as the cluster has threads: each goes alone (no attempt
  waits behind another while a thread is free);
- more: they are dealt to about one batch per thread, up to that batch size;
- a follow-up (`Task.after`, see chains.py) goes into the batch of the attempt it follows, right
  behind it (run only if that attempt succeeded);
- a step with `resources` goes alone: Dask places it by its own resources.

The cost of a batch: its attempts' completions reach the runner together, when its last one is
done, and a worker lost in the middle of a batch has Dask run the whole batch again elsewhere.

The switch: PIPELINE_RUNNER_NO_SHORTCUTS=1 (shortcuts.py) turns packing off: every attempt is a
Dask task of its own, as `groups(tasks, threads, 1)` returns them without follow-ups.
"""

from __future__ import annotations

import statistics
from collections import deque

from ..messages import Completion, Task

BATCH_MAX = 32  # attempts in one Dask task at most
PACK_BELOW = 0.05  # seconds: attempts are packed while their median run time is shorter
BATCH_SECONDS = 0.25  # about how long the attempts of one batch take together, at most
SAMPLES = 64  # run times the median is taken over (the last ones)


class RunTimes:
    """The run times of the last attempts, and the batch size they call for."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=SAMPLES)

    def add(self, done: Completion) -> None:
        self.recent.append(max(done.finished - done.started, 0.0))

    def batch_size(self) -> int:
        """How many attempts one Dask task may hold now (1: none packed)."""
        if not self.recent:
            return 1
        typical = statistics.median(self.recent)
        if typical >= PACK_BELOW:
            return 1
        return max(1, min(BATCH_MAX, int(BATCH_SECONDS / max(typical, 1e-4))))


def groups(tasks: list[Task], threads: int, most: int) -> list[list[Task]]:
    """The Dask tasks for `tasks`, in order: each a list of attempts run one after the other,
    at most `most` of them (follow-ups ride behind the attempt they follow all the same)."""
    if most <= 1 and not any(task.after for task in tasks):
        return [[task] for task in tasks]
    out: list[list[Task]] = []
    group_of: dict[int, list[Task]] = {}  # attempt id -> the group it is in
    free = [t for t in tasks if not t.after and not t.resources]
    size = min(most, -(-len(free) // max(threads, 1))) if len(free) > threads else 1
    current: list[Task] = []
    for task in tasks:
        if task.after and task.after in group_of:
            group = group_of[task.after]
        elif task.after or task.resources or size == 1:
            group = []  # alone (a follow-up of an attempt submitted before: see dask.py)
            out.append(group)
        else:
            if len(current) >= size or not current:
                current = []
                out.append(current)
            group = current
        group.append(task)
        group_of[task.attempt_id] = group
    return [group for group in out if group]
