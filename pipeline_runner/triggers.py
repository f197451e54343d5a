"""Trigger rules and status functions: whether a step whose needs have ended may run.

A main step becomes ready when every need has ended.  Its `trigger` rule (Airflow's names)
reads the needs' states: when it holds, the step's `if` (if any) decides; when it does not, the
step ends `upstream_failed` if a need failed, else `skipped`, with the reason naming the need.
An `if` that calls a status function (`success()`, `failure()`, `always()`, `cancelled()`, as
in GitHub Actions) replaces the rule: it alone decides.  `finally` steps have no rule (their
needs only give them outputs).  See docs/semantics.md, "Trigger rules and skips".

These are decisions over the run state: they return what to mark and never change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .kinds import FAILED_RUN
from .model import Node, NodeKind, State

if TYPE_CHECKING:  # the planner reads the names above; the run state is the core's
    from .runstate import NodeRun, RunState

TRIGGERS = (
    "all_success",
    "all_done",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
)
DEFAULT = "all_success"
STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
ON_CANCEL = frozenset({"always", "cancelled"})  # an `if` calling one runs when cancelled

SUCCESS = frozenset({State.SUCCEEDED, State.CACHED, State.FAILED_ALLOWED, State.PARTIAL})
FAILURE = frozenset({State.FAILED, State.UPSTREAM_FAILED})

Need = tuple[str, State]  # a need's id and the state it ended in


def holds(rule: str, states: Sequence[State]) -> bool:
    """Whether `rule` lets a step run after needs that ended in `states` (no needs: it runs)."""
    if not states or rule == "all_done":
        return True
    if rule == "all_success":  # the default, checked for most steps: one pass, no count
        return all(s in SUCCESS for s in states)
    ok = sum(1 for s in states if s in SUCCESS)
    failed = any(s in FAILURE for s in states)
    if rule == "one_success":
        return ok > 0
    if rule == "one_failed":
        return failed
    if rule == "none_failed":
        return not failed
    return not failed and ok > 0  # none_failed_min_one_success


def _said(state: State) -> str:
    return {State.SKIPPED: "was skipped", State.CANCELLED: "was cancelled"}.get(
        state, state.value.replace("_", " ")
    )


def verdict(rule: str, needs: Sequence[Need]) -> tuple[State, str] | None:
    """None when the step may run (its `if` decides next); else the state it ends in and why."""
    if holds(rule, [s for _, s in needs]):
        return None
    for bad in (FAILURE, {State.CANCELLED}):
        for nid, state in needs:
            if state in bad:
                final = State.UPSTREAM_FAILED if state in FAILURE else State.CANCELLED
                return final, f"needs {nid}, which {_said(state)}"
    if rule == DEFAULT:
        nid, state = next((n, s) for n, s in needs if s not in SUCCESS)
        return State.SKIPPED, f"needs {nid}, which {_said(state)}"
    listed = ", ".join(f"{nid} {_said(state).removeprefix('was ')}" for nid, state in needs)
    return State.SKIPPED, f"trigger {rule} does not hold: {listed}"


def found(state: RunState, nid: str) -> NodeRun | None:
    """A node of this run, or one `resume --only` kept as recorded."""
    return state.runs.get(nid) or state.kept.get(nid)


def need_states(state: RunState, node: Node) -> list[Need]:
    """The states its needs ended in (a need left out of `run --only` is not one)."""
    return [(n, nr.state) for n in node.needs if (nr := found(state, n)) is not None]


def needs_of(state: RunState, nid: str) -> tuple[str, ...]:
    """A node's needs; an instance of a run-time for_each has those of its step."""
    nr = found(state, nid)
    node = nr.node if nr is not None else state.plan.nodes.get(nid)
    if node is None:
        return ()
    if not node.needs and node.group is not None and node.key is not None:
        group = found(state, node.group)
        if group is not None and group.node.kind is NodeKind.MAPPED:
            return group.node.needs
    return node.needs


def ancestors_failed(state: RunState, nid: str) -> bool:
    """`failure()`: a need, or a need of a need (GitHub: any ancestor job), failed."""
    seen: set[str] = set()
    todo = list(needs_of(state, nid))
    while todo:
        need = todo.pop()
        if need in seen:
            continue
        seen.add(need)
        nr = found(state, need)
        if nr is not None and nr.state in FAILURE:
            return True
        todo.extend(needs_of(state, need))
    return False


def functions(state: RunState, nr: NodeRun, run_status: str) -> dict[str, Any]:
    """`success()`, `failure()`, `always()` and `cancelled()` for `nr`'s `if`.  For a
    `finally` step every main step is upstream: they tell how the run went (`run_status`)."""
    cancelled = state.cancelling
    if nr.node.is_finally:
        success, failure = run_status == "succeeded", run_status in FAILED_RUN
    else:
        failure = ancestors_failed(state, nr.id)
        needs = [found(state, n) for n in needs_of(state, nr.id)]
        ok = all(n.state in SUCCESS for n in needs if n is not None)
        success = ok and not failure and not cancelled
    return {
        "success": lambda: success,
        "failure": lambda: failure,
        "always": lambda: True,
        "cancelled": lambda: cancelled,
    }
