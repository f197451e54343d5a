"""Pools and group limits: whether a step may take a slot now, and the slots steps hold.

A step takes its pool's slot and its group's (`max_parallel`) only when it is handed to the
executor; a step blocked by a full pool or group waits in a heap of its own (`blocked`), and one
of them goes back to the ready queue each time a slot frees, so no mix of limits deadlocks.
"""

from __future__ import annotations

import heapq

from . import shortcuts
from .model import Node, NodeKind, Plan
from .runstate import RunState

UNLIMITED = 1 << 30


def group_limit(state: RunState, node: Node) -> int | None:
    """`max_parallel` of the group `node` is in (a for_each's, or its template's)."""
    group = state.runs.get(node.group) if node.group is not None else None
    return None if group is None else limit_of(group.node)


def limit_of(node: Node) -> int | None:
    if node.max_parallel is not None:
        return node.max_parallel
    return node.for_each.max_parallel if node.for_each else None


def leg_limit(state: RunState, node: Node) -> tuple[str, str, int] | None:
    """For a step inside a template instance (a leg) of a limited fan-out: the fan-out's id,
    the leg's id and the limit.  A leg holds its place from its first step's start to its
    end, as a job of GitHub's `max-parallel` does."""
    leg = state.runs.get(node.group) if node.group is not None else None
    while leg is not None and leg.node.group is not None:
        fan = state.runs.get(leg.node.group)
        if fan is None:
            return None
        limit = limit_of(fan.node)
        if limit is not None:
            return fan.id, leg.id, limit
        leg = fan
    return None


def leg_done(state: RunState, node: Node) -> None:
    """A leg ended: its place in its fan-out is free."""
    active = state.legs.get(node.group or "")
    if active is not None and node.id in active:
        active.discard(node.id)
        release_all(state, f"group:{node.group}")


def unlimited(plan: Plan) -> bool:
    """Whether no step of `plan` can be held back by a limit: it has no pools (nor breakers),
    no `max_parallel` and no fan-out expanded at run time (a matrix's `max_parallel` may come
    with its items).  A speed shortcut (shortcuts.py): a run of such a plan keeps no count of
    the slots steps hold (`RunState.limited`), which nothing would read."""
    if not shortcuts.enabled() or plan.pools or plan.breakers:
        return False
    return not any(_may_limit(node) for node in plan.nodes.values())


def _may_limit(node: Node) -> bool:
    return (
        node.kind is NodeKind.MAPPED
        or limit_of(node) is not None
        or any(_may_limit(inner) for inner in node.body)
    )


def limit_reached(state: RunState, node: Node) -> str | None:
    """The limit (`pool:NAME` or `group:ID`) that keeps `node` from starting now, if any."""
    if not state.limited:
        return None
    pool = node.pool
    if pool is not None and state.pool_busy.get(pool, 0) >= state.plan.pools.get(pool, UNLIMITED):
        return "pool:" + pool
    limit = group_limit(state, node)
    if limit is not None and state.group_busy.get(node.group or "", 0) >= limit:
        return f"group:{node.group}"
    leg = leg_limit(state, node)
    if leg is not None:
        active = state.legs.get(leg[0], set())
        if leg[1] not in active and len(active) >= leg[2]:
            return f"group:{leg[0]}"
    return None


def hold(state: RunState, node: Node, delta: int) -> None:
    """Take (+1) or give back (-1) the slots of `node`; a slot given back lets one step that
    waited for it return to the ready queue."""
    if not state.limited:
        return
    if node.pool is not None:
        state.pool_busy[node.pool] = state.pool_busy.get(node.pool, 0) + delta
        if delta < 0:
            release(state, "pool:" + node.pool)
    if node.group is not None:
        state.group_busy[node.group] = state.group_busy.get(node.group, 0) + delta
        if delta < 0:
            release(state, "group:" + node.group)
        leg = leg_limit(state, node) if delta > 0 else None
        if leg is not None:
            state.legs.setdefault(leg[0], set()).add(leg[1])


def block(state: RunState, limit: str, entry: tuple[int, int, int, str]) -> None:
    heapq.heappush(state.blocked.setdefault(limit, []), entry)


def release(state: RunState, limit: str) -> None:
    """The first step waiting for `limit` goes back to the ready queue."""
    waiting = state.blocked.get(limit)
    if waiting:
        heapq.heappush(state.ready, heapq.heappop(waiting))


def release_all(state: RunState, limit: str) -> None:
    for entry in state.blocked.pop(limit, []):
        heapq.heappush(state.ready, entry)
