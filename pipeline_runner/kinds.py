"""The named kinds of the core, as string enums: their values are the strings stored in the
state folder and shown to users, and each member is that string (it compares, hashes, formats,
prints and is stored in SQLite and JSON as the plain value), so nothing written changes.

(`enum.StrEnum` is Python 3.11+; these are `str, Enum` with str's own `__str__`/`__format__`.)
"""

from __future__ import annotations

from enum import Enum


class _Text(str, Enum):
    __str__ = str.__str__
    __hash__ = str.__hash__  # Enum hashes the name: a member must find its value in a set

    def __format__(self, spec: str) -> str:
        return str.__format__(str(self), spec)


class FailureKind(_Text):
    """Why an attempt failed (`retries.on` matches these)."""

    ERROR = "error"  # the step raised or exited non-zero, or failed before it started
    TIMEOUT = "timeout"
    CRASH = "crash"  # its process died
    CANCELLED = "cancelled"
    STORAGE = "storage"  # the disk is full or a size limit was hit
    BREAKER = "breaker"  # its pool's circuit breaker was open
    LOST = "lost"  # the runner stopped while it ran
    RUN_TIMEOUT = "run_timeout"  # the pipeline's `timeout` passed: stopped, or never started
    LOOP_LIMIT = "loop_limit"  # a `loop` ran `max_iterations` times and `until` never held
    REJECTED = "rejected"  # an approval gate was answered with `runner reject`


class RunStatus(_Text):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING = "waiting"  # only approval gates (and what needs them) are left: EXIT_WAITING
    # A failed run whose saga undid what had succeeded: every compensation succeeded, or one
    # did not (compensation.py decides which).
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


# The statuses of a run that failed (`failure()` in a `finally` step's `if` holds).
FAILED_RUN = (RunStatus.FAILED, RunStatus.COMPENSATED, RunStatus.COMPENSATION_FAILED)


class DueAction(_Text):
    """What `runner schedule` does when a start is due (periodic.py)."""

    START = "start"
    SKIP = "skip"  # its previous run still goes on (if_running: skip, or no concurrency block)
    QUEUE = "queue"  # start when the previous run ends
    CANCEL = "cancel"  # cancel the previous run, then start


class GroupKind(_Text):
    FOR_EACH = "for_each"
    TEMPLATE = "template"
    PIPELINE = "pipeline"


INSTANCE_KINDS = (GroupKind.TEMPLATE, GroupKind.PIPELINE)  # groups that are an instance
