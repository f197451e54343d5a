"""The run state at the start of a run: the nodes `--only` selects, their counts of needs, the
longest chain behind each, and on resume the steps kept from the earlier run."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections.abc import Callable, Iterable
from typing import Any

from . import expansion, graph, limits, success_policy
from .errors import TemplateError
from .model import Deferred, Node, NodeKind, Plan, Scope, State
from .runstate import NodeRun, Options, RunState, group_output, judged, kept_run

Render = Callable[[NodeRun, Any], Any]  # a template value rendered for a node


def selected(plan: Plan, only: tuple[str, ...] | list[str] | Any) -> set[str]:
    """`--only`: the matching nodes plus everything they need (and groups' members)."""
    nodes = plan.nodes
    if not only:
        return set(nodes)
    chosen = {n for n in nodes if any(fnmatch.fnmatchcase(n, p) for p in only)}
    stack = list(chosen)
    while stack:
        nid = stack.pop()
        for need in nodes[nid].needs:
            if need not in chosen:
                chosen.add(need)
                stack.append(need)
    return chosen


def critical_path(state: RunState) -> None:
    """For each node, the number of steps on the longest chain from it to the end.

    Any order that puts each node after everything that needs it gives the same numbers:
    the file's order reversed is one for most plans (a step needs steps written before it),
    and only a plan where some step needs one written after it is sorted first."""
    plan = state.plan
    if not _depths(reversed(list(plan.nodes.values())), state):
        state.depth.clear()
        _depths(reversed(graph.topological(plan.nodes, plan.dependents)), state)


def _depths(order: Iterable[Node], state: RunState) -> bool:
    """Each node's depth, in `order`; False as soon as a node comes before one that needs it."""
    depth, dependents = state.depth, state.dependents
    known = depth.get
    for node in order:
        below = 0
        for dependent in dependents.get(node.id, ()):  # a loop, not max(): one call less a node
            found = known(dependent)
            if found is None:
                return False
            if found > below:
                below = found
        depth[node.id] = below if node.kind is NodeKind.GROUP else below + 1
    return True


def build(state: RunState, options: Options, log_path: Callable[[str], str]) -> None:
    """Add the selected nodes; on resume, those that succeeded before keep their state and
    output (all are marked first and counted after, so none is made ready by another's
    completion)."""
    chosen = selected(state.plan, options.only)
    critical_path(state)
    state.limited = not limits.unlimited(state.plan)
    for nid, node in state.plan.nodes.items():
        if nid not in chosen:
            continue
        nr = NodeRun(node, log_path=log_path(nid))
        nr.waiting = sum(map(chosen.__contains__, node.needs))
        nr.attempt = nr.base = options.attempts_done.get(nid, 0)
        if node.is_finally:
            nr.waiting += 1  # released when every other node is done
        state.add(nr)
    if len(chosen) < len(state.plan.nodes):  # `--only`: what it leaves out is no dependent
        for nid in list(state.dependents):
            state.dependents[nid] = [d for d in state.dependents[nid] if d in state.runs]
    reused = []
    runs = state.runs
    for nid, (kept_state, output, outputs_json) in options.preset.items():
        found = runs.get(nid)
        # `finally` steps run again, with the run's new status.
        if found is not None and found.node.kind is NodeKind.STEP and not found.node.is_finally:
            if output is not None or outputs_json is not None:  # most kept steps: neither
                found.take(output, "null" if output is None else json.dumps(output), outputs_json)
            found.reused = True
            found.state = kept_state
            reused.append(found)
    dependents = state.dependents
    for nr in reused:
        state.finish(nr, nr.state, quiet=True, ranked=False)
        for dep in dependents.get(nr.node.id, ()):
            runs[dep].waiting -= 1


def failed_outside(state: RunState, options: Options) -> bool:
    """Resume with `--only`: whether a step left out of this slice had not succeeded when
    the run last ended.  A run's status is over all its steps, not only those run now (a
    group's recorded state is derived from its steps, and stale once they ran again)."""
    nodes, runs, rows = state.plan.nodes, state.runs, options.recorded_rows
    states = {nid: str(row["state"]) for nid, row in rows.items()}
    return any(
        nid in nodes
        and nid not in runs
        and nodes[nid].kind is not NodeKind.GROUP
        and not State(row["state"]).ok
        and not success_policy.forgiven_recorded(nodes, states, nid)
        for nid, row in rows.items()
    )


def keep_recorded(state: RunState, options: Options, render: Render) -> None:
    """Resume with `--only`: the steps left out of the slice, as the run recorded them, so
    that the result lists every step of the run and its `outputs` can read them."""
    for sid, row in options.recorded_rows.items():
        if sid in state.runs or sid.endswith(":compensate"):
            continue
        node = recorded_node(state, sid)
        if node is not None:
            state.kept[sid] = kept_run(node, row)
    for owner in state.plan.nodes.values():
        if owner.body and owner.id not in state.runs:
            relocate(state, owner, render)
    kept_groups(state, render)


def relocate(state: RunState, owner: Node, render: Render) -> None:
    """The kept instances of a template fanned out at run time get the nodes the fan-out
    gives again (the items, from the kept steps it read), so that their templates see their
    item; when it cannot be made again they stay as recorded."""
    assert owner.for_each is not None
    source = owner.for_each.key

    def render_key(scope: Scope) -> str:
        return str(render(NodeRun(dataclasses.replace(owner, scope=scope)), Deferred(source or "")))

    try:
        items = render(NodeRun(owner), owner.for_each.items)
        nodes = expansion.template_instances(state, owner, items, render_key)
    except (TemplateError, KeyError):
        return
    for node in nodes:
        kept = state.kept.get(node.id)
        if kept is not None:
            kept.node = node


def kept_groups(state: RunState, render: Render) -> None:
    """The kept groups' states and outputs, made again from their members (some of which
    may have run again in the slice), as a group completes: the store records no output
    for a group, and its recorded state is stale once its members ran again."""
    for node in graph.topological({k: nr.node for k, nr in state.kept.items()}):
        if node.kind is not NodeKind.STEP:
            kept_group(state, state.kept[node.id], render)


def recorded_node(state: RunState, sid: str) -> Node | None:
    """The node of a recorded step: in the plan, or an instance of a run-time for_each
    that is not expanded again in this run."""
    node = state.plan.nodes.get(sid)
    if node is not None:
        return node
    for cut in (i for i in range(len(sid) - 1, 0, -1) if sid[i] == "."):
        owner = state.plan.nodes.get(sid[:cut])
        if owner is not None and owner.kind is NodeKind.MAPPED:
            if owner.id in state.runs:
                return None
            key = sid[cut + 1 :]
            if owner.body:
                return expansion.recorded_body_node(owner, sid)
            return dataclasses.replace(
                owner, id=sid, kind=NodeKind.STEP, needs=(), group=owner.id, key=key
            )
    return None


def kept_group(state: RunState, nr: NodeRun, render: Render) -> None:
    """A kept group's state and output, from its members (as a group completes)."""
    node = nr.node
    ids = node.members or [k for k, m in state.kept.items() if m.node.group == node.id]
    everything = {**state.kept, **state.runs}
    members = [everything[m] for m in ids if m in everything]
    nr.state = judged(node, members)[0]
    nr.output, nr.outputs = None, None
    if not nr.state.ok:
        return
    try:
        nr.output, nr.outputs = group_output(nr, members, lambda v: render(nr, v))
    except TemplateError:
        nr.output = None
