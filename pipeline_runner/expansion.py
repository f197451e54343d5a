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


def instances(
    state: RunState, node: Node, items: Any, render_key: Callable[[Scope], str]
) -> list[Node]:
    """One step per item of `items` (the rendered list), with ids `<node id>.<key>`."""
    if not isinstance(items, list):
        raise TemplateError(f"for_each must give a list, got {type(items).__name__}")
    taken: set[str] = set()  # ids of this list's instances, so none is dropped
    return [instance(state, node, i, item, taken, render_key) for i, item in enumerate(items)]


def instance(
    state: RunState,
    node: Node,
    index: int,
    item: Any,
    taken: set[str],
    render_key: Callable[[Scope], str],
) -> Node:
    spec = node.for_each
    assert spec is not None
    scope = item_scope(node, item)
    key = render_key(scope) if spec.key is not None else default_key(item, index)
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
