"""Bounded loops at run time: the iterations of a step (or template instance) with a `loop`.

The loop is a MAPPED node (loopplan.py).  When its needs are done it gets its first iteration,
`<id>.1`: an instance whose scope binds `loop` to `{index: 1, previous: none}` (for a template,
a copy of its body, as a run-time for_each makes one per item).  Each iteration is a member of
the loop and the loop waits for it alone; when it ends the loop is ready again and
`decide` says what follows:

- the iteration did not succeed: the loop ends in the iteration's state (a failure has failed
  the loop already, as for any group);
- it was skipped (its `if` was false): the loop ends (`skipped` if every iteration was), with
  no output;
- `until` holds over its output: the loop succeeds with that output;
- `max_iterations` ran: the loop fails with kind `loop_limit`;
- else the next iteration joins the run, with `loop.previous` the output just made.

On resume an iteration that succeeded before keeps its output (and is not run again) while
everything before it was kept too; the first one that was not runs, and so do those after it.
`advance` works in a loop rather than by recursion, so a long chain of kept iterations costs
no stack.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import expansion
from .errors import TemplateError
from .kinds import FailureKind
from .loopplan import LOOP_NAME
from .model import Node, NodeKind, State
from .runstate import NodeRun, RunState, group_state

if TYPE_CHECKING:
    from .transitions import Transitions


def iteration(state: RunState, node: Node, index: int, previous: Any) -> list[Node]:
    """The nodes of iteration `index` of loop `node`: one step `<id>.<index>`, or for a
    template the instance `<id>.<index>` and its steps `<id>.<index>.<inner>`."""
    item = {"index": index, "previous": previous}
    taken: set[str] = set()

    def no_key(_: Any) -> str:  # an iteration's key is its index
        raise AssertionError("a loop has no key template")

    head = expansion.instance(state, node, index - 1, item, taken, no_key, str(index))
    if not node.body:
        return [dataclasses.replace(head, loop=None)]
    return expansion.Rebase(node, head).body(state, taken)


def iteration_item(nr: NodeRun, state: RunState) -> tuple[int, Any]:
    """The index of the next iteration and the `loop.previous` it sees."""
    if not nr.members:
        return 1, None
    return len(nr.members) + 1, state.runs[nr.members[-1]].output


class Move(enum.Enum):
    END = "end"  # the loop ends with its last iteration
    LIMIT = "limit"  # max_iterations ran and until did not hold: loop_limit
    NEXT = "next"  # the next iteration joins the run


def decide(nr: NodeRun, runs: Mapping[str, NodeRun], holds: Callable[[NodeRun], bool]) -> Move:
    """What follows once the loop `nr` is ready (its needs done, or its last iteration ended).
    `holds` evaluates `until` over an iteration that succeeded (it may raise TemplateError)."""
    loop = nr.node.loop
    assert loop is not None
    if nr.members:
        last = runs[nr.members[-1]]
        if last.state not in (State.SUCCEEDED, State.CACHED) or holds(last):
            return Move.END
    if len(nr.members) >= loop.max_iterations:
        return Move.LIMIT
    return Move.NEXT


class Loops:
    """Carries out what `decide` says each time a loop is ready; what it starts goes through
    the transitions (as a run-time for_each's instances do)."""

    def __init__(self, flow: Transitions) -> None:
        self.flow = flow
        self.active: set[str] = set()  # loops being advanced (a kept iteration re-enters)
        self.again: set[str] = set()  # loops ready again while being advanced
        self.keep: dict[str, bool] = {}  # resume: whether the next iteration may be kept

    def advance(self, nr: NodeRun) -> None:
        if nr.id in self.active:
            self.again.add(nr.id)
            return
        self.active.add(nr.id)
        try:
            self.again.add(nr.id)
            while nr.id in self.again and nr.state is State.PENDING:
                self.again.discard(nr.id)
                self.turn(nr)
        finally:
            self.active.discard(nr.id)
            self.again.discard(nr.id)

    def turn(self, nr: NodeRun) -> None:
        flow, loop = self.flow, nr.node.loop
        assert loop is not None
        try:
            move = decide(nr, flow.state.runs, lambda last: self.until(nr, last))
        except TemplateError as exc:
            flow.fail_now(nr, FailureKind.ERROR, f"loop.until: {exc}")
            return
        if move is Move.END:
            self.finish(nr)
        elif move is Move.LIMIT:
            until = loop.until.strip("{} ")
            message = f"loop: `until` did not hold after {loop.max_iterations} iterations"
            flow.fail_now(nr, FailureKind.LOOP_LIMIT, f"{message} (until: {until})")
        else:
            self.next_iteration(nr)

    def next_iteration(self, nr: NodeRun) -> None:
        state = self.flow.state
        index, previous = iteration_item(nr, state)
        try:
            nodes = iteration(state, nr.node, index, previous)
        except TemplateError as exc:
            self.flow.fail_now(nr, FailureKind.ERROR, f"loop: {exc}")
            return
        nr.members = [*nr.members, next(n.id for n in nodes if n.group == nr.id)]
        nr.waiting = 1
        ready = self.flow.add_instances(nr, nodes, self.keep.get(nr.id))
        steps = [state.runs[n.id] for n in nodes if n.kind is NodeKind.STEP]
        self.keep[nr.id] = all(s.reused for s in steps)
        for child in ready:
            self.flow.became_ready(child)
        if nr.waiting == 0:  # resume: the iteration kept its output
            self.again.add(nr.id)

    def until(self, nr: NodeRun, last: NodeRun) -> bool:
        flow = self.flow
        assert nr.node.loop is not None
        index, previous = len(nr.members), None
        if index > 1:
            previous = flow.state.runs[nr.members[-2]].output
        extra = flow.run_context(nr)
        extra["output"] = last.output
        extra["outputs"] = last.outputs or {}
        extra[LOOP_NAME] = {"index": index, "previous": previous}
        ctx = flow.renderer.context(nr.node.scope, extra)
        from .templating import evaluate_condition  # here: jinja2 only for a run that loops

        return evaluate_condition(nr.node.loop.until, ctx)

    def finish(self, nr: NodeRun) -> None:
        """The loop ends with its last iteration: its state (over all iterations, as a
        group's), and the last iteration's output as its own."""
        members = [self.flow.state.runs[m] for m in nr.members]
        final = group_state(members)
        last = members[-1] if members else None
        if final.ok and last is not None:
            nr.output, nr.outputs = last.output, last.outputs
        elif last is not None:
            nr.error = last.error
        nr.started = min((m.started for m in members if m.started), default=None)
        nr.finished = time.time()
        self.flow.done(nr, final)
