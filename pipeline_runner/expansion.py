"""Run-time for_each: the instances of a mapped step whose list is known only at run time.

`instances` renders nothing itself: it is given the rendered list and a way to render a `key:`
template for an item, and returns the instance nodes (or raises TemplateError).  On resume,
instances that succeeded in the earlier run keep their output when everything upstream did.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from . import matrix
from .errors import TemplateError
from .foreach import default_key, id_clash, key_problem
from .model import Node, NodeKind, Scope
from .runstate import NodeRun, Preset, RunState


def item_scope(node: Node, item: Any) -> Scope:
    spec = node.for_each
    assert spec is not None
    return Scope(
        MappingProxyType({**node.scope.vars, spec.as_name: item}),
        node.scope.aliases,
        node.scope.parent,
    )


def legs(items: Any) -> list[tuple[str | None, Any]]:
    """The items of a rendered for_each, each with its default key (None: the list rule): a
    list, or a matrix mapping (matrix.py); raises TemplateError."""
    if isinstance(items, list):
        return [(None, item) for item in items]
    if not matrix.is_matrix(items):
        raise TemplateError(f"for_each must give a list or a matrix, got {type(items).__name__}")
    found = matrix.problems(items)
    if found:
        raise TemplateError("; ".join(p.message for p in found))
    combos, problem = matrix.legs(items)
    if problem is not None:
        raise TemplateError(problem)
    return [(leg.key, leg.item) for leg in combos]


def instances(
    state: RunState, node: Node, items: Any, render_key: Callable[[Scope], str]
) -> list[Node]:
    """One step per item of `items` (the rendered list or matrix), with ids `<node id>.<key>`."""
    taken: set[str] = set()  # ids of this list's instances, so none is dropped
    return [
        instance(state, node, i, item, taken, render_key, default)
        for i, (default, item) in enumerate(legs(items))
    ]


def template_instances(
    state: RunState, node: Node, items: Any, render_key: Callable[[Scope], str]
) -> list[Node]:
    """A template fanned out at run time: per item, a copy of the body planned for it (the
    instance's group `<node id>.<key>` and its steps `<node id>.<key>.<inner id>`)."""
    keys: set[str] = set()  # the instances' ids: two items with one key
    taken: set[str] = set()  # every id made: a key with '.' can spell another item's step's
    out: list[Node] = []
    for i, (default, item) in enumerate(legs(items)):
        head = instance(state, node, i, item, keys, render_key, default)
        spelt(head.id, taken)
        out.extend(Rebase(node, head).body(state, taken))
    return out


def spelt(nid: str, taken: set[str]) -> None:
    if nid in taken:
        raise TemplateError(
            f"the id '{nid}' is made twice: a key with '.' can spell the id of another item's "
            "step; choose another key"
        )
    taken.add(nid)


class Rebase:
    """The body of a fanned-out template, moved to one item: ids `<id>.<inner>` become
    `<id>.<key>.<inner>`, and every scope that saw the item as a run-time value sees it."""

    def __init__(self, node: Node, head: Node) -> None:
        self.node, self.head = node, head
        self.old, self.new = f"{node.id}.", f"{head.id}."
        self.scopes: dict[int, Scope] = {}
        # where the body saw the item as a run-time value: the parent of its instance's scope
        self.marked = next(part.scope.parent for part in node.body if part.id == node.id)

    def rename(self, nid: str) -> str:
        if nid == self.node.id:
            return self.head.id
        return self.new + nid[len(self.old) :] if nid.startswith(self.old) else nid

    def inside(self, nid: str, renamed: bool = False) -> bool:
        top, below = (self.head.id, self.new) if renamed else (self.node.id, self.old)
        return nid == top or nid.startswith(below)

    def scope(self, scope: Scope | None) -> Scope | None:
        if scope is None or scope is self.marked:
            return self.head.scope if scope is not None else None
        found = self.scopes.get(id(scope))
        if found is None:
            aliases = {name: self.rename(nid) for name, nid in scope.aliases.items()}
            found = Scope(scope.vars, MappingProxyType(aliases), self.scope(scope.parent))
            self.scopes[id(scope)] = found
        return found

    def body(self, state: RunState, taken: set[str]) -> list[Node]:
        out = []
        for part in self.node.body:
            head = part.id == self.node.id
            moved = self.move(part)
            if head:
                head_of = {"key": self.head.key, "item": self.head.item, "has_item": True}
                moved = dataclasses.replace(moved, group=self.node.id, **head_of)
            else:
                key = moved.id[len(self.node.id) + 1 :]
                if problem := id_clash(moved.id, key, state.plan.nodes, state.runs):
                    raise TemplateError(problem)
                spelt(moved.id, taken)
            # needs outside the body are done: the fan-out started after them
            needs = tuple(n for n in moved.needs if self.inside(n, renamed=True))
            out.append(dataclasses.replace(moved, needs=needs))
        return out

    def move(self, part: Node) -> Node:
        """One node of the body with its ids and scope moved (a fan-out of a template inside
        the body moves with its own body)."""
        return dataclasses.replace(
            part,
            id=self.rename(part.id),
            needs=tuple(self.rename(n) for n in part.needs),
            members=tuple(self.rename(n) for n in part.members),
            group=self.rename(part.group) if part.group is not None else None,
            scope=self.scope(part.scope) or part.scope,
            body=tuple(self.move(inner) for inner in part.body),
        )


def recorded_body_node(node: Node, sid: str) -> Node | None:
    """The node of a recorded step of a template fanned out at run time (`T.<key>.<inner>`),
    for a resume that does not expand it again: its part of the body, moved to its key."""
    found: tuple[Node, str] | None = None
    for part in node.body:
        suffix = part.id[len(node.id) :]  # "" for the instance, ".<inner id>" for its steps
        key = sid[len(node.id) + 1 : len(sid) - len(suffix)]
        if sid.endswith(suffix) and key and (found is None or len(suffix) > len(found[1])):
            found = part, suffix
    if found is None:
        return None
    key = sid[len(node.id) + 1 : len(sid) - len(found[1])]
    head = dataclasses.replace(node, id=f"{node.id}.{key}", key=key)
    moved = Rebase(node, head).move(found[0])
    if found[0].id == node.id:
        moved = dataclasses.replace(moved, group=node.id, key=key, has_item=True)
    return moved


def limits_of(node: Node, items: Any) -> Node:
    """A run-time matrix's own `max_parallel` and `fail_fast`, on its node."""
    if not matrix.is_matrix(items):
        return node
    limit = items.get("max_parallel", node.for_each.max_parallel if node.for_each else None)
    return dataclasses.replace(
        node, max_parallel=limit, fail_fast=bool(items.get("fail_fast", False))
    )


def instance(
    state: RunState,
    node: Node,
    index: int,
    item: Any,
    taken: set[str],
    render_key: Callable[[Scope], str],
    default: str | None = None,
) -> Node:
    spec = node.for_each
    assert spec is not None
    scope = item_scope(node, item)
    if spec.key is not None:
        key = render_key(scope)
    else:
        key = default if default is not None else default_key(item, index)
    problem = key_problem(key)
    if problem:
        raise TemplateError(f"invalid key {key!r} for item {index}: {problem}")
    inst_id = f"{node.id}.{key}"
    if problem := id_clash(inst_id, key, state.plan.nodes, state.runs, taken):
        raise TemplateError(problem)
    taken.add(inst_id)
    return dataclasses.replace(
        node,
        id=inst_id,
        kind=NodeKind.STEP,
        needs=(),
        group=node.id,
        key=key,
        item=item,
        has_item=True,
        scope=scope,
        for_each=None,
    )


def upstream_kept(state: RunState, preset: Mapping[str, Preset], node: Node) -> bool:
    """Resume: whether every step upstream of `node` kept its output from the earlier run,
    so that a run-time for_each gives the same items as then."""
    stack, seen = list(node.needs), set()
    while stack and preset:
        nid = stack.pop()
        up = state.runs.get(nid)
        if up is None or (up.node.kind is NodeKind.STEP and not (up.reused and nid in preset)):
            return False
        seen.add(nid)
        above = (*up.members, *up.node.members, *up.node.needs)
        stack.extend(n for n in above if n not in seen)
    return bool(preset)


def reuse(nr: NodeRun, preset: Mapping[str, Preset]) -> bool:
    """Resume: keep the output of a run-time for_each instance that succeeded in the earlier
    run (its store row stays as it was); its state is given by the caller when it counts it."""
    found = preset.get(nr.id)
    if found is None or nr.node.is_finally:
        return False
    nr.state = found[0]
    nr.take(found[1], json.dumps(found[1]), found[2])
    nr.reused = True
    return True
