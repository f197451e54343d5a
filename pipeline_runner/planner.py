"""From a loaded, schema-valid document to a `Plan`.

What happens here, in order:
1. parameters are merged (defaults < --params-file < RUNNER_PARAM_<NAME> < --param);
2. every step list is expanded: templates instantiated per tenant/item with qualified ids
   (`etl.acme.extract`), static `for_each` expanded, nested `pipeline` steps inlined as groups,
   `defaults` applied, `needs` resolved to qualified ids;
3. every value that can be rendered before the run is rendered in the sandbox; the rest stays as
   `Deferred` with the scope it needs; names are checked, so a typo is found now;
4. the graph is checked (cycles, references to `steps.X` that are not upstream).

Problems are collected as Diagnostics and raised together as one PipelineError, so `validate`
reports every problem, not only the first.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import graph
from .errors import Diagnostic, Location, PipelineError, TemplateError, did_you_mean
from .foreach import default_key, key_problem
from .loader import DEFAULT_MAX_FILE_SIZE, Document, Path_, SourceMap, format_path, load_file
from .loader import load_text as load_yaml_text
from .model import (
    EMPTY,
    CacheSpec,
    Compensation,
    Deferred,
    ForEach,
    Node,
    NodeKind,
    Plan,
    RetryPolicy,
    Scope,
    has_deferred,
)
from .plugins import PluginLoadError, Registry, registry
from .schema import check as check_schema
from .schema import describe, validate_document
from .templating_text import is_template

if TYPE_CHECKING:  # jinja2 is imported only when a file has templates
    from .templating import Compiled

RUN_NAMES = frozenset({"steps", "run", "secrets"})
BASE_NAMES = frozenset({"params", "env", "pipeline"}) | RUN_NAMES
MAX_TEMPLATE_DEPTH = 16
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# The longest duration a step may ask for: 24 days, under the 2**31 milliseconds that the
# operating system's waits (poll, timers) take, so a long timeout or delay never overflows them.
MAX_DURATION = 24 * 24 * 3600.0


def parse_duration(value: Any) -> float:
    """Seconds, from a number or a text like `1h30m`; between 0 and MAX_DURATION."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        parts = _DURATION_RE.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
            raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 30s, 5m, 2h, 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"invalid duration {value!r}: over the limit of 24 days (576h)")
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: a duration cannot be negative")
    return seconds


def parse_param_value(text: str) -> Any:
    """`--param n=3` gives 3, `--param tenants=[a,b]` a list: the value is a YAML scalar/flow."""
    try:
        return load_yaml_text(text, "--param").data
    except PipelineError:
        return text


@dataclass
class Options:
    params: Mapping[str, Any] = field(default_factory=dict)  # --param, already parsed
    params_file: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    max_file_size: int = DEFAULT_MAX_FILE_SIZE


@dataclass
class _File:
    """One pipeline file being expanded (the main one or a nested `pipeline`)."""

    path: str
    data: dict[str, Any]
    source: SourceMap
    defaults: Mapping[str, Any]
    templates: Mapping[str, Any]
    context: dict[str, Any]  # params, env, pipeline: the plan-time names of this file
    env: dict[str, Any] = field(default_factory=dict)  # top-level env, Deferred values included


@dataclass
class _RefCheck:
    node_needs: tuple[str, ...]
    self_id: str | None
    target: str
    name: str
    location: Location
    path: str
    in_finally: bool = False


class Planner:
    def __init__(self, options: Options | None = None, plugins: Registry | None = None) -> None:
        self.options = options or Options()
        self.plugins = plugins or registry()
        self.diagnostics: list[Diagnostic] = []
        self._seen_messages: set[tuple[Location, str]] = set()
        # `with` values a plugin's schema accepted: many steps share theirs (a template's steps
        # across tenants, generated steps), and a valid one needs checking once.
        self._valid_with: set[tuple[str, str]] = set()
        self.nodes: dict[str, Node] = {}
        self.ref_checks: list[_RefCheck] = []
        self.pools: dict[str, int] = {}
        self.breakers: dict[str, tuple[int, float]] = {}
        self.file_stack: list[str] = []
        self.template_stack: list[str] = []
        self._validated: set[tuple[str, str]] = set()
        self.in_finally = False  # expanding `finally`: every main step is upstream of it

    # -- diagnostics -------------------------------------------------------------------------

    def error(self, f: _File, path: Path_, message: str, *, key: bool = False) -> None:
        loc = f.source.locate(path, key=key)
        if (loc, message) in self._seen_messages:
            return  # the same mistake in a template, seen once per instance
        self._seen_messages.add((loc, message))
        self.diagnostics.append(Diagnostic(loc, format_path(path), message))

    # -- entry -------------------------------------------------------------------------------

    def plan_file(self, path: str) -> Plan:
        doc = load_file(path, self.options.max_file_size)
        return self.plan_document(doc)

    def plan_document(self, doc: Document) -> Plan:
        self.diagnostics.extend(doc.problems)
        schema_problems = validate_document(doc.data, doc.source)
        if schema_problems:
            raise PipelineError(in_file_order(self.diagnostics + schema_problems))
        data: dict[str, Any] = doc.data
        f = self.open_file(doc, self.merged_params(data, doc.source))
        self.file_stack.append(os.path.abspath(doc.source.file))
        self.read_pools(f)
        top = self.expand(f, data["steps"], ("steps",), Scope(), "", (), None)
        top_aliases = {s["id"]: s["id"] for s in data["steps"] if isinstance(s, dict)}
        final_ids: list[str] = []
        if data.get("finally"):
            self.in_finally = True
            final_ids = self.expand(
                f,
                data["finally"],
                ("finally",),
                Scope(aliases=MappingProxyType(top_aliases)),
                "",
                (),
                None,
                finally_=True,
            )
            self.in_finally = False
        del top, final_ids
        outputs = self.process(
            f,
            data.get("outputs") or {},
            ("outputs",),
            Scope(aliases=MappingProxyType(top_aliases)),
            runtime=RUN_NAMES,
            refs_for=None,
        )
        self.check_graph(f)
        if self.diagnostics:
            raise PipelineError(in_file_order(self.diagnostics))
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
            dependents=graph.dependents(nodes),
        )

    def open_file(self, doc: Document, params: dict[str, Any]) -> _File:
        data = doc.data
        context: dict[str, Any] = {
            "params": params,
            "env": {},
            "pipeline": {"name": data.get("name"), "file": doc.source.file},
        }
        f = _File(
            doc.source.file,
            data,
            doc.source,
            data.get("defaults") or {},
            data.get("templates") or {},
            context,
        )
        for name, value in (data.get("env") or {}).items():
            rendered = self.process(f, value, ("env", name), Scope(), runtime=RUN_NAMES)
            if rendered is not _INVALID:
                f.env[name] = rendered
        # Plan-time templates see the values known now; Deferred ones (`{{ run.id }}`,
        # `{{ secrets.X }}`) are rendered for each step at run time.
        context["env"] = {k: v for k, v in f.env.items() if not isinstance(v, Deferred)}
        return f

    # -- parameters --------------------------------------------------------------------------

    def merged_params(self, data: dict[str, Any], source: SourceMap) -> dict[str, Any]:
        declared: dict[str, Any] = dict(data.get("params") or {})
        params = dict(declared)
        if self.options.params_file:
            params.update(self.read_params_file(self.options.params_file, declared))
        by_upper = {name.upper(): name for name in declared}
        for var, text in self.options.environ.items():
            if var.startswith("RUNNER_PARAM_"):
                name = by_upper.get(var[len("RUNNER_PARAM_") :].upper())
                if name is not None:
                    params[name] = parse_param_value(text)
        for name, value in self.options.params.items():
            if name not in declared:
                self.diagnostics.append(
                    Diagnostic(
                        Location("--param"),
                        name,
                        f"unknown parameter '{name}'{did_you_mean(name, declared)}"
                        f" (the file declares: {', '.join(sorted(declared)) or 'none'})",
                    )
                )
                continue
            params[name] = value
        return params

    def read_params_file(self, path: str, declared: Mapping[str, Any]) -> dict[str, Any]:
        doc = load_file(path, self.options.max_file_size)
        if not isinstance(doc.data, dict):
            raise PipelineError.single(
                doc.source.locate(()), "", "a params file must hold a mapping of name to value"
            )
        for name in doc.data:
            if name not in declared:
                self.diagnostics.append(
                    Diagnostic(
                        doc.source.locate((name,), key=True),
                        str(name),
                        f"unknown parameter '{name}'{did_you_mean(str(name), declared)}",
                    )
                )
        return {k: v for k, v in doc.data.items() if k in declared}

    # -- pools -------------------------------------------------------------------------------

    def read_pools(self, f: _File) -> None:
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

    def expand(
        self,
        f: _File,
        steps: list[dict[str, Any]],
        base: Path_,
        scope: Scope,
        prefix: str,
        outer_needs: tuple[str, ...],
        group: str | None,
        *,
        finally_: bool = False,
    ) -> list[str]:
        """Expand one list of sibling steps; returns the qualified ids it created."""
        aliases = dict(scope.aliases) if finally_ else {}
        first_line: dict[str, int] = {}
        for i, step in enumerate(steps):
            sid = step["id"]
            if sid in first_line:
                self.error(
                    f,
                    (*base, i, "id"),
                    f"duplicate step id '{sid}' (first used on line {first_line[sid]})",
                )
                continue
            first_line[sid] = f.source.locate((*base, i, "id")).line
            aliases[sid] = prefix + sid
        sibling_scope = Scope(scope.vars, MappingProxyType(aliases), scope.parent)
        created: list[str] = []
        seen: set[str] = set()
        for i, step in enumerate(steps):
            path = (*base, i)
            qid = prefix + step["id"]
            if qid in seen:
                continue  # a duplicate id, reported above
            seen.add(qid)
            if qid in self.nodes:
                # A `finally` step named like a main step: the same id would mean two steps.
                other = self.nodes[qid]
                self.error(
                    f,
                    (*path, "id"),
                    f"duplicate step id '{step['id']}' (first used by {other.path} on line "
                    f"{other.location.line})",
                )
                continue
            # Outer needs go to the roots of the list only; the rest reach them through those.
            own = self.resolve_needs(f, step, path, aliases)
            needs = own if step.get("needs") else outer_needs + own
            created.append(qid)
            self.expand_step(f, step, path, sibling_scope, qid, needs, group, finally_)
        return created

    def resolve_needs(
        self, f: _File, step: dict[str, Any], path: Path_, aliases: Mapping[str, str]
    ) -> tuple[str, ...]:
        raw = step.get("needs") or []
        names = [raw] if isinstance(raw, str) else list(raw)
        out: list[str] = []
        for j, name in enumerate(names):
            at = (*path, "needs") if isinstance(raw, str) else (*path, "needs", j)
            if name == step["id"]:
                self.error(f, at, f"step '{name}' needs itself")
            elif name not in aliases:
                self.error(f, at, f"unknown step '{name}'{_step_hint(name, aliases)}")
            else:
                out.append(aliases[name])
        return tuple(out)

    def expand_step(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        qid: str,
        needs: tuple[str, ...],
        group: str | None,
        finally_: bool,
    ) -> None:
        if step.get("as") in BASE_NAMES:
            name = step["as"]
            message = f"`as: {name}` would hide `{name}` inside the step; choose another name"
            self.error(f, (*path, "as"), message)
            return
        if ("uses" in step) == ("template" in step):
            which = (
                "both 'uses' and 'template'" if "uses" in step else "neither 'uses' nor 'template'"
            )
            self.error(f, path, f"a step needs exactly one of 'uses' or 'template'; found {which}")
            return
        if ("template" in step or step.get("uses") == "pipeline") and not self.check_instance_keys(
            f, step, path
        ):
            return
        if "for_each" in step:
            self.expand_for_each(f, step, path, scope, qid, needs, group, finally_)
        else:
            self.build(f, step, path, scope, qid, needs, group, finally_, None, None, False)

    def check_instance_keys(self, f: _File, step: dict[str, Any], path: Path_) -> bool:
        """Keys of a step that a template instance (or an inlined pipeline) does not apply yet
        are errors, never silently ignored."""
        ok = True
        what, where = (
            ("instantiates a template", "the template's steps")
            if "template" in step
            else ("inlines a pipeline (`uses: pipeline`)", "the inlined file's steps")
        )
        for name in _NOT_ON_INSTANCES:
            if name in step:
                self.error(
                    f,
                    (*path, name),
                    f"`{name}` is not supported on a step that {what} yet; set it on {where}",
                    key=True,
                )
                ok = False
        return ok

    def build(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        qid: str,
        needs: tuple[str, ...],
        group: str | None,
        finally_: bool,
        key: str | None,
        item: Any,
        has_item: bool,
    ) -> None:
        if "template" in step:
            self.instantiate(f, step, path, scope, qid, needs, group, finally_, key, item, has_item)
        elif step.get("uses") == "pipeline":
            self.inline_pipeline(f, step, path, scope, qid, needs, group, finally_, key, item)
        else:
            self.add_step(f, step, path, scope, qid, needs, group, finally_, key, item, has_item)

    # -- for_each ----------------------------------------------------------------------------

    def expand_for_each(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        qid: str,
        needs: tuple[str, ...],
        group: str | None,
        finally_: bool,
    ) -> None:
        as_name = step.get("as", "item")
        spec = step["for_each"]
        at = (*path, "for_each")
        if isinstance(spec, str):
            value = self.process(f, spec, at, scope, runtime=RUN_NAMES, refs_for=needs)
            if isinstance(value, Deferred):
                self.add_mapped(f, step, path, scope, qid, needs, group, finally_, value)
                return
            if value is _INVALID:
                return
            items = value
        else:
            items = spec
        if not isinstance(items, list):
            self.error(f, at, f"for_each must give a list, got {describe(items)}")
            return
        members: list[str] = []
        for index, item in enumerate(items):
            key = self.instance_key(f, step, path, scope, as_name, item, index)
            if key is None:
                continue
            inst = f"{qid}.{key}"
            if inst in members:
                where = (*at, index) if isinstance(step["for_each"], list) else at
                message = f"two items have the key '{key}'; set `key:` to tell them apart"
                self.error(f, where, message)
                continue
            members.append(inst)
            inner = Scope(
                MappingProxyType({**scope.vars, as_name: item}), scope.aliases, scope.parent
            )
            self.build(f, step, path, inner, inst, needs, qid, finally_, key, item, True)
        self.nodes[qid] = Node(
            id=qid,
            kind=NodeKind.GROUP,
            order=len(self.nodes),
            location=f.source.locate(path),
            path=format_path(path),
            needs=tuple(members),
            group=group,
            members=tuple(members),
            group_kind="for_each",
            max_parallel=step.get("max_parallel"),
            is_finally=finally_,
        )

    def instance_key(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        as_name: str,
        item: Any,
        index: int,
    ) -> str | None:
        if "key" in step:
            inner = Scope(MappingProxyType({**scope.vars, as_name: item}), scope.aliases)
            key = self.process(f, step["key"], (*path, "key"), inner, runtime=frozenset())
            if key is _INVALID:
                return None
            key = str(key)
        else:
            key = default_key(item, index)
        problem = key_problem(key)
        if problem:
            # A literal list: point at the item itself; otherwise at the expression.
            at = (*path, "for_each")
            if isinstance(step["for_each"], list) and "key" not in step:
                at = (*at, index)
            elif "key" in step:
                at = (*path, "key")
            self.error(f, at, f"invalid key {key!r} for item {describe(item)}: {problem}")
            return None
        return key

    def add_mapped(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        qid: str,
        needs: tuple[str, ...],
        group: str | None,
        finally_: bool,
        items: Deferred,
    ) -> None:
        if "template" in step or step.get("uses") == "pipeline":
            self.error(
                f,
                (*path, "for_each"),
                "a for_each that reads steps.* is expanded at run time, which works for "
                "plugin steps only; give a template a list known before the run",
            )
            return
        as_name = step.get("as", "item")
        runtime = RUN_NAMES | {as_name}
        node = self.step_node(f, step, path, scope, qid, needs, group, finally_, runtime=runtime)
        if node is None:
            return
        if "key" in step:
            self.process(f, step["key"], (*path, "key"), scope, runtime=runtime)
        for_each = ForEach(items, as_name, step.get("key"), step.get("max_parallel"))
        self.nodes[qid] = _replace(node, kind=NodeKind.MAPPED, for_each=for_each)

    # -- templates and nested pipelines --------------------------------------------------------

    def instantiate(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        qid: str,
        needs: tuple[str, ...],
        group: str | None,
        finally_: bool,
        key: str | None,
        item: Any,
        has_item: bool,
    ) -> None:
        name = step["template"]
        if name not in f.templates:
            hint = did_you_mean(name, f.templates)
            self.error(f, (*path, "template"), f"unknown template '{name}'{hint}")
            return
        if self.template_stack.count(name) or len(self.template_stack) >= MAX_TEMPLATE_DEPTH:
            chain = " -> ".join([*self.template_stack, name])
            self.error(f, (*path, "template"), f"template instantiates itself: {chain}")
            return
        tpl = f.templates[name]
        declared: dict[str, Any] = tpl.get("params") or {}
        given: dict[str, Any] = step.get("with") or {}
        values: dict[str, Any] = {}
        for pname in given:
            if pname not in declared:
                hint = did_you_mean(pname, declared)
                self.error(
                    f,
                    (*path, "with", pname),
                    f"template '{name}' has no parameter '{pname}'{hint}",
                    key=True,
                )
        refs_for = needs
        for pname, pdef in declared.items():
            if pname in given:
                values[pname] = self.process(
                    f,
                    given[pname],
                    (*path, "with", pname),
                    scope,
                    runtime=RUN_NAMES,
                    refs_for=refs_for,
                )
            elif isinstance(pdef, dict) and "default" in pdef:
                at = ("templates", name, "params", pname, "default")
                values[pname] = self.process(f, pdef["default"], at, scope, runtime=RUN_NAMES)
            else:
                self.error(
                    f,
                    (*path, "with") if "with" in step else path,
                    f"missing required parameter '{pname}' of template '{name}'",
                )
                values[pname] = None
        inner_aliases = {s["id"]: f"{qid}.{s['id']}" for s in tpl["steps"]}
        inner_scope = Scope(MappingProxyType(values), MappingProxyType(inner_aliases), scope)
        self.template_stack.append(name)
        try:
            members = self.expand(
                f,
                tpl["steps"],
                ("templates", name, "steps"),
                inner_scope,
                qid + ".",
                needs,
                qid,
                finally_=False,
            )
        finally:
            self.template_stack.pop()
        if finally_:
            for member in members:
                if member in self.nodes:
                    self.nodes[member] = _replace(self.nodes[member], is_finally=True)
        outputs = None
        if "outputs" in tpl:
            outputs = self.process(
                f, tpl["outputs"], ("templates", name, "outputs"), inner_scope, runtime=RUN_NAMES
            )
        self.add_group(
            f,
            path,
            qid,
            members,
            group,
            "template",
            outputs,
            finally_,
            key,
            item,
            has_item,
            inner_scope,
        )

    def add_group(
        self,
        f: _File,
        path: Path_,
        qid: str,
        members: list[str],
        group: str | None,
        kind: str,
        outputs: Any,
        finally_: bool,
        key: str | None,
        item: Any,
        has_item: bool = False,
        scope: Scope | None = None,
    ) -> None:
        self.nodes[qid] = Node(
            id=qid,
            kind=NodeKind.GROUP,
            order=len(self.nodes),
            location=f.source.locate(path),
            path=format_path(path),
            needs=tuple(members),
            group=group,
            members=tuple(members),
            group_kind=kind,
            outputs=outputs,
            key=key,
            item=item,
            has_item=has_item,
            scope=scope or Scope(),
            is_finally=finally_,
        )

    def inline_pipeline(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        qid: str,
        needs: tuple[str, ...],
        group: str | None,
        finally_: bool,
        key: str | None,
        item: Any,
    ) -> None:
        with_: dict[str, Any] = step.get("with") or {}
        at = (*path, "with")
        problems = check_schema(with_, self.plugin_schema("pipeline") or {}, f.source, at)
        if problems:
            self.diagnostics.extend(problems)
            return
        rel = self.process(f, with_["file"], (*at, "file"), scope, runtime=frozenset())
        if rel is _INVALID:
            return
        target = os.path.normpath(os.path.join(os.path.dirname(f.path), str(rel)))
        if os.path.abspath(target) in self.file_stack:
            chain = " -> ".join(relative_to_cwd(p) for p in [*self.file_stack, target])
            self.error(f, (*at, "file"), f"pipeline includes itself: {chain}")
            return
        if not os.path.isfile(target):
            # Said where the file is named: the user fixes the reference, not the file.
            self.error(f, (*at, "file"), f"no pipeline file {rel!r} (looked for {target})")
            return
        try:
            doc = load_file(target, self.options.max_file_size)
        except PipelineError as exc:
            self.diagnostics.extend(exc.diagnostics)
            return
        self.diagnostics.extend(doc.problems)
        problems = validate_document(doc.data, doc.source)
        if problems:
            self.diagnostics.extend(problems)
            return
        declared = doc.data.get("params") or {}
        given = self.process(
            f, with_.get("params") or {}, (*at, "params"), scope, runtime=RUN_NAMES
        )
        for pname in given:
            if pname not in declared:
                self.error(
                    f,
                    (*at, "params", pname),
                    f"{rel} has no parameter '{pname}'{did_you_mean(pname, declared)}",
                    key=True,
                )
        nested = self.open_file(doc, {**declared, **given})
        self.read_pools(nested)
        aliases = {s["id"]: f"{qid}.{s['id']}" for s in doc.data["steps"]}
        names = {
            "params": nested.context["params"],
            "env": nested.context["env"],
            "pipeline": nested.context["pipeline"],
        }
        inner_scope = Scope(MappingProxyType(names), MappingProxyType(aliases), scope)
        self.file_stack.append(os.path.abspath(target))
        try:
            members = self.expand(
                nested, doc.data["steps"], ("steps",), inner_scope, qid + ".", needs, qid
            )
        finally:
            self.file_stack.pop()
        outputs = self.process(
            nested, doc.data.get("outputs") or {}, ("outputs",), inner_scope, runtime=RUN_NAMES
        )
        self.add_group(
            f,
            path,
            qid,
            members,
            group,
            "pipeline",
            outputs,
            finally_,
            key,
            item,
            False,
            inner_scope,
        )

    # -- plugin steps --------------------------------------------------------------------------

    def plugin_schema(self, name: str) -> Mapping[str, Any] | None:
        try:
            return self.plugins.load(name).schema
        except (PluginLoadError, KeyError):
            return None

    def check_plugin(self, f: _File, name: str, at: Path_) -> Any:
        if name not in self.plugins:
            hint = did_you_mean(name, self.plugins.names())
            self.error(f, at, f"unknown plugin '{name}'{hint}")
            return None
        try:
            return self.plugins.load(name)
        except PluginLoadError as exc:
            self.error(f, at, str(exc))
            return None

    def add_step(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        qid: str,
        needs: tuple[str, ...],
        group: str | None,
        finally_: bool,
        key: str | None,
        item: Any,
        has_item: bool,
    ) -> None:
        node = self.step_node(
            f,
            step,
            path,
            scope,
            qid,
            needs,
            group,
            finally_,
            runtime=RUN_NAMES,
            key=key,
            item=item,
            has_item=has_item,
        )
        if node is not None:
            self.nodes[qid] = node

    def step_node(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        qid: str,
        needs: tuple[str, ...],
        group: str | None,
        finally_: bool,
        *,
        runtime: frozenset[str],
        key: str | None = None,
        item: Any = None,
        has_item: bool = False,
    ) -> Node | None:
        settings = {**f.defaults, **step}
        uses = step["uses"]
        plugin = self.check_plugin(f, uses, (*path, "uses"))
        shell_fields = frozenset(getattr(plugin, "shell_fields", ()) or ())
        with_ = self.process(
            f,
            step.get("with") or {},
            (*path, "with"),
            scope,
            runtime=runtime,
            refs_for=needs,
            self_id=None,
            shell_fields=shell_fields,
        )
        if plugin is not None and with_ is not _INVALID:
            self.check_with(f, uses, plugin.schema, with_, (*path, "with"))
        condition = step.get("if")
        if isinstance(condition, str):
            text = condition.strip()
            expr = text if text.startswith("{{") else "{{ " + text + " }}"
            checked = self.process(
                f, Deferred(expr), (*path, "if"), scope, runtime=runtime | {"*"}, refs_for=needs
            )
            if checked is _INVALID:
                condition = None
        own_env = {**(f.defaults.get("env") or {}), **(step.get("env") or {})}
        env_values = self.process(
            f, own_env, (*path, "env"), scope, runtime=runtime, refs_for=needs
        )
        if isinstance(env_values, dict):
            env_values = {**f.env, **env_values}
        compensate = None
        if "compensate" in step:
            comp = step["compensate"]
            if self.check_plugin(f, comp["uses"], (*path, "compensate", "uses")) is not None:
                comp_with = self.process(
                    f,
                    comp.get("with") or {},
                    (*path, "compensate", "with"),
                    scope,
                    runtime=runtime,
                    refs_for=needs,
                    self_id=qid,
                )
                compensate = Compensation(comp["uses"], comp_with)
        pool = settings.get("pool")
        if pool is not None and pool not in self.pools:
            hint = did_you_mean(pool, self.pools) or f" (pools: {', '.join(self.pools) or 'none'})"
            self.error(f, (*path, "pool"), f"unknown pool '{pool}'{hint}")
        return Node(
            id=qid,
            kind=NodeKind.STEP,
            order=len(self.nodes),
            location=f.source.locate(path),
            path=format_path(path),
            uses=uses,
            with_=with_ if with_ is not _INVALID else EMPTY,
            needs=needs,
            condition=condition,
            retries=self.retry_policy(f, settings.get("retries"), path),
            timeout=self.duration(f, settings.get("timeout"), (*path, "timeout"), positive=True),
            continue_on_error=bool(settings.get("continue_on_error", False)),
            pool=pool,
            priority=int(step.get("priority", 0)),
            env=MappingProxyType(env_values) if isinstance(env_values, dict) else EMPTY,
            scope=scope,
            group=group,
            compensate=compensate,
            cache=self.cache_spec(f, step, path, scope, needs, runtime, finally_),
            resources=MappingProxyType(dict(step["resources"])) if step.get("resources") else EMPTY,
            is_finally=finally_,
            key=key,
            item=item,
            has_item=has_item,
        )

    def check_with(
        self, f: _File, uses: str, schema: Mapping[str, Any], with_: Any, at: Path_
    ) -> None:
        probe = _strip_deferred(with_)
        try:
            seen: tuple[str, str] | None = (uses, json.dumps(probe, sort_keys=True))
        except (TypeError, ValueError, RecursionError):
            seen = None
        if seen in self._valid_with:
            return
        problems = check_schema(probe, schema, f.source, at, prefix=f"{uses}: ")
        if not problems and seen is not None:
            self._valid_with.add(seen)
        for p in problems:
            if (
                _DEFERRED_MARK not in p.message
                and (p.location, p.message) not in self._seen_messages
            ):
                self._seen_messages.add((p.location, p.message))
                self.diagnostics.append(p)

    def retry_policy(self, f: _File, spec: Any, path: Path_) -> RetryPolicy:
        if spec is None:
            return _NO_RETRIES
        if isinstance(spec, int):
            return RetryPolicy(max=spec)
        at = (*path, "retries")
        on = frozenset(spec.get("on") or ())
        return RetryPolicy(
            max=int(spec.get("max", 1 if spec else 0)),
            delay=self.duration(f, spec.get("delay", 1.0), (*at, "delay")) or 0.0,
            backoff=float(spec.get("backoff", 2.0)),
            max_delay=self.duration(f, spec.get("max_delay", 300.0), (*at, "max_delay")) or 0.0,
            jitter=bool(spec.get("jitter", True)),
            on=on,
        )

    def duration(self, f: _File, value: Any, at: Path_, *, positive: bool = False) -> float | None:
        """`positive`: zero is an error too (a timeout of 0 would fail every attempt at once)."""
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(f, at, str(exc))
            return None
        if positive and seconds == 0:
            self.error(f, at, f"invalid duration {value!r}: must be more than 0")
            return None
        return seconds

    def cache_spec(
        self,
        f: _File,
        step: dict[str, Any],
        path: Path_,
        scope: Scope,
        needs: tuple[str, ...],
        runtime: frozenset[str],
        finally_: bool,
    ) -> CacheSpec | None:
        """Globs rendered as `with` is.  An input glob that matches nothing is an error now when
        no step runs before this one to create it: no needs, no `if`, not a `finally` step."""
        spec = step.get("cache")
        if not spec:
            return None
        if spec is True:
            return CacheSpec()
        at = (*path, "cache")
        inputs = self.cache_globs(f, spec.get("inputs"), (*at, "inputs"), scope, needs, runtime)
        outputs = self.cache_globs(f, spec.get("outputs"), (*at, "outputs"), scope, needs, runtime)
        if not needs and "if" not in step and not finally_:
            self.check_inputs(f, inputs, (*at, "inputs"))
        return CacheSpec(inputs, outputs)

    def cache_globs(
        self,
        f: _File,
        globs: Any,
        at: Path_,
        scope: Scope,
        needs: tuple[str, ...],
        runtime: frozenset[str],
    ) -> tuple[str | Deferred, ...]:
        from .cache import as_glob

        values = self.process(f, list(globs or ()), at, scope, runtime=runtime, refs_for=needs)
        out: list[str | Deferred] = []
        for i, value in enumerate(values if isinstance(values, list) else ()):
            glob_ = value if isinstance(value, Deferred) else as_glob(value)
            if glob_ is None:
                self.error(f, (*at, i), f"a glob must be text, got {describe(value)}")
            else:
                out.append(glob_)
        return tuple(out)

    def check_inputs(self, f: _File, inputs: tuple[str | Deferred, ...], at: Path_) -> None:
        from .cache import matches, no_match_message

        base = os.path.dirname(self.file_stack[0])
        for i, pattern in enumerate(inputs):
            if isinstance(pattern, str) and not matches(pattern, base):
                self.error(f, (*at, i), no_match_message(pattern))

    # -- values --------------------------------------------------------------------------------

    def process(
        self,
        f: _File,
        value: Any,
        path: Path_,
        scope: Scope,
        *,
        runtime: frozenset[str],
        refs_for: tuple[str, ...] | None = None,
        self_id: str | None = None,
        shell_fields: frozenset[str] = frozenset(),
        depth: int = 0,
        argv: bool = False,
    ) -> Any:
        """Render what can be rendered now; keep the rest as Deferred; check names.

        `argv`: the value is (inside) the argv list of a shell field, which shows on the
        command line, so no secret may go there.
        Returns `_INVALID` (and records a diagnostic) when the value is broken.
        """
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                shell = depth == 0 and k in shell_fields and isinstance(v, str)
                rendered = self.process(
                    f,
                    v,
                    (*path, k),
                    scope,
                    runtime=runtime,
                    refs_for=refs_for,
                    self_id=self_id,
                    depth=depth + 1,
                    shell_fields=frozenset({k}) if shell else frozenset(),
                    argv=argv or (depth == 0 and k in shell_fields and not isinstance(v, str)),
                )
                out[k] = rendered
            return _INVALID if any(v is _INVALID for v in out.values()) else out
        if isinstance(value, list):
            items = [
                self.process(
                    f,
                    v,
                    (*path, i),
                    scope,
                    runtime=runtime,
                    refs_for=refs_for,
                    self_id=self_id,
                    depth=depth + 1,
                    argv=argv,
                )
                for i, v in enumerate(value)
            ]
            return _INVALID if any(v is _INVALID for v in items) else items
        deferred = isinstance(value, Deferred)
        source = value.source if isinstance(value, Deferred) else value
        if not isinstance(source, str) or not is_template(source):
            return value
        shell = bool(shell_fields) or (isinstance(value, Deferred) and value.shell)
        try:
            from .templating import compile_value

            compiled = compile_value(source, shell)
        except TemplateError as exc:
            self.error(f, path, str(exc))
            return _INVALID
        if not self.check_names(f, compiled, path, scope, runtime):
            return _INVALID
        if not self.check_param_refs(f, compiled, path, scope):
            return _INVALID
        if not self.check_secret_refs(f, compiled, path, scope):
            return _INVALID
        if argv and compiled.secret_refs and "secrets" not in scope.vars:
            name = sorted(compiled.secret_refs)[0]
            self.error(
                f,
                path,
                f"secrets.{name} cannot go into an argv list (it would show on the command "
                f"line); read ${name} from the environment instead, or use a cmd string",
            )
            return _INVALID
        self.note_refs(f, compiled, path, scope, refs_for, self_id)
        if deferred or "*" in runtime or self.needs_runtime(compiled, scope, runtime):
            return Deferred(source, shell)
        try:
            return compiled.render(self.context(f, scope))
        except TemplateError as exc:
            self.error(f, path, str(exc))
            return _INVALID

    def check_names(
        self, f: _File, compiled: Compiled, path: Path_, scope: Scope, runtime: frozenset[str]
    ) -> bool:
        known = BASE_NAMES | set(scope.vars) | runtime
        unknown = compiled.names - known
        ok = True
        for ref, parts in _hyphenated_refs(compiled.source, unknown):
            hint = "" if ref in scope.aliases else _step_hint(ref, scope.aliases)
            self.error(
                f,
                path,
                f"steps.{ref} reads as steps.{' - '.join(ref.split('-'))} (a subtraction); "
                f"write steps['{ref}']{hint}",
            )
            unknown -= parts
            ok = False
        for name in sorted(unknown):
            self.error(f, path, f"undefined name '{name}'{did_you_mean(name, known - {'*'})}")
            ok = False
        return ok

    def check_param_refs(self, f: _File, compiled: Compiled, path: Path_, scope: Scope) -> bool:
        """`params.X` must name a declared parameter, in values rendered now or at run time."""
        if "params" not in compiled.names or "params" in scope.vars:
            return True
        declared = f.context["params"]
        ok = True
        for name in sorted(compiled.param_refs - set(declared)):
            hint = did_you_mean(name, declared) or (
                f" (declared: {', '.join(sorted(declared)[:10]) or 'none'})"
            )
            self.error(f, path, f"unknown parameter '{name}' in params.{name}{hint}")
            ok = False
        return ok

    def check_secret_refs(self, f: _File, compiled: Compiled, path: Path_, scope: Scope) -> bool:
        """`secrets.X` must name a secret the file declares (it is read before the run)."""
        if "secrets" not in compiled.names or "secrets" in scope.vars:
            return True
        declared = [str(s) for s in f.data.get("secrets") or ()]
        ok = True
        for name in sorted(compiled.secret_refs - set(declared)):
            hint = did_you_mean(name, declared) or f"; declare it: `secrets: [{name}]`"
            self.error(f, path, f"unknown secret '{name}' in secrets.{name}{hint}")
            ok = False
        return ok

    @staticmethod
    def needs_runtime(compiled: Compiled, scope: Scope, runtime: frozenset[str]) -> bool:
        if compiled.names & runtime:
            return True
        return any(has_deferred(scope.vars[n]) for n in compiled.names if n in scope.vars)

    def note_refs(
        self,
        f: _File,
        compiled: Compiled,
        path: Path_,
        scope: Scope,
        refs_for: tuple[str, ...] | None,
        self_id: str | None,
    ) -> None:
        """Check that each `steps.X` names a step here, and note it for the upstream check
        (`refs_for`: the reader's needs; None where every step is upstream, as in `outputs`)."""
        if "steps" not in compiled.names or "steps" in scope.vars or not scope.aliases:
            return
        for name in sorted(compiled.step_refs):
            target = scope.aliases.get(name)
            if target is None:
                hint = _step_hint(name, scope.aliases)
                self.error(f, path, f"unknown step '{name}' in steps.{name}{hint}")
                continue
            if refs_for is None:
                continue
            where = f.source.locate(path)
            self.ref_checks.append(
                _RefCheck(
                    refs_for, self_id, target, name, where, format_path(path), self.in_finally
                )
            )

    def context(self, f: _File, scope: Scope) -> dict[str, Any]:
        ctx = dict(f.context)
        ctx.update(scope.vars)
        return ctx

    # -- graph ---------------------------------------------------------------------------------

    def check_graph(self, f: _File) -> None:
        for cycle in graph.find_cycles(self.nodes):
            first = self.nodes[cycle[0]]
            message = f"dependency cycle: {' -> '.join(cycle)} (each needs the one before it)"
            self.diagnostics.append(Diagnostic(first.location, first.path, message))
        if any(d.message.startswith("dependency cycle") for d in self.diagnostics):
            return
        for check in self.ref_checks:
            if check.target == check.self_id or graph.reaches(
                self.nodes, check.node_needs, check.target
            ):
                continue
            target = self.nodes.get(check.target)
            if check.in_finally and target is not None and not target.is_finally:
                continue  # `finally` steps start once every main step has finished
            message = (
                f"steps.{check.name} is read here, but '{check.name}' is not upstream of this "
                f"step; add it to `needs` (needs: [{check.name}])"
            )
            if (check.location, message) not in self._seen_messages:
                self._seen_messages.add((check.location, message))
                self.diagnostics.append(Diagnostic(check.location, check.path, message))


class _Invalid:
    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Any = _Invalid()
_DEFERRED_MARK = "<deferred value 7f3a>"


def in_file_order(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Each file's problems by line and column; files in the order their first problem came."""
    rank: dict[str, int] = {}
    for d in diagnostics:
        rank.setdefault(d.location.file, len(rank))
    return sorted(
        diagnostics, key=lambda d: (rank[d.location.file], d.location.line, d.location.column)
    )


_HYPHENATED = re.compile(r"\bsteps\.([A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+)")


def _hyphenated_refs(source: str, unknown: Iterable[str]) -> list[tuple[str, set[str]]]:
    """`steps.odd-or-even` whose later parts are undefined names: each id, with those names."""
    names = set(unknown)
    found: list[tuple[str, set[str]]] = []
    for ref in dict.fromkeys(_HYPHENATED.findall(source)):
        parts = set(ref.split("-")[1:]) & names
        if parts:
            found.append((ref, parts))
    return found


def _step_hint(name: str, known: Mapping[str, str]) -> str:
    """A did-you-mean, or else the names that can be used here."""
    return did_you_mean(name, known) or f" (steps here: {', '.join(list(known)[:10]) or 'none'})"


# Step keys a template instance does not apply (yet): rejected on `template:` steps.
_NOT_ON_INSTANCES = (
    "if",
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

_NO_RETRIES = RetryPolicy()  # frozen: one for every step without `retries`


def _strip_deferred(value: Any) -> Any:
    """A copy for schema checks: a Deferred leaf becomes a marker whose errors are ignored."""
    if isinstance(value, Deferred):
        return _DEFERRED_MARK
    if isinstance(value, dict):
        return {k: _strip_deferred(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_deferred(v) for v in value]
    return value


def _replace(node: Node, **changes: Any) -> Node:
    import dataclasses

    return dataclasses.replace(node, **changes)


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
