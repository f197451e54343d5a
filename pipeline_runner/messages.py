"""The messages that cross processes: a `Task` for a worker, the `Started` news of a step's
process group, and the `Completion` of an attempt.  Plain named tuples, pickled as they are:
this module sits at the bottom of the house and imports nothing of the project's."""

from __future__ import annotations

from typing import Any, NamedTuple

from . import defaults


class Task(NamedTuple):
    attempt_id: int
    node_id: str
    uses: str
    with_: Any
    env: dict[str, str]
    timeout: float | None
    log_path: str
    run_id: str
    attempt: int
    key: str | None
    item: Any
    pipeline_dir: str
    scratch_dir: str
    resources: dict[str, float] | None = None
    grace: float = defaults.GRACE  # seconds between SIGTERM and SIGKILL when stopping the step
    # A follow-up: run only if the attempt with this id, queued before it in the same
    # worker, succeeded (0: a task of its own).
    after: int = 0
    # `--otlp`: the run's trace as TRACE_ID-FLAGS; the attempt gets $TRACEPARENT (tracecontext)
    trace: str | None = None


class Completion(NamedTuple):
    attempt_id: int
    ok: bool
    output_json: str | None
    kind: str | None  # error | timeout | crash | cancelled
    message: str
    traceback: str
    exit_code: int | None
    started: float
    finished: float
    worker: str
    outputs_json: str | None = None  # the named outputs of a success (a JSON object), if any


class Started(NamedTuple):
    """A worker tells the runner the process group of a command a step started, with the
    process's start time, so that it can be found (and not mistaken for a reused pid) later."""

    attempt_id: int
    pgid: int
    start_time: str = ""


# Where a task's attempt number is; its attempt id comes first (`numbered` relies on both).
_ATTEMPT = Task._fields.index("attempt")
assert Task._fields[0] == "attempt_id"
_make_task = tuple.__new__


def numbered(task: Task, attempt_id: int, attempt: int) -> Task:
    """`task` as attempt `attempt`, with id `attempt_id`: what `task._replace(attempt_id=...,
    attempt=...)` gives, made directly (once per attempt: `_replace` takes its keywords apart
    in Python)."""
    values = (attempt_id, *task[1:_ATTEMPT], attempt, *task[_ATTEMPT + 1 :])
    return _make_task(Task, values)
