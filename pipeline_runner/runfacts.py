"""Run-level limits and facts: the pipeline's `timeout` (Argo's `activeDeadlineSeconds`), and
what `finally` steps read of the run, `run.failures` and `run.duration` (Argo's
`workflow.failures` and `workflow.duration`).

The deadline bounds the main steps only: it is watched until every main step has ended, and
`finally` steps then run with their own timeouts (as Argo's exit handler runs after the
deadline).  A resume starts a new deadline (as Argo's retry of a workflow does).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .kinds import FailureKind
from .model import NodeKind, State
from .runstate import NodeRun


class Deadline:
    """The monotonic time by which the main steps must have ended (None: no `timeout`)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds
        self.passed = False

    def wait(self, timeout: float | None) -> float | None:
        """The loop's wait, shortened to wake when the deadline passes."""
        if self.at is None:
            return timeout
        left = max(self.at - time.monotonic(), 0.0)
        return left if timeout is None else min(timeout, left)

    def passes(self, ended: bool) -> bool:
        """Whether it passed just now (once): the caller then stops the main steps, as a
        step's timeout stops a step.  Once they have `ended`, it no longer applies."""
        if ended:
            self.at = None
        if self.at is None or time.monotonic() < self.at:
            return False
        self.at, self.passed = None, True
        return True

    def failure(self) -> str | None:
        """Why the run failed, when the deadline passed (the run's `failure`)."""
        return "{}: {}".format(*self.reason()) if self.passed else None

    def reason(self) -> tuple[str, str]:
        """The failure kind and message of the steps it stopped."""
        return FailureKind.RUN_TIMEOUT, f"the pipeline's timeout of {self.seconds:g}s passed"


def failures(nodes: Iterable[NodeRun]) -> list[dict[str, Any]]:
    """`run.failures`: the steps that failed, and those the pipeline's timeout stopped while
    they ran, in file order: `{id, kind, message, exit_code}` (exit_code None if unknown)."""
    return [
        {"id": nr.id, "kind": nr.kind or "error", "message": nr.error, "exit_code": nr.exit_code}
        for nr in nodes
        if nr.node.kind is NodeKind.STEP
        and not nr.node.is_finally
        and (
            nr.state is State.FAILED
            or (
                nr.state is State.CANCELLED
                and nr.kind == FailureKind.RUN_TIMEOUT
                and nr.started is not None  # stopped; not one that never started
            )
        )
    ]
