"""What a cancellation stops, decided over the run state: the scheduler stops the running
attempts, then cancels the nodes `to_cancel` names and drops what may no longer start from its
queues (`drop_stopped`).  `finally` steps and steps whose `if` calls always() or cancelled() are
left to run, unless a second signal asked to stop at once (`state.hard_cancel`)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from .model import State
from .runstate import NodeRun, RunState

_STOPPABLE = (State.PENDING, State.RETRYING, State.RUNNING, State.WAITING)


def runs_on_cancel(nr: NodeRun) -> bool:
    """A main step whose `if` calls always() or cancelled(), not started yet: the
    cancellation leaves it to run when its needs have ended (GitHub Actions' `if: always()`)."""
    return nr.node.on_cancel and nr.state is State.PENDING and not nr.follow_id


def _kept(state: RunState, nr: NodeRun) -> bool:
    return not state.hard_cancel and (nr.node.is_finally or runs_on_cancel(nr))


def to_cancel(state: RunState) -> Iterator[NodeRun]:
    """The nodes the cancellation ends `cancelled`: those not ended and not kept to run, each
    looked at when its turn comes (cancelling one may end others)."""
    for nr in list(state.runs.values()):
        if nr.state in _STOPPABLE and not _kept(state, nr):
            yield nr


def drop_stopped(state: RunState) -> None:
    """Take what may no longer start off the ready queue and the retry timers."""
    state.ready = [e for e in state.ready if _kept(state, state.runs[e[3]])]
    heapq.heapify(state.ready)
    state.timers = [t for t in state.timers if not state.stopping(state.runs[t[1]])]
    heapq.heapify(state.timers)
