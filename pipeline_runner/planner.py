"""From a loaded, schema-valid document to a `Plan`.

What happens here, in order:
1. parameters are merged (defaults < --params-file < RUNNER_PARAM_<NAME> < --param; `params`);
2. every step list is expanded: templates instantiated per tenant/item with qualified ids
   (`etl.acme.extract`), static `for_each` expanded, nested `pipeline` steps inlined as groups
   (`instances`), `defaults` applied and plugin steps built (`stepnodes`), `needs` resolved to
   qualified ids;
3. every value that can be rendered before the run is rendered in the sandbox; the rest stays as
   `Deferred` with the scope it needs (`rendering`); names are checked, so a typo is found now
   (`namecheck`);
4. the graph is checked (cycles, references to `steps.X` that are not upstream).

Each step is expanded at a `Site` (`site`): the frozen context of where it stands.
Problems are collected as Diagnostics and raised together as one PipelineError, so `validate`
reports every problem, not only the first.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from . import graph
from .errors import Diagnostic, PipelineError, did_you_mean
from .fanout import FanOuts
from .foreach import default_key, key_problem, qualified, taken_by
from .instances import JOB_KEYS, Instances
from .loader import DEFAULT_MAX_FILE_SIZE, Document, Path_, SourceMap, load_file
from .loopplan import LoopPlans
from .model import Deferred, Node, NodeKind, Plan, Scope
from .namecheck import BASE_NAMES, RUN_NAMES, STEP_NAMES, NameChecker, step_hint
from .params import merge_params, parse_param_value
from .plugins import Registry, registry
from .rendering import INVALID, Rules, ValueRenderer
from .runkeys import RunKeys
from .schema import validate_document
from .site import FileContext, Problems, Site, StepList
from .stepnodes import StepBuilder, parse_duration

__all__ = [
    "Options",
    "Planner",
    "default_key",
    "in_file_order",
    "key_problem",
    "parse_param_value",
    "plan_file",
    "relative_to_cwd",
]


@dataclass
class Options:
    """What planning takes besides the file: the parameters, the environment, the size limit."""

    params: Mapping[str, Any] = field(default_factory=dict)  # --param, already parsed
    param_texts: Mapping[str, str] = field(default_factory=dict)  # --param, as written
    params_file: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    max_file_size: int = DEFAULT_MAX_FILE_SIZE


class InstanceNeed(NamedTuple):
    """A need on one instance of a sibling fan-out, as written (`build.linux`) and qualified."""

    file: FileContext
    at: Path_
    name: str
    qid: str
    owner: str  # the qualified id of the fan-out


class Planner:
    def __init__(self, options: Options | None = None, plugins: Registry | None = None) -> None:
        self.options = options or Options()
        self.problems = Problems()
        self.nodes: dict[str, Node] = {}
        self.pools: dict[str, int] = {}
        self.breakers: dict[str, tuple[int, float]] = {}
        self.file_stack: list[str] = []
        # needs on one instance (`build.linux`), checked once every node is planned
        self.instance_needs: list[InstanceNeed] = []
        # the bodies of templates fanned out at run time, by id (checked with the plan)
        self.bodies: dict[str, Node] = {}
        self.names = NameChecker(self.problems)
        self.values = ValueRenderer(self.problems, self.names)
        plugins = plugins or registry()
        self.steps = StepBuilder(self.problems, self.values, plugins, self.nodes, self.pools)
        self.instances = Instances(self)
        self.fanouts = FanOuts(self)
        self.loops = LoopPlans(self)

    # -- entry -------------------------------------------------------------------------------

    def plan_file(self, path: str) -> Plan:
        doc = load_file(path, self.options.max_file_size)
        return self.plan_document(doc)

    def plan_document(self, doc: Document) -> Plan:
        self.problems.extend(doc.problems)
        schema_problems = validate_document(doc.data, doc.source)
        if schema_problems:
            raise PipelineError(in_file_order(self.problems.found + schema_problems))
        data: dict[str, Any] = doc.data
        f = self.open_file(doc, self.merged_params(data, doc.source))
        self.file_stack.append(os.path.abspath(doc.source.file))
        self.steps.root_dir = os.path.dirname(self.file_stack[0])
        self.read_pools(f)
        self.expand(StepList(f, data["steps"], ("steps",), Scope()))
        top_aliases = {s["id"]: s["id"] for s in data["steps"] if isinstance(s, dict)}
        top_scope = Scope(aliases=MappingProxyType(top_aliases))
        if data.get("finally"):
            self.names.in_finally = True
            self.expand(StepList(f, data["finally"], ("finally",), top_scope, finally_=True))
            self.names.in_finally = False
        outputs = self.values.render(
            f, data.get("outputs") or {}, ("outputs",), top_scope, Rules(RUN_NAMES)
        )
        timeout = self.steps.duration(f, data.get("timeout"), ("timeout",), positive=True)
        run_keys = RunKeys(self.problems, self.values, f)
        schedule = run_keys.schedule(data.get("schedule"), f.context["params"])
        concurrency = run_keys.concurrency(data.get("concurrency"))
        if self.check_instance_needs():  # the graph below would meet ids that do not exist
            raise PipelineError(in_file_order(self.problems.found))
        deps = self.check_graph()
        if self.problems.found:
            raise PipelineError(in_file_order(self.problems.found))
        nodes = MappingProxyType(self.nodes)
        return Plan(
            name=data["name"],
            file=doc.source.file,
            pipeline_dir=os.path.dirname(os.path.abspath(doc.source.file)),
            params=MappingProxyType(f.context["params"]),
            env=MappingProxyType(f.context["env"]),
            secrets=tuple(data.get("secrets") or ()),
            pools=MappingProxyType(self.pools),
            breakers=MappingProxyType(self.breakers),
            nodes=nodes,
            outputs=outputs,
            description=str(data.get("description") or ""),
            aliases=MappingProxyType(top_aliases),
            dependents=deps if deps is not None else graph.dependents(nodes),
            timeout=timeout,
            schedule=schedule,
            concurrency=concurrency,
        )

    def open_file(self, doc: Document, params: dict[str, Any]) -> FileContext:
        data = doc.data
        context: dict[str, Any] = {
            "params": params,
            "env": {},
            "pipeline": {"name": data.get("name"), "file": doc.source.file},
        }
        f = FileContext(
            doc.source.file,
            data,
            doc.source,
            data.get("defaults") or {},
            data.get("templates") or {},
            context,
        )
        for name, value in (data.get("env") or {}).items():
            rendered = self.values.render(f, value, ("env", name), Scope(), Rules(RUN_NAMES))
            if rendered is not INVALID:
                f.env[name] = rendered
        self.steps.check_env(f, f.env, lambda name: ("env", name))
        # Plan-time templates see the values known now; Deferred ones (`{{ run.id }}`,
        # `{{ secrets.X }}`) are rendered for each step at run time.
        context["env"] = {k: v for k, v in f.env.items() if not isinstance(v, Deferred)}
        return f

    def merged_params(self, data: dict[str, Any], source: SourceMap) -> dict[str, Any]:
        o = self.options
        params_file = (o.params_file, o.max_file_size) if o.params_file else None
        declared: dict[str, Any] = dict(data.get("params") or {})
        return merge_params(
            declared, o.params, o.environ, params_file, self.problems.found, o.param_texts, source
        )

    def read_pools(self, f: FileContext) -> None:
        for name, spec in (f.data.get("pools") or {}).items():
            if name in self.pools:
                continue
            if isinstance(spec, dict):
                self.pools[name] = int(spec["size"])
                breaker = spec.get("breaker")
                if breaker:
                    cooldown = parse_duration(breaker.get("cooldown", "30s"))
                    self.breakers[name] = (int(breaker["failures"]), cooldown)
            else:
                self.pools[name] = int(spec)

    # -- expansion ---------------------------------------------------------------------------

    def expand(self, block: StepList) -> list[str]:
        """Expand one list of sibling steps; returns the qualified ids it created."""
        f, steps, base, prefix = block.file, block.steps, block.path, block.prefix
        aliases = dict(block.scope.aliases) if block.finally_ else {}
        first: dict[str, int] = {}  # id -> index of the step that used it first
        for i, step in enumerate(steps):
            sid = step["id"]
            if "\n" in sid:
                # The schema's pattern lets a final line break through (`$` matches before it);
                # an id names log files and is printed on lines of its own.
                self.problems.error(f, (*base, i, "id"), "a step id cannot contain a line break")
                continue
            if sid in first:
                line = f.source.locate((*base, first[sid], "id")).line
                self.problems.error(
                    f, (*base, i, "id"), f"duplicate step id '{sid}' (first used on line {line})"
                )
                continue
            first[sid] = i
            # The id's text as the enclosing scope already holds it (a template instance's
            # aliases): one string per id in a big plan, not one per place it is named.
            name: str = prefix + sid
            known = block.scope.aliases.get(sid)
            aliases[sid] = known if known is not None and known == name else name
        sibling_scope = Scope(block.scope.vars, MappingProxyType(aliases), block.scope.parent)
        created: list[str] = []
        seen: set[str] = set()
        for i, step in enumerate(steps):
            path = (*base, i)
            qid: str = prefix + step["id"]
            known = aliases.get(step["id"])
            if known is not None and known == qid:
                qid = known  # the alias's string: one copy per id
            if qid in seen or "\n" in qid:
                continue  # a duplicate or broken id, reported above
            seen.add(qid)
            if qid in self.nodes:
                # A `finally` step named like a main step: the same id would mean two steps;
                # or, inside a group, a key with '.' spelled this step's qualified id.
                other = self.nodes[qid]
                message = (
                    taken_by(qid, other, f.path)
                    if prefix
                    else f"duplicate step id '{step['id']}' (first used by {other.path} on line "
                    f"{other.location.line})"
                )
                self.problems.error(f, (*path, "id"), message)
                continue
            # Outer needs go to the roots of the list only; the rest reach them through those.
            own = self.resolve_needs(f, step, path, aliases)
            needs = own if step.get("needs") else block.needs + own
            created.append(qid)
            site = Site(f, step, path, sibling_scope, qid, needs, block.group, block.finally_)
            self.expand_step(site)
        return created

    def resolve_needs(
        self,
        f: FileContext,
        step: dict[str, Any],
        path: tuple[Any, ...],
        aliases: Mapping[str, str],
    ) -> tuple[str, ...]:
        raw = step.get("needs") or []
        names = [raw] if isinstance(raw, str) else list(raw)
        out: list[str] = []
        for j, name in enumerate(names):
            at = (*path, "needs") if isinstance(raw, str) else (*path, "needs", j)
            qid = qualified(aliases, name)
            head = name.partition(".")[0]
            if name == step["id"] or (qid is not None and head == step["id"]):
                self.problems.error(f, at, f"step '{name}' needs itself")
            elif name in aliases:
                out.append(aliases[name])
            elif qid is not None:
                # One instance of a fan-out (GitLab's needs:parallel:matrix, Argo's depends on
                # one item): `build.linux` is instance `linux` of sibling `build`.
                self.instance_needs.append(InstanceNeed(f, at, name, qid, aliases[head]))
                out.append(qid)
            else:
                self.problems.error(f, at, f"unknown step '{name}'{step_hint(name, aliases)}")
        return tuple(out)

    def check_instance_needs(self) -> bool:
        """Each need on one instance names an instance that exists; True if one does not."""
        bad = False
        for need in self.instance_needs:
            if need.qid in self.nodes or need.qid in self.bodies:
                continue
            bad = True
            owner = self.nodes.get(need.owner)
            head = need.name.split(".", 1)[0]
            if owner is not None and owner.kind is NodeKind.MAPPED:
                message = (
                    f"'{head}' is expanded at run time: its instances are not known before the "
                    f"run, so no step can need one of them; need '{head}'"
                )
            else:
                prefix = need.owner + "."
                keys = [qid[len(prefix) :] for qid in self.nodes if qid.startswith(prefix)]
                close = did_you_mean(need.name.partition(".")[2], keys)  # by key alone
                hint = close.replace(" '", f" '{head}.", 1) if close else ""
                if keys and not hint:
                    hint = f" ('{head}' has {', '.join(f'{head}.{k}' for k in keys[:10])})"
                message = f"unknown instance '{need.name}'{hint}"
            self.problems.error(need.file, need.at, message)
        return bad

    def expand_step(self, site: Site) -> None:
        step = site.step
        if step.get("as") in BASE_NAMES:
            name = step["as"]
            message = f"`as: {name}` would hide `{name}` inside the step; choose another name"
            self.problems.error(site.file, site.at("as"), message)
            return
        if ("uses" in step) == ("template" in step):
            which = (
                "both 'uses' and 'template'" if "uses" in step else "neither 'uses' nor 'template'"
            )
            message = f"a step needs exactly one of 'uses' or 'template'; found {which}"
            self.problems.error(site.file, site.path, message)
            return
        if ("template" in step or step.get("uses") == "pipeline") and not self.check_instance_keys(
            site
        ):
            return
        if "success" in step and "for_each" not in step:
            message = "`success` is a policy of a fan-out: this step has no `for_each`"
            self.problems.error(site.file, site.at("success"), message, key=True)
            return
        if "loop" in step:
            self.loops.expand(site)
        elif "for_each" in step:
            self.fanouts.expand(site)
        else:
            self.build(site)

    def check_instance_keys(self, site: Site) -> bool:
        """Keys of a step that a template instance (or an inlined pipeline) does not apply yet
        are errors, never silently ignored."""
        ok = True
        what, where = (
            ("instantiates a template", "the template's steps")
            if "template" in site.step
            else ("inlines a pipeline (`uses: pipeline`)", "the inlined file's steps")
        )
        for name in _NOT_ON_INSTANCES:
            if name in JOB_KEYS and "template" in site.step:
                continue  # applied to the instance's steps (instances.JobKeys)
            if name in site.step and not (name == "max_parallel" and "for_each" in site.step):
                self.problems.error(
                    site.file,
                    site.at(name),
                    f"`{name}` is not supported on a step that {what} yet; set it on {where}",
                    key=True,
                )
                ok = False
        return ok

    def build(self, site: Site) -> None:
        if "template" in site.step:
            self.instances.instantiate(site)
        elif site.step.get("uses") == "pipeline":
            self.instances.inline_pipeline(site)
        else:
            node = self.steps.step_node(site, STEP_NAMES)
            if node is not None:
                self.add_node(site, node)

    def add_node(self, site: Site, node: Node) -> None:
        """Add a node to the plan.  Its qualified id must be new: a key may contain `.`, so an
        instance's id can spell another step's (tenant `acme.extract`, tenant acme's `extract`),
        and one of the two would silently replace the other."""
        other = self.nodes.get(node.id)
        if other is not None:
            at = site.path
            if site.key is not None:
                at = site.at("key" if "key" in site.step else "for_each")
            self.problems.error(site.file, at, taken_by(node.id, other, site.file.path))
            return
        self.nodes[node.id] = node

    # -- graph ---------------------------------------------------------------------------------

    def check_graph(self) -> Mapping[str, tuple[str, ...]] | None:
        """Cycles, and steps read without being upstream, as problems; returns the plan's
        `dependents` when they were worked out on the way (no template is planned as a body)."""
        nodes = {**self.bodies, **self.nodes}
        deps = graph.dependents(nodes)
        for cycle in graph.find_cycles(nodes, deps):
            first = nodes[cycle[0]]
            message = f"dependency cycle: {' -> '.join(cycle)} (each needs the one before it)"
            self.problems.found.append(Diagnostic(first.location, first.path, message))
        if any(d.message.startswith("dependency cycle") for d in self.problems.found):
            return None
        for check in self.names.ref_checks:
            if check.target == check.self_id or graph.reaches(
                nodes, check.node_needs, check.target
            ):
                continue
            target = nodes.get(check.target)
            if check.in_finally and target is not None and not target.is_finally:
                continue  # `finally` steps start once every main step has finished
            message = (
                f"steps.{check.name} is read here, but '{check.name}' is not upstream of this "
                f"step; add it to `needs` (needs: [{check.name}])"
            )
            self.problems.add_once(Diagnostic(check.location, check.path, message))
        return None if self.bodies else deps


def in_file_order(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Each file's problems by line and column; files in the order their first problem came."""
    rank: dict[str, int] = {}
    for d in diagnostics:
        rank.setdefault(d.location.file, len(rank))
    return sorted(
        diagnostics, key=lambda d: (rank[d.location.file], d.location.line, d.location.column)
    )


# Step keys an inlined pipeline (and, but for the JOB_KEYS, a template instance) does not apply
# (yet): rejected there.
_NOT_ON_INSTANCES = (
    "if",
    "trigger",
    "skip_exit_codes",
    "timeout",
    "retries",
    "continue_on_error",
    "max_parallel",
    "priority",
    "pool",
    "env",
    "cache",
    "compensate",
    "resources",
)


def plan_file(path: str, options: Options | None = None) -> Plan:
    """Load, validate and plan one pipeline file; raises PipelineError with every problem.

    The cycle collector is paused meanwhile: planning builds many small objects that all live
    on (the plan) or die by reference count (the document), and the collector's passes over
    them cost about a twentieth of the planning time of a big file."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return Planner(options).plan_file(path)
    finally:
        if paused:
            gc.enable()


def relative_to_cwd(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path
