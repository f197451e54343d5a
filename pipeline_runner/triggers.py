"""Trigger rules and status functions: whether a step whose needs have ended may run.

A main step becomes ready when every need has ended.  Its `trigger` rule (Airflow's names)
reads the needs' states: when it holds, the step's `if` (if any) decides; when it does not, the
step ends `upstream_failed` if a need failed, else `skipped`, with the reason naming the need.
An `if` that calls a status function (`success()`, `failure()`, `always()`, `cancelled()`, as
in GitHub Actions) replaces the rule: it alone decides.  `finally` steps have no rule (their
needs only give them outputs).  See docs/semantics.md, "Trigger rules and skips".

These are decisions over states: they return what to mark and never touch the run state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .model import State

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

SUCCESS = frozenset({State.SUCCEEDED, State.CACHED, State.FAILED_ALLOWED})
FAILURE = frozenset({State.FAILED, State.UPSTREAM_FAILED})

Need = tuple[str, State]  # a need's id and the state it ended in


def holds(rule: str, states: Sequence[State]) -> bool:
    """Whether `rule` lets a step run after needs that ended in `states` (no needs: it runs)."""
    if not states or rule == "all_done":
        return True
    ok = sum(1 for s in states if s in SUCCESS)
    failed = any(s in FAILURE for s in states)
    if rule == "all_success":
        return ok == len(states)
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
                return _ended(bad, nid, state)
    if rule == DEFAULT:
        nid, state = next((n, s) for n, s in needs if s not in SUCCESS)
        return State.SKIPPED, f"needs {nid}, which {_said(state)}"
    listed = ", ".join(f"{nid} {_said(state).removeprefix('was ')}" for nid, state in needs)
    return State.SKIPPED, f"trigger {rule} does not hold: {listed}"


def _ended(bad: Iterable[State], nid: str, state: State) -> tuple[State, str]:
    final = State.UPSTREAM_FAILED if state in FAILURE else State.CANCELLED
    return final, f"needs {nid}, which {_said(state)}"


def ancestors_failed(
    start: Iterable[str],
    needs_of: Callable[[str], Sequence[str]],
    state_of: Callable[[str], State | None],
) -> bool:
    """`failure()`: a need, or a need of a need (GitHub: any ancestor job), failed."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        if state_of(nid) in FAILURE:
            return True
        todo.extend(needs_of(nid))
    return False


def functions(success: bool, failure: bool, cancelled: bool) -> Mapping[str, Any]:
    """The status functions, as names a template calls."""
    return {
        "success": lambda: success,
        "failure": lambda: failure,
        "always": lambda: True,
        "cancelled": lambda: cancelled,
    }
