"""How a run ended: its status and exit code, decided from the run state once its loop is over
(before its outputs are rendered).  A decision over the state, like the modules the scheduler
asks what to start; it never calls back into the scheduler."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from . import compensation, success_policy
from .errors import (
    EXIT_COMPENSATION_FAILED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STORE,
    EXIT_WAITING,
)
from .kinds import RunStatus
from .model import State
from .runstate import RunState

_SIGNAL_EXITS = {int(signal.SIGTERM): EXIT_SIGTERM, int(signal.SIGINT): EXIT_SIGINT}


@dataclass(frozen=True)
class Ending:
    """What the scheduler knows of the run's end besides its state."""

    signum: int | None = None  # the signal that stopped the run, if one came first
    storage_error: str | None = None  # the store could not record the run
    parked: bool = False  # only approval gates waiting (and what needs them) are left
    failed_before: bool = False  # a resume: steps of the run had failed before it


def run_status(state: RunState, ending: Ending) -> tuple[RunStatus, int]:
    """The run's status and exit code.  A failure a fan-out's success policy forgave does not
    fail the run; a failed saga reads how its compensations went."""
    runs = state.runs
    failed = ending.failed_before or any(
        nr.state in (State.FAILED, State.UPSTREAM_FAILED)
        and not success_policy.forgiven(nr.node, runs)
        for nr in runs.values()
    )
    if ending.storage_error is not None:
        return RunStatus.FAILED, EXIT_STORE
    if ending.signum is not None:
        signum = int(ending.signum)
        return RunStatus.CANCELLED, _SIGNAL_EXITS.get(signum, 128 + signum)
    if ending.parked:
        return RunStatus.WAITING, EXIT_WAITING
    if failed or state.cancelling:
        saga = compensation.outcome(state)
        if saga is RunStatus.COMPENSATION_FAILED:
            return saga, EXIT_COMPENSATION_FAILED
        return saga or RunStatus.FAILED, EXIT_FAILED
    return RunStatus.SUCCEEDED, EXIT_OK
