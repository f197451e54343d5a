"""The end of the main steps: saga compensations, then `finally` steps.

When the run failed, what succeeded is undone: the `compensate` actions of succeeded steps, one
at a time, in reverse order of completion, within the template instances that failed (a failure
outside any instance undoes the whole run).  When no main step (and no compensation) is left,
the `finally` steps are released.

A step whose compensation succeeded reads `compensated`; one whose compensation failed stays
`succeeded` (its effect remains) beside its failed `<id>:compensate`.  The run then ends
`compensated` when every compensation it started succeeded, `compensation_failed` when one did
not (see `outcome`).
"""

from __future__ import annotations

import dataclasses

from .kinds import INSTANCE_KINDS, RunStatus
from .model import Node, NodeKind, Plan, State
from .runstate import NodeRun, RunState


def instance_of(plan: Plan, node: Node) -> str | None:
    """The template instance (or inlined pipeline) `node` is in, if any."""
    group = node.group
    while group is not None:
        owner = plan.nodes.get(group)
        if owner is None:
            return None
        if owner.group_kind in INSTANCE_KINDS:
            return group
        group = owner.group
    return None


def failed_scopes(state: RunState) -> set[str | None]:
    """The instances holding a failed main step (None: a failure outside any instance)."""
    scopes: set[str | None] = set()
    for nr in state.runs.values():
        if (
            nr.state is State.FAILED
            and nr.compensates is None
            and not nr.node.is_finally
            and nr.node.kind is not NodeKind.GROUP  # failed through a member, counted there
        ):
            scopes.add(instance_of(state.plan, nr.node))
    return scopes


def to_undo(state: RunState) -> list[NodeRun]:
    """The succeeded steps to compensate, in the order their compensations run."""
    scopes = failed_scopes(state)
    undo = [
        nr
        for nr in state.runs.values()
        if nr.state is State.SUCCEEDED
        and nr.node.compensate is not None
        and (None in scopes or instance_of(state.plan, nr.node) in scopes)
    ]
    undo.sort(key=lambda nr: nr.completed_seq, reverse=True)
    return undo


def compensation_node(state: RunState, nr: NodeRun) -> Node:
    """The node of the action that undoes `nr`: `<id>:compensate`, needing nothing."""
    node = nr.node
    assert node.compensate is not None
    return dataclasses.replace(
        node,
        id=f"{node.id}:compensate",
        uses=node.compensate.uses,
        with_=node.compensate.with_,
        needs=(),
        condition=None,
        cache=None,
        compensate=None,
        pool=None,
        group=None,
        order=len(state.plan.nodes) + len(state.runs),
    )


def release_finally(state: RunState) -> list[NodeRun]:
    """Every main step is done: the `finally` steps stop waiting for that; those that wait for
    nothing else now."""
    ready = []
    for nr in state.runs.values():
        if nr.node.is_finally and nr.state is State.PENDING:
            nr.waiting -= 1
            if nr.waiting == 0:
                ready.append(nr)
    return ready


def undone(state: RunState, comp: NodeRun) -> NodeRun | None:
    """The step a compensation that ended has undone (it succeeded), else None."""
    if comp.compensates is None or comp.state is not State.SUCCEEDED:
        return None
    step = state.runs.get(comp.compensates)
    return step if step is not None and step.state is State.SUCCEEDED else None


def outcome(state: RunState) -> RunStatus | None:
    """How the saga of a failed run ended: None when no compensation ran (or one is still
    going), `compensated` when each succeeded, `compensation_failed` when one did not (failed,
    or stopped before it could succeed)."""
    comps = [nr for nr in state.runs.values() if nr.compensates is not None]
    if not comps:
        return None
    if any(nr.state.finished and nr.state is not State.SUCCEEDED for nr in comps):
        return RunStatus.COMPENSATION_FAILED
    if all(nr.state is State.SUCCEEDED for nr in comps):
        return RunStatus.COMPENSATED
    return None
