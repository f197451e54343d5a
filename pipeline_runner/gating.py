"""Approval gates applied to the run state (approvals.py decides, this module applies): a
gate that becomes ready ends at once when answered already, or is marked `waiting` (no task, no
worker, no slot); an answer or a timeout found later ends it as a step ends, through the
transitions (`done`, `final_failure`), so its dependents wake or fail as for any step."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from . import approvals
from .kinds import FailureKind
from .model import State
from .runstate import NodeRun

if TYPE_CHECKING:
    from .transitions import Transitions


def open_gate(flow: Transitions, nr: NodeRun, with_: Any) -> None:
    """An approval gate is ready (`with_` rendered): it ends now if answered already (on
    resume), else it waits until `answer_gates` finds its answer."""
    try:
        gate = approvals.gate_of(with_)
    except ValueError as exc:
        flow.fail_now(nr, FailureKind.ERROR, str(exc))
        return
    outcome, since = flow.gates.open(nr.id, gate)
    nr.started = nr.started or since
    if outcome is not None:
        end_gate(flow, nr, outcome)
        return
    nr.output = gate.request(since)
    nr.error = "waiting for approval" + (f": {gate.prompt}" if gate.prompt else "")
    flow.state.mark(nr, State.WAITING)


def answer_gates(flow: Transitions) -> None:
    """Look for the answers of the waiting gates (the scheduler calls this at most every
    APPROVAL_POLL seconds, and once more before the run stops `waiting`)."""
    runs = flow.state.runs
    for sid, outcome in flow.gates.look(lambda s: runs[s].state is State.WAITING):
        end_gate(flow, runs[sid], outcome)


def end_gate(flow: Transitions, nr: NodeRun, outcome: approvals.Outcome) -> None:
    """A gate's answer (or its timeout) came: approved, its value is the output; rejected or
    timed out, it fails as a step's last attempt does."""
    if nr.attempt == nr.base:
        nr.attempt += 1
    nr.finished = time.time()
    nr.output, nr.output_json = None, "null"
    if outcome.state is State.SUCCEEDED:
        nr.take(outcome.output, json.dumps(outcome.output), None)
        nr.kind, nr.error = None, ""
        flow.done(nr, State.SUCCEEDED)
        return
    nr.kind, nr.error = outcome.kind, outcome.message
    flow.final_failure(nr)


def only_gates_left(flow: Transitions) -> bool:
    """Nothing runs and nothing can but waiting gates: look for their answers a last time.
    True when gates still wait and nothing else can go on (the run stops `waiting`)."""
    flow.gates.next_look = 0.0
    answer_gates(flow)
    state = flow.state
    if state.ready or state.running or state.timers or state.unfinished == 0:
        return False
    return bool(flow.gates.waiting)
