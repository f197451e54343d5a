"""How the dask executor turns the tasks of one `submit` into Dask tasks (a speed shortcut).

The plain form is one Dask task per attempt (`dask_worker.run_attempt`).  Dask's own cost per
task (the scheduler's round trip, ~2-10 ms) is far longer than a trivial step, so when more
tasks are ready than the cluster has threads, they are *packed*: several attempts in one Dask
task (`dask_worker.run_batch`), which runs them one after the other on one worker, each exactly
as `run_attempt` would (its own deadline, its own host round trip, its own log).  Packing only
changes how many attempts share Dask's round trip:

- at most as many attempts are ready as the cluster has threads: each goes alone (no attempt
  waits behind another while a thread is free);
- more: they are dealt to about one batch per thread, at most BATCH_MAX attempts a batch;
- a follow-up (`Task.after`, see chains.py) goes into the batch of the attempt it follows, right
  behind it (run only if that attempt succeeded);
- a step with `resources` goes alone: Dask places it by its own resources.

The cost of a batch: its attempts' completions reach the runner together, when its last one is
done, and a worker lost in the middle of a batch has Dask run the whole batch again elsewhere.

The switch: PIPELINE_RUNNER_NO_SHORTCUTS=1 (shortcuts.py) turns packing off: every attempt is a
Dask task of its own, as `groups(..., packing=False)` returns them.
"""

from __future__ import annotations

from ..messages import Task

BATCH_MAX = 32  # attempts in one Dask task at most


def groups(tasks: list[Task], threads: int, packing: bool) -> list[list[Task]]:
    """The Dask tasks for `tasks`, in order: each a list of attempts run one after the other."""
    if not packing:
        return [[task] for task in tasks]
    out: list[list[Task]] = []
    group_of: dict[int, list[Task]] = {}  # attempt id -> the group it is in
    free = [t for t in tasks if not t.after and not t.resources]
    size = min(BATCH_MAX, -(-len(free) // max(threads, 1))) if len(free) > threads else 1
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
