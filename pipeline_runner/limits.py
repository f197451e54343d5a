"""Pools and group limits: whether a step may take a slot now, and the slots steps hold.

A step takes its pool's slot and its group's (`max_parallel`) only when it is handed to the
executor; a step blocked by a full pool or group waits in a heap of its own (`blocked`), and one
of them goes back to the ready queue each time a slot frees, so no mix of limits deadlocks.
"""

from __future__ import annotations

import heapq

from .model import Node
from .runstate import RunState

UNLIMITED = 1 << 30


def group_limit(state: RunState, node: Node) -> int | None:
    """`max_parallel` of the group `node` is in (a for_each's, or its template's)."""
    group = state.runs.get(node.group) if node.group is not None else None
    if group is None:
        return None
    if group.node.max_parallel is not None:
        return group.node.max_parallel
    return group.node.for_each.max_parallel if group.node.for_each else None


def limit_reached(state: RunState, node: Node) -> str | None:
    """The limit (`pool:NAME` or `group:ID`) that keeps `node` from starting now, if any."""
    pool = node.pool
    if pool is not None and state.pool_busy.get(pool, 0) >= state.plan.pools.get(pool, UNLIMITED):
        return "pool:" + pool
    limit = group_limit(state, node)
    if limit is not None and state.group_busy.get(node.group or "", 0) >= limit:
        return f"group:{node.group}"
    return None


def hold(state: RunState, node: Node, delta: int) -> None:
    """Take (+1) or give back (-1) the slots of `node`; a slot given back lets one step that
    waited for it return to the ready queue."""
    if node.pool is not None:
        state.pool_busy[node.pool] = state.pool_busy.get(node.pool, 0) + delta
        if delta < 0:
            release(state, "pool:" + node.pool)
    if node.group is not None:
        state.group_busy[node.group] = state.group_busy.get(node.group, 0) + delta
        if delta < 0:
            release(state, "group:" + node.group)


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
