"""Chains: follow-up attempts queued on a worker behind the step they need (a speed shortcut).

The sole dependent of a running step is queued on the worker of the step's attempt to run right
after it if it succeeds (the worker skips it otherwise), when nothing about it waits on the
runner: no condition or template left to render, no cache, pool, resources or group limit, and
no other step waiting for a worker.  A chain then runs without a round trip to the runner
between its steps; the runner records each start when it learns that the step before succeeded,
as it would have started it then.  Up to CHAIN_AHEAD links are queued behind what runs.

The switch: RUNNER_NO_SHORTCUTS=1 in the environment turns chains off (the plain path: every
attempt is handed to the executor by the scheduler's loop, when its needs are done).
"""

from __future__ import annotations

from collections.abc import Callable

from . import shortcuts
from .approvals import USES as APPROVAL
from .limits import group_limit
from .messages import Task
from .model import Node, NodeKind, State, has_deferred
from .runstate import NodeRun, RunState
from .triggers import DEFAULT, SUCCESS

CHAIN_AHEAD = 8  # follow-ups queued behind a running step of a chain


def may_follow(state: RunState, child: NodeRun) -> bool:
    """Whether `child` may be queued behind the one step it waits for."""
    node = child.node
    return not (
        child.state is not State.PENDING
        or child.waiting != 1
        or child.follow_id
        or node.kind is not NodeKind.STEP
        or node.uses == APPROVAL  # a gate waits for its answer on the runner's side
        or node.is_finally
        or child.compensates is not None
        or node.condition is not None
        or node.trigger != DEFAULT
        or not needs_succeeded(state, node)
        or node.cache is not None
        or node.pool is not None
        or node.resources
        or group_limit(state, node) is not None
        or under_fail_fast(state, node)
        or has_deferred(node.with_)
        or has_deferred(node.env)
    )


def needs_succeeded(state: RunState, node: Node) -> bool:
    """Its other needs ended in success: a follow-up runs when the last one succeeds, so
    a skipped or failed one would make it run where its trigger rule says no."""
    if len(node.needs) == 1:
        return True
    runs = state.runs
    return all(
        runs[n].state in SUCCESS or not runs[n].state.finished for n in node.needs if n in runs
    )


def under_fail_fast(state: RunState, node: Node) -> bool:
    """Whether `node` is inside a `fail_fast` matrix (whose legs may be cancelled while they
    run: nothing is queued on a worker behind them)."""
    group = node.group
    while group is not None:
        found = state.runs.get(group)
        if found is None:
            return False
        if found.node.fail_fast:
            return True
        group = found.node.group
    return False


def queued_follower(state: RunState, nr: NodeRun) -> NodeRun | None:
    """The step queued to follow `nr` on its worker, if any."""
    dependents = state.dependents.get(nr.id, ())
    if len(dependents) == 1 and state.runs[dependents[0]].follow_id:
        return state.runs[dependents[0]]
    return None


class Chains:
    """The follow-ups queued on workers and not started yet."""

    def __init__(self, state: RunState, can_follow: Callable[[int], bool] | None) -> None:
        self.state = state
        self.can_follow = can_follow if shortcuts.enabled() else None
        self.followers: dict[int, str] = {}  # follow-up attempt id -> step

    def follow_up(
        self, nr: NodeRun, attempt_id: int, make: Callable[[NodeRun], Task], placed: bool
    ) -> Task | None:
        """A follow-up of `nr`'s attempt `attempt_id`, or None (see the module's text).
        `placed`: the attempt is on a worker already, which must take one more."""
        state = self.state
        if self.can_follow is None or state.cancelling or state.ready:
            return None
        dependents = state.dependents.get(nr.id, ())
        if len(dependents) != 1:
            return None
        child = state.runs[dependents[0]]
        if not may_follow(state, child) or (placed and not self.can_follow(attempt_id)):
            return None
        follow_id = state.new_attempt_id()
        child.task = make(child)
        child.follow_id = follow_id
        self.followers[follow_id] = child.id
        return child.task._replace(
            attempt_id=follow_id, attempt=child.attempt + 1, after=attempt_id
        )

    def chain(
        self,
        nr: NodeRun,
        attempt_id: int,
        make: Callable[[NodeRun], Task],
        limit: int = CHAIN_AHEAD,
        placed: bool = True,
    ) -> list[Task]:
        """Up to `limit` follow-ups, each queued behind the one before: the next links of a
        chain, so that its worker goes on for a while without waiting for the runner."""
        tasks: list[Task] = []
        while len(tasks) < limit:
            follow = self.follow_up(nr, attempt_id, make, placed=placed and not tasks)
            if follow is None:
                break
            tasks.append(follow)
            nr, attempt_id = self.state.runs[follow.node_id], follow.attempt_id
        return tasks

    def extend(self, nr: NodeRun, attempt_id: int, make: Callable[[NodeRun], Task]) -> list[Task]:
        """`nr` started as a follow-up: keep the chain CHAIN_AHEAD links ahead of what runs,
        queueing behind its last queued link."""
        tail, tail_id, ahead = nr, attempt_id, 0
        while (child := queued_follower(self.state, tail)) is not None:
            tail, tail_id, ahead = child, child.follow_id, ahead + 1
        return self.chain(tail, tail_id, make, CHAIN_AHEAD - ahead)

    def drop(self, nr: NodeRun) -> None:
        """`nr`'s attempt did not succeed: its worker skips what was queued to follow it, and
        what was queued to follow those."""
        while (child := queued_follower(self.state, nr)) is not None:
            self.followers.pop(child.follow_id, None)
            child.follow_id = 0
            nr = child
