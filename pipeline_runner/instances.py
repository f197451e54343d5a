"""Steps that stand for a group of steps: a template instance and an inlined pipeline.

Each expands its steps (through the planner, with ids qualified by the instance's id) and adds
one group node whose members they are, with the group's `outputs`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .environment import name_problem
from .errors import PipelineError, did_you_mean
from .loader import format_path, load_file
from .model import Deferred, Node, NodeKind, Scope
from .namecheck import RUN_NAMES
from .rendering import INVALID, Rules
from .schema import check as check_schema
from .schema import validate_document
from .site import StepList

if TYPE_CHECKING:
    from .planner import Planner
    from .site import Site

MAX_TEMPLATE_DEPTH = 16

# Keys of a step that instantiates a template which apply to every step of the instance, as a
# GitHub job's `if`, `timeout-minutes`, `continue-on-error` and `env` apply to its steps.
JOB_KEYS = frozenset({"if", "timeout", "retries", "continue_on_error", "priority", "pool", "env"})
_DEFAULTED = ("timeout", "retries", "continue_on_error", "priority", "pool")
# The instance's scope variables that carry the job-level `if` and `env` to its steps; each is
# rendered in the instantiating step's scope (at run time when it reads steps, run or secrets).
JOB_IF, JOB_ENV = "_job_if", "_job_env"


class JobKeys:
    """The job-level keys of one instantiating step, applied to the template's steps: `if` is
    and-ed with each step's own, `env` goes under each step's own, and `timeout`, `retries`,
    `continue_on_error`, `priority` and `pool` are each step's unless it sets its own."""

    def __init__(self, planner: Planner, site: Site) -> None:
        self.p = planner
        self.site = site

    def apply(self, steps: list[dict[str, Any]], values: dict[str, Any]) -> list[dict[str, Any]]:
        """The template's steps with the job keys applied; `values` (the instance's scope
        variables) gets what they read."""
        step = self.site.step
        defaults = self.defaults()
        env_refs: dict[str, str] = {}
        if "if" in step:
            values[JOB_IF] = self.condition()
        if "env" in step:
            values[JOB_ENV] = self.env()
            env_refs = {  # a name the system refuses is an error at the job already
                name: f"{{{{ {JOB_ENV}[{json.dumps(name)}] }}}}"
                for name in step["env"]
                if name_problem(name) is None
            }
        out = []
        for own in steps:
            new = {**defaults, **own}
            if "if" in step:
                new["if"] = _and_job_if(own.get("if"))
            if env_refs:
                new["env"] = {**env_refs, **(own.get("env") or {})}
            out.append(new)
        return out

    def defaults(self) -> dict[str, Any]:
        """The job's timeout, retries, continue_on_error, priority and pool, rendered in its
        scope and checked here (so a problem is located at the instantiating step)."""
        p, site = self.p, self.site
        given = {k: site.step[k] for k in _DEFAULTED if k in site.step}
        settings = p.steps.controls(site, given, RUN_NAMES)
        if "timeout" in settings:
            at = site.at("timeout")
            if p.steps.duration(site.file, settings["timeout"], at, positive=True) is None:
                del settings["timeout"]
        if settings.get("retries") is not None:
            p.steps.retry_policy(site.file, settings["retries"], site.path)
        pool = settings.get("pool")
        if pool is not None and pool not in p.steps.pools:
            pools = ", ".join(p.steps.pools) or "none"
            hint = did_you_mean(pool, p.steps.pools) or f" (pools: {pools})"
            p.problems.error(site.file, site.at("pool"), f"unknown pool '{pool}'{hint}")
            del settings["pool"]
        return {k: v for k, v in settings.items() if v is not None}

    def condition(self) -> Any:
        """The job's `if` as a value of the instance's scope: a truth value now, or a Deferred
        rendered in the instantiating step's scope when the steps are ready."""
        p, site = self.p, self.site
        condition = site.step["if"]
        if not isinstance(condition, str):
            return bool(condition)
        text = condition.strip()
        expr = text if text.startswith("{{") else "{{ " + text + " }}"
        rules = Rules(RUN_NAMES, site.needs)
        value = p.values.render(site.file, expr, site.at("if"), site.scope, rules)
        return True if value is INVALID else value

    def env(self) -> Any:
        p, site = self.p, self.site
        rules = Rules(RUN_NAMES, site.needs)
        values = p.values.render(site.file, site.step["env"], site.at("env"), site.scope, rules)
        if not isinstance(values, dict):
            return {name: "" for name in site.step["env"]}
        plain = {k: v for k, v in values.items() if not isinstance(v, Deferred)}
        p.steps.check_env(site.file, plain, lambda name: site.at("env", name))
        return values


def _and_job_if(own: Any) -> Any:
    """A step's `if` under its job's: both must hold."""
    if own is None or own is True:
        return JOB_IF
    if own is False:
        return False
    text = str(own).strip()
    if text.startswith("{{") and text.endswith("}}"):
        text = text[2:-2]
    return f"{JOB_IF} and ({text})"


class Instances:
    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.template_stack: list[str] = []

    def instantiate(self, site: Site) -> None:
        p, f, step, qid = self.planner, site.file, site.step, site.qid
        name = step["template"]
        if name not in f.templates:
            hint = did_you_mean(name, f.templates)
            p.problems.error(f, site.at("template"), f"unknown template '{name}'{hint}")
            return
        if self.template_stack.count(name) or len(self.template_stack) >= MAX_TEMPLATE_DEPTH:
            chain = " -> ".join([*self.template_stack, name])
            p.problems.error(f, site.at("template"), f"template instantiates itself: {chain}")
            return
        tpl = f.templates[name]
        values = self.template_params(site, name, tpl.get("params") or {})
        inner_aliases = {s["id"]: f"{qid}.{s['id']}" for s in tpl["steps"]}
        body = tpl["steps"]
        if not JOB_KEYS.isdisjoint(step):
            body = JobKeys(p, site).apply(body, values)
        inner_scope = Scope(MappingProxyType(values), MappingProxyType(inner_aliases), site.scope)
        self.template_stack.append(name)
        try:
            steps = StepList(f, body, ("templates", name, "steps"), inner_scope, site.needs, qid)
            members = p.expand(steps)
        finally:
            self.template_stack.pop()
        if site.finally_:
            for member in members:
                if member in p.nodes:
                    p.nodes[member] = dataclasses.replace(p.nodes[member], is_finally=True)
        outputs = None
        if "outputs" in tpl:
            at = ("templates", name, "outputs")
            outputs = p.values.render(f, tpl["outputs"], at, inner_scope, Rules(RUN_NAMES))
        self.add_group(site, members, "template", outputs, inner_scope)

    def template_params(self, site: Site, name: str, declared: dict[str, Any]) -> dict[str, Any]:
        """The values of a template's parameters: given in `with`, else their defaults."""
        p, f, step = self.planner, site.file, site.step
        given: dict[str, Any] = step.get("with") or {}
        values: dict[str, Any] = {}
        for pname in given:
            if pname not in declared:
                hint = did_you_mean(pname, declared)
                p.problems.error(
                    f,
                    site.at("with", pname),
                    f"template '{name}' has no parameter '{pname}'{hint}",
                    key=True,
                )
        for pname, pdef in declared.items():
            if pname in given:
                rules = Rules(RUN_NAMES, site.needs)
                at = site.at("with", pname)
                values[pname] = p.values.render(f, given[pname], at, site.scope, rules)
            elif isinstance(pdef, dict) and "default" in pdef:
                at = ("templates", name, "params", pname, "default")
                values[pname] = p.values.render(
                    f, pdef["default"], at, site.scope, Rules(RUN_NAMES)
                )
            else:
                p.problems.error(
                    f,
                    site.at("with") if "with" in step else site.path,
                    f"missing required parameter '{pname}' of template '{name}'",
                )
                values[pname] = None
        return values

    def add_group(
        self, site: Site, members: list[str], kind: str, outputs: Any, scope: Scope
    ) -> None:
        self.planner.add_node(
            site,
            Node(
                id=site.qid,
                kind=NodeKind.GROUP,
                order=len(self.planner.nodes),
                location=site.file.source.locate(site.path),
                path=format_path(site.path),
                needs=tuple(members),
                group=site.group,
                members=tuple(members),
                group_kind=kind,
                outputs=outputs,
                key=site.key,
                item=site.item,
                has_item=site.has_item,
                scope=scope,
                is_finally=site.finally_,
            ),
        )

    def inline_pipeline(self, site: Site) -> None:
        p, f, qid = self.planner, site.file, site.qid
        with_: dict[str, Any] = site.step.get("with") or {}
        at = site.at("with")
        problems = check_schema(with_, p.steps.plugin_schema("pipeline") or {}, f.source, at)
        if problems:
            p.problems.extend(problems)
            return
        rel = p.values.render(f, with_["file"], (*at, "file"), site.scope, Rules(frozenset()))
        if rel is INVALID:
            return
        target = os.path.normpath(os.path.join(os.path.dirname(f.path), str(rel)))
        # By real path: a folder that links back to its own (`loop -> .`) is the same file.
        if os.path.realpath(target) in {os.path.realpath(q) for q in p.file_stack}:
            from .planner import relative_to_cwd

            chain = " -> ".join(relative_to_cwd(path) for path in [*p.file_stack, target])
            p.problems.error(f, (*at, "file"), f"pipeline includes itself: {chain}")
            return
        if not os.path.isfile(target):
            # Said where the file is named: the user fixes the reference, not the file.
            p.problems.error(f, (*at, "file"), f"no pipeline file {rel!r} (looked for {target})")
            return
        try:
            doc = load_file(target, p.options.max_file_size)
        except PipelineError as exc:
            p.problems.extend(exc.diagnostics)
            return
        p.problems.extend(doc.problems)
        problems = validate_document(doc.data, doc.source)
        if problems:
            p.problems.extend(problems)
            return
        declared = doc.data.get("params") or {}
        given = p.values.render(
            f, with_.get("params") or {}, (*at, "params"), site.scope, Rules(RUN_NAMES)
        )
        for pname in given:
            if pname not in declared:
                p.problems.error(
                    f,
                    (*at, "params", pname),
                    f"{rel} has no parameter '{pname}'{did_you_mean(pname, declared)}",
                    key=True,
                )
        nested = p.open_file(doc, self.inline_params(site, rel, doc, given))
        if "timeout" in doc.data:
            p.problems.error(
                nested,
                ("timeout",),
                "the `timeout` of an inlined pipeline is not applied (the including pipeline's "
                "is); set it there, or `timeout` on this file's steps",
                key=True,
            )
        p.read_pools(nested)
        aliases = {s["id"]: f"{qid}.{s['id']}" for s in doc.data["steps"]}
        names = {
            "params": nested.context["params"],
            "env": nested.context["env"],
            "pipeline": nested.context["pipeline"],
        }
        inner_scope = Scope(MappingProxyType(names), MappingProxyType(aliases), site.scope)
        p.file_stack.append(os.path.abspath(target))
        try:
            steps = StepList(nested, doc.data["steps"], ("steps",), inner_scope, site.needs, qid)
            members = p.expand(steps)
        finally:
            p.file_stack.pop()
        outputs = p.values.render(
            nested, doc.data.get("outputs") or {}, ("outputs",), inner_scope, Rules(RUN_NAMES)
        )
        # An inlined pipeline's group keeps the key and item but not has_item (as it always did).
        self.add_group(site._replace(has_item=False), members, "pipeline", outputs, inner_scope)

    def inline_params(self, site: Site, rel: str, doc: Any, given: Any) -> dict[str, Any]:
        """An inlined file's parameters: its defaults under the values `with.params` gives,
        each checked against the file's typed declarations."""
        from .params import declarations

        p, at = self.planner, site.at("with", "params")
        defaults, typed = declarations(doc.data.get("params") or {}, doc.source, p.problems.found)
        values = {**defaults, **(given if isinstance(given, dict) else {})}
        for name, spec in typed.items():
            if name not in values:
                message = f"{rel} has no default for parameter '{name}': give it in with.params"
                p.problems.error(site.file, at, message)
                values[name] = None  # known to its templates: the one error is this one
            elif not isinstance(values[name], Deferred) and (problem := spec.problem(values[name])):
                p.problems.error(
                    site.file, (*at, name), f"{problem} (parameter '{name}' is of type {spec.type})"
                )
            else:
                values[name] = spec.coerce(values[name])
        return values
