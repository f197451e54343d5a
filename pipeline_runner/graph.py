"""DAG checks and drawings of a plan: cycles with their path, ancestry, levels, and the
text, DOT, Mermaid and JSON views printed by `runner graph`."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .model import EMPTY, Deferred, Loop, Node, NodeKind, Plan, has_deferred

if TYPE_CHECKING:
    from .cache import CacheBackend


def dependents(nodes: Mapping[str, Node]) -> Mapping[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {nid: [] for nid in nodes}
    for node in nodes.values():
        for need in node.needs:
            if need in out:
                out[need].append(node.id)
    return MappingProxyType({k: tuple(v) for k, v in out.items()})


def find_cycles(
    nodes: Mapping[str, Node], deps: Mapping[str, Sequence[str]] | None = None
) -> list[list[str]]:
    """Each dependency cycle once, as `[a, b, c, a]`: b needs a, c needs b, a needs c.
    `deps`: the nodes' `dependents`, when known already."""
    if _needs_come_first(nodes):
        return []  # what each node needs is written before it: no need can lead back to it
    indegree = {nid: 0 for nid in nodes}
    if deps is None:
        deps = dependents(nodes)
    known = nodes.__contains__
    for node in nodes.values():
        indegree[node.id] = sum(map(known, node.needs))
    ready = deque(nid for nid, d in indegree.items() if d == 0)
    while ready:
        nid = ready.popleft()
        for child in deps[nid]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    stuck = {nid for nid, d in indegree.items() if d > 0}
    cycles: list[list[str]] = []
    done: set[str] = set()
    for start in nodes:  # file order, so the first cycle named is the first written
        if start not in stuck or start in done:
            continue
        cycle = _walk_cycle(nodes, stuck, start)
        if cycle and not done.intersection(cycle):
            cycles.append(cycle)
        done.update(cycle or [start])
    return cycles


def _needs_come_first(nodes: Mapping[str, Node]) -> bool:
    """Whether every node comes after the nodes it needs (most plans: a step needs steps
    written before it, a group comes after its members), which rules out a cycle."""
    seen: set[str] = set()
    add = seen.add
    for nid, node in nodes.items():
        for need in node.needs:
            if need not in seen and need in nodes:
                return False
        add(nid)
    return True


def _walk_cycle(nodes: Mapping[str, Node], stuck: set[str], start: str) -> list[str] | None:
    """Follow needs inside the stuck set from `start` until a node repeats."""
    path: list[str] = []
    index: dict[str, int] = {}
    current = start
    while current not in index:
        index[current] = len(path)
        path.append(current)
        nxt = next((n for n in nodes[current].needs if n in stuck), None)
        if nxt is None:
            return None
        current = nxt
    loop = path[index[current] :]
    # Print in run order (`a -> b`: b needs a, as the graph's arrows point), starting at the
    # step written first, so the same cycle always reads the same way.
    loop.reverse()
    loop = _as_written(nodes, loop)
    position = {nid: i for i, nid in enumerate(nodes)}
    first = min(range(len(loop)), key=lambda i: position[loop[i]])
    loop = loop[first:] + loop[:first]
    return [*loop, loop[0]]


def _as_written(nodes: Mapping[str, Node], loop: list[str]) -> list[str]:
    """Drop the hops a group adds (`etl.x -> etl`: a group needs its members), so the cycle
    reads as the needs the user wrote (`etl -> report -> etl`)."""

    def ancestors(nid: str) -> set[str]:
        found: set[str] = set()
        group = nodes[nid].group
        while group is not None and group in nodes and group not in found:
            found.add(group)
            group = nodes[group].group
        return found

    out = list(loop)
    changed = True
    while changed and len(out) > 2:
        changed = False
        for i, nid in enumerate(out):
            if out[(i + 1) % len(out)] in ancestors(nid):
                del out[i]
                changed = True
                break
    return out if len(out) >= 2 else loop


def reaches(nodes: Mapping[str, Node], needs: Iterable[str], target: str) -> bool:
    """Whether `target` is one of `needs` or upstream of them (a walk up that stops early)."""
    seen: set[str] = set()
    stack = list(needs)
    while stack:
        nid = stack.pop()
        if nid == target:
            return True
        if nid in seen or nid not in nodes:
            continue
        seen.add(nid)
        stack.extend(nodes[nid].needs)
    return False


def levels(plan: Plan) -> list[list[Node]]:
    """Steps grouped by the length of their longest path from a root; groups take no level."""
    level: dict[str, int] = {}
    for node in topological(plan.nodes):
        step = 0 if node.kind is NodeKind.GROUP else 1
        level[node.id] = max((level[n] + step for n in node.needs if n in level), default=0)
    rows: dict[int, list[Node]] = {}
    for node in plan.nodes.values():
        if node.kind is not NodeKind.GROUP:
            rows.setdefault(level[node.id], []).append(node)
    return [rows[k] for k in sorted(rows)]


def topological(
    nodes: Mapping[str, Node], deps: Mapping[str, Sequence[str]] | None = None
) -> list[Node]:
    """Kahn's order, ties broken by file order; assumes no cycle.  `deps`: the nodes'
    `dependents`, when known already (a plan's)."""
    known = nodes.__contains__
    indegree = {nid: sum(map(known, node.needs)) for nid, node in nodes.items()}
    if deps is None:
        deps = dependents(nodes)
    ready = deque([nid for nid, count in indegree.items() if not count])
    out: list[Node] = []
    append, take, push = out.append, ready.popleft, ready.append  # once per node of a big plan
    while ready:
        nid = take()
        append(nodes[nid])
        for child in deps[nid]:
            left = indegree[child] - 1
            indegree[child] = left
            if not left:
                push(child)
    return out


# -- drawings ------------------------------------------------------------------------------------


def _label(node: Node) -> str:
    how = "mapped" if node.loop is None else _loop_label(node.loop)
    if node.kind is NodeKind.MAPPED and node.body:
        return f"{node.id} [template: {', '.join(body_steps(node))}] ({how})"
    if node.kind is NodeKind.MAPPED:
        return f"{node.id} [{node.uses}] ({how})"
    if node.kind is NodeKind.GROUP:
        return node.id
    return f"{node.id} [{node.uses}]"


def _loop_label(loop: Loop) -> str:
    """The marker of a looping step: it runs again until `until` holds."""
    until = loop.until.strip()
    if until.startswith("{{") and until.endswith("}}"):
        until = until[2:-2].strip()
    return f"loop until {until}, at most {loop.max_iterations}"


def body_steps(node: Node) -> list[str]:
    """The steps of one instance of a template fanned out at run time, by inner id."""
    prefix = node.id + "."
    return [n.id.removeprefix(prefix) for n in node.body if n.kind is not NodeKind.GROUP]


def to_text(plan: Plan) -> str:
    count = len(plan.steps())
    lines = [f"pipeline {plan.name}: {count} step{'' if count == 1 else 's'}"]
    rows = levels(plan)
    main = [[n for n in row if not n.is_finally] for row in rows]
    for i, row in enumerate(r for r in main if r):
        lines.append(f"level {i}:")
        lines.extend(_text_lines(row))
    last = [n for row in rows for n in row if n.is_finally]
    if last:
        lines.append(f"{FINALLY_LABEL}:")
        lines.extend(_text_lines(last))
    return "\n".join(lines) + "\n"


FINALLY_LABEL = "finally (after every other step)"


def _text_lines(row: list[Node]) -> list[str]:
    lines = []
    for node in row:
        needs = list(node.needs)
        after = f"  <- {', '.join(needs)}" if needs else ""
        lines.append(f"  {_label(node)}{after}")
        if node.compensate is not None:
            lines.append(f"    {_undo_label(node)}")
    return lines


def _undo_label(node: Node) -> str:
    """A step's compensation: run when the run fails after the step succeeded (saga order)."""
    assert node.compensate is not None
    return f"compensate [{node.compensate.uses}] (undoes {node.id} if the run fails)"


def _dot_id(nid: str) -> str:
    return json.dumps(nid)


def to_dot(plan: Plan) -> str:
    out = [
        f"digraph {json.dumps(plan.name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];',
        '  edge [color="#5b6b82"];',
    ]
    children: dict[str | None, list[Node]] = {}
    for node in plan.nodes.values():
        children.setdefault(node.group, []).append(node)

    def emit(group: str | None, indent: str, main: bool | None = None) -> None:
        for node in children.get(group, []):
            if main is not None and node.is_finally == main:
                continue  # the top level: main steps, or those of `finally`
            if node.kind is NodeKind.GROUP:
                out.append(f"{indent}subgraph {_dot_id('cluster_' + node.id)} {{")
                kind = node.group_kind or "group"
                out.append(f"{indent}  label={json.dumps(f'{node.id} ({kind})')};")
                out.append(f'{indent}  style="rounded,dashed"; color="#8a99b0";')
                emit(node.id, indent + "  ")
                out.append(f"{indent}}}")
            elif node.kind is NodeKind.MAPPED and node.loop is not None:
                # a loop: doubled border, and an edge back to itself (it runs again)
                out.append(
                    f"{indent}{_dot_id(node.id)} [label={json.dumps(_label(node))}, "
                    'peripheries=2, fillcolor="#e4f4e4"];'
                )
                out.append(
                    f"{indent}{_dot_id(node.id)} -> {_dot_id(node.id)} "
                    '[label="loop", style=dashed];'
                )
            elif node.kind is NodeKind.MAPPED:
                out.append(
                    f"{indent}{_dot_id(node.id)} [label={json.dumps(_label(node))}, "
                    'shape=box3d, fillcolor="#fdf1d6"];'
                )
            else:
                out.append(f"{indent}{_dot_id(node.id)} [label={json.dumps(_label(node))}];")

    emit(None, "  ", main=True)
    if any(n.is_finally for n in children.get(None, [])):
        out.append(f"  subgraph {_dot_id('cluster_finally')} {{")
        out.append(f"    label={json.dumps(FINALLY_LABEL)};")
        out.append('    style="rounded,dotted"; color="#8a99b0";')
        emit(None, "    ", main=False)
        out.append("  }")
    out.extend(f"  {_dot_id(need)} -> {_dot_id(nid)};" for need, nid in _edges(plan))
    for node in _compensated(plan):
        undo = _dot_id(node.id + " (compensate)")
        out.append(
            f'  {undo} [label={json.dumps(_undo_label(node))}, fillcolor="#fbe3e3", '
            'style="rounded,filled,dashed"];'
        )
        out.append(f'  {_dot_id(node.id)} -> {undo} [style=dashed, color="#b04a4a"];')
    out.append("}")
    return "\n".join(out) + "\n"


def _compensated(plan: Plan) -> list[Node]:
    return [n for n in plan.nodes.values() if n.compensate is not None]


def _sinks(plan: Plan, nid: str) -> list[str]:
    """The drawable nodes standing for `nid` as a need: itself, or the last steps of a group
    (its members that no other member needs), recursively."""
    node = plan.nodes[nid]
    if node.kind is not NodeKind.GROUP:
        return [nid]
    members = set(node.members)
    needed = {n for m in node.members for n in plan.nodes[m].needs if n in members}
    out: list[str] = []
    for member in node.members:
        if member not in needed:
            out.extend(_sinks(plan, member))
    return out


def _edges(plan: Plan) -> Iterable[tuple[str, str]]:
    """The edges drawn: (need, step) between steps, groups replaced by their last steps."""
    for node in plan.nodes.values():
        if node.kind is not NodeKind.GROUP:
            for need in _drawn_needs(plan, node):
                yield need, node.id


def _drawn_needs(plan: Plan, node: Node) -> list[str]:
    # Inner steps of a template inherit the outer needs; draw edges only where they add
    # information: needs on groups are drawn to the group's members.
    out: list[str] = []
    for need in node.needs:
        for sink in _sinks(plan, need):
            if sink not in out:
                out.append(sink)
    return out


def to_mermaid(plan: Plan) -> str:
    ids = {nid: f"n{i}" for i, nid in enumerate(plan.nodes)}
    out = ["flowchart LR"]
    children: dict[str | None, list[Node]] = {}
    for node in plan.nodes.values():
        children.setdefault(node.group, []).append(node)

    def emit(group: str | None, indent: str, main: bool | None = None) -> None:
        for node in children.get(group, []):
            if main is not None and node.is_finally == main:
                continue  # the top level: main steps, or those of `finally`
            if node.kind is NodeKind.GROUP:
                out.append(f'{indent}subgraph {ids[node.id]}["{_mm(node.id)}"]')
                emit(node.id, indent + "  ")
                out.append(f"{indent}end")
            elif node.kind is NodeKind.MAPPED:
                out.append(f'{indent}{ids[node.id]}[["{_mm(_label(node))}"]]')
            else:
                out.append(f'{indent}{ids[node.id]}["{_mm(_label(node))}"]')

    emit(None, "  ", main=True)
    if any(n.is_finally for n in children.get(None, [])):
        out.append(f'  subgraph finally["{_mm(FINALLY_LABEL)}"]')
        emit(None, "    ", main=False)
        out.append("  end")
    out.extend(f"  {ids[need]} --> {ids[nid]}" for need, nid in _edges(plan))
    for i, node in enumerate(_compensated(plan)):
        out.append(f'  u{i}>"{_mm(_undo_label(node))}"]')
        out.append(f"  {ids[node.id]} -. undo .-> u{i}")
    return "\n".join(out) + "\n"


def mermaid_markdown(text: str) -> str:
    """A Mermaid flowchart as a fenced block, as GitHub, GitLab and MkDocs render it."""
    return f"```mermaid\n{text}```\n"


def _mm(text: str) -> str:
    return text.replace('"', "#quot;")


def plain(value: Any) -> Any:
    """A plan value as JSON: Deferred templates shown as their source."""
    kind = type(value)
    if kind in _LEAVES:  # most values: as they are (the checks below cost more than a step)
        return value
    if isinstance(value, Deferred):
        return value.source
    if kind is dict or isinstance(value, Mapping):  # a dict: no look at the Mapping ABC
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


_LEAVES = frozenset({str, int, float, bool, type(None)})


def node_json(node: Node, location: bool = True) -> dict[str, Any]:
    """A node as JSON data; without its `location` it is what `resume` compares."""
    kind = node.kind
    data: dict[str, Any] = {
        "id": node.id,
        "kind": kind._value_,  # not `.value`: a descriptor call for every node of the plan
        "needs": list(node.needs),
        "group": node.group,
    }
    if location:
        data["location"] = str(node.location)
    if kind is NodeKind.GROUP:
        data["members"] = list(node.members)
        data["group_kind"] = node.group_kind
    else:
        data["uses"] = node.uses
        data["with"] = {} if node.with_ is EMPTY else plain(node.with_)  # most: EMPTY
        data["timeout"] = node.timeout
        data["retries"] = node.retries.max
        data["pool"] = node.pool
        data["priority"] = node.priority
        if node.condition is not None:
            data["if"] = node.condition
        if node.trigger != "all_success":
            data["trigger"] = node.trigger
        if node.skip_exit_codes:
            data["skip_exit_codes"] = sorted(node.skip_exit_codes)
    if node.is_finally:
        data["finally"] = True
    if node.compensate is not None:
        data["compensate"] = {"uses": node.compensate.uses, "with": plain(node.compensate.with_)}
    if node.key is not None:
        data["key"] = node.key
    if node.loop is not None:
        data["loop"] = {"until": node.loop.until, "max_iterations": node.loop.max_iterations}
    elif node.for_each is not None:
        data["for_each"] = plain(node.for_each.items)
    if node.body:
        data["template"] = [node_json(n, location) for n in node.body]
    return data


def to_json(plan: Plan) -> str:
    data = {
        "name": plan.name,
        "file": plan.file,
        "params": plain(plan.params),
        "nodes": [node_json(n) for n in plan.nodes.values()],
        "outputs": plain(plan.outputs),
    }
    return json.dumps(data, indent=2, default=str) + "\n"


# -- --dry-run: what a run would do with each step ---------------------------------------------

_RUN_TIME_NAMES = frozenset({"steps", "run", "secrets"})
_UNKNOWN: Any = object()  # a need's output that only the run will know


class DryRun:
    """Why each step would run, be skipped or be answered by the cache, as far as can be told
    before the run: an `if` over `params`, `env` and items is evaluated; a cache key whose
    parts are all known now is looked up (read-only) in `cache`."""

    def __init__(
        self,
        plan: Plan,
        cache: CacheBackend | None,
        use_cache: bool = True,
        forced: frozenset[str] = frozenset(),
    ) -> None:
        self.plan = plan
        self.cache = cache
        self.use_cache = use_cache  # False: --no-cache
        self.forced = forced  # --force: these look nothing up
        self.outputs: dict[str, Any] = {}  # steps whose output is known before the run
        self.skipped: set[str] = set()  # steps known to be skipped

    def reason(self, node: Node) -> str:
        skipped_need = self.skipped_need(node)
        if skipped_need is not None:
            self.skipped.add(node.id)
            self.outputs[node.id] = None
            return f"skip (needs {skipped_need}, which would be skipped)"
        condition = self.condition(node)
        text = _condition_text(node.condition)
        if condition is False:
            self.skipped.add(node.id)
            return f"skip (if: {text})"
        if condition is None:
            return f"run if {text} (evaluated at run time)"
        notes = [] if node.condition in (None, True) else [f"if: {text}"]
        if node.cache is not None and node.kind is NodeKind.STEP:
            cached = self.cache_reason(node)
            if cached.startswith("cached"):
                return cached
            notes.append(cached)
        return f"run ({'; '.join(notes)})" if notes else "run"

    def skipped_need(self, node: Node) -> str | None:
        """A need known to be skipped, which skips `node` by the default trigger rule."""
        if node.is_finally or node.status_if or node.trigger != "all_success":
            return None
        for need in node.needs:
            members = self.plan.nodes[need].members if need in self.plan.nodes else ()
            if need in self.skipped or (members and all(m in self.skipped for m in members)):
                return need
        return None

    def condition(self, node: Node) -> bool | None:
        """The `if` as known now: True without one, None when it needs the run."""
        if node.status_if:
            return None  # success(), failure()...: what the needs did
        if node.condition is None or isinstance(node.condition, bool):
            result = True if node.condition is None else node.condition
            if not result:
                self.outputs[node.id] = None  # a skipped step's output
            return result
        from .errors import TemplateError
        from .templating import compile_value, evaluate_condition

        text = node.condition.strip()
        compiled = compile_value(text if text.startswith("{{") else "{{ " + text + " }}")
        scope_vars = node.scope.vars
        if compiled.names & _RUN_TIME_NAMES or any(
            has_deferred(scope_vars[n]) for n in compiled.names if n in scope_vars
        ):
            return None
        context = {
            "params": self.plan.params,
            "env": self.plan.env,
            "pipeline": {"name": self.plan.name, "file": self.plan.file},
            **scope_vars,
        }
        try:
            result = evaluate_condition(node.condition, context)
        except TemplateError:
            return None
        if not result:
            self.outputs[node.id] = None
        return result

    def cache_reason(self, node: Node) -> str:
        """`cached (...)` on a hit, else why not (the output then becomes known)."""
        from .cache import MissingInput, cache_key, outputs_match, render_globs

        assert node.cache is not None
        if not self.use_cache:
            return "--no-cache"
        if node.id in self.forced or node.group in self.forced:
            return "--force: the cache is not looked up (its result is stored)"
        needs = {n: self.outputs.get(n, _UNKNOWN) for n in node.needs}
        if any(v is _UNKNOWN for v in needs.values()):
            return "cache: a need runs first"
        if has_deferred(node.with_) or has_deferred([*node.cache.inputs, *node.cache.outputs]):
            return "cache: its key needs values known at run time"
        base = self.plan.folder_of(node)  # the folder the step runs in
        try:
            globs = render_globs(node.cache, lambda v: v)
            key = cache_key(node.uses or "", node.with_, needs, globs, base)
        except (MissingInput, OSError, ValueError) as exc:
            return f"cache: {exc}"
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is None:
            return "cache: no stored result with this key"
        if not outputs_match(hit[1], globs, base):
            return "cache: its declared outputs changed since"
        self.outputs[node.id] = hit[0]
        return "cached (a stored result has the same key)"


def _condition_text(condition: str | bool | None) -> str:
    """An `if` as written, without braces: `false`, `params.env == 'prod'`."""
    if isinstance(condition, bool) or condition is None:
        return "true" if condition else "false"
    text = condition.strip()
    if text.startswith("{{") and text.endswith("}}"):
        text = text[2:-2].strip()
    return text
