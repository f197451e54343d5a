"""Fan-out at plan time: the instances of a `for_each` over a list or a matrix known before
the run, and the MAPPED node of one known only at run time (for a template, with its body
planned once: expansion.py copies it per item)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import matrix, success_policy
from .foreach import default_key, key_problem
from .loader import format_path
from .model import Deferred, ForEach, Node, NodeKind, Scope, SuccessPolicy, has_deferred
from .namecheck import RUN_NAMES, STEP_NAMES
from .rendering import INVALID, Rules
from .schema import describe

if TYPE_CHECKING:
    from .planner import Planner
    from .site import Site


class FanOuts:
    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    def expand(self, site: Site) -> None:
        f, step, qid = site.file, site.step, site.qid
        as_name = step.get("as", "item")
        spec = step["for_each"]
        at = site.at("for_each")
        value = spec
        if not isinstance(spec, list):
            value = self.planner.values.render(
                f, spec, at, site.scope, Rules(RUN_NAMES, site.needs)
            )
            if value is INVALID:
                return
            if has_deferred(value):
                self.add_mapped(site, value)
                return
        legs = self.legs(site, value)
        if legs is None:
            return
        members: list[str] = []
        taken: set[str] = set()  # the members' ids: `in` on the list is quadratic in the items
        for index, (default, item) in enumerate(legs):
            key = self.instance_key(site, as_name, item, index, default)
            if key is None:
                continue
            inst = f"{qid}.{key}"
            if inst in taken:
                where = (*at, index) if isinstance(step["for_each"], list) else at
                message = f"two items have the key '{key}'; set `key:` to tell them apart"
                self.planner.problems.error(f, where, message)
                continue
            members.append(inst)
            taken.add(inst)
            scope = site.scope
            inner = Scope(
                MappingProxyType({**scope.vars, as_name: item}), scope.aliases, scope.parent
            )
            self.planner.build(site.instance(inst, key, item, inner))
        limit, fail_fast = step.get("max_parallel"), False
        if isinstance(value, dict):
            limit, fail_fast = value.get("max_parallel", limit), value.get("fail_fast", False)
        keys = [m[len(qid) + 1 :] for m in members]
        group = Node(
            id=qid,
            kind=NodeKind.GROUP,
            order=len(self.planner.nodes),
            location=f.source.locate(site.path),
            path=format_path(site.path),
            needs=tuple(members),
            group=site.group,
            members=tuple(members),
            group_kind="for_each",
            max_parallel=limit,
            fail_fast=fail_fast,
            success=self.success(site, keys),
            is_finally=site.finally_,
        )
        self.planner.add_node(site, group)

    def success(self, site: Site, keys: list[str] | None = None) -> SuccessPolicy | None:
        """The step's `success` policy; with the instances' `keys` known before the run, what
        cannot work with them is a located error."""
        spec = site.step.get("success")
        if spec is None:
            return None
        policy = success_policy.parse(spec)
        for at, message in success_policy.static_problems(policy, keys) if keys is not None else ():
            where = site.at("success", *(int(p) if p.isdigit() else p for p in at.split(".")))
            self.planner.problems.error(site.file, where, message)
        return policy

    def legs(self, site: Site, value: Any) -> list[tuple[str | None, Any]] | None:
        """The items of a for_each known before the run, each with its default key (None:
        the list rule), or None when a problem was reported."""
        at = site.at("for_each")
        if isinstance(value, list):
            return [(None, item) for item in value]
        if not matrix.is_matrix(value):
            message = f"for_each must give a list or a matrix, got {describe(value)}"
            self.planner.problems.error(site.file, at, message)
            return None
        found = matrix.problems(value)
        if "max_parallel" in value and "max_parallel" in site.step:
            message = "max_parallel is set in the matrix: leave it out of the step"
            found.append(matrix.Problem(("max_parallel",), message))
        for problem in found:
            self.planner.problems.error(site.file, (*at, *problem.at), problem.message)
        if found:
            return None
        legs, problem_text = matrix.legs(value)
        if problem_text is not None:
            self.planner.problems.error(site.file, at, problem_text)
            return None
        return [(leg.key, leg.item) for leg in legs]

    def instance_key(
        self, site: Site, as_name: str, item: Any, index: int, default: str | None = None
    ) -> str | None:
        step = site.step
        if "key" in step:
            scope = site.scope
            inner = Scope(MappingProxyType({**scope.vars, as_name: item}), scope.aliases)
            key = self.planner.values.render(
                site.file, step["key"], site.at("key"), inner, Rules(frozenset())
            )
            if key is INVALID:
                return None
            key = str(key)
        else:
            key = default if default is not None else default_key(item, index)
        problem = key_problem(key)
        if problem:
            # A literal list: point at the item itself; otherwise at the expression.
            at = site.at("for_each")
            if isinstance(step["for_each"], list) and "key" not in step:
                at = (*at, index)
            elif "key" in step:
                at = site.at("key")
            message = f"invalid key {key!r} for item {describe(item)}: {problem}"
            self.planner.problems.error(site.file, at, message)
            return None
        return key

    def add_mapped(self, site: Site, items: Any) -> None:
        step = site.step
        if step.get("uses") == "pipeline":
            self.planner.problems.error(
                site.file,
                site.at("for_each"),
                "a for_each that reads steps.* is expanded at run time, which works for "
                "plugin and template steps; give an inlined pipeline a list known before the run",
            )
            return
        as_name = step.get("as", "item")
        runtime = STEP_NAMES | {as_name}
        if "key" in step:
            self.planner.values.render(
                site.file, step["key"], site.at("key"), site.scope, Rules(runtime)
            )
        for_each = ForEach(items, as_name, step.get("key"), step.get("max_parallel"))
        if "template" in step:
            self.add_mapped_template(site, for_each)
            return
        node = self.planner.steps.step_node(site, runtime)
        if node is None:
            return
        mapped = dataclasses.replace(
            node, kind=NodeKind.MAPPED, for_each=for_each, success=self.success(site)
        )
        self.planner.add_node(site, mapped)

    def add_mapped_template(self, site: Site, for_each: ForEach) -> None:
        """A template fanned out at run time (GitHub's matrix from `fromJson(needs.x.outputs.y)`,
        Argo's `withParam` over a steps template): its body is planned once now, with the item
        a value known only at run time, so every check a static instance gets is made now;
        each item then gets a copy of the body with its ids and scope (expansion.py)."""
        scope = site.scope
        marker = Deferred(f"{{{{ {for_each.as_name} }}}}")  # the item: known at run time
        body_scope = Scope(
            MappingProxyType({**scope.vars, for_each.as_name: marker}), scope.aliases, scope.parent
        )
        before = set(self.planner.nodes)
        self.planner.instances.instantiate(site._replace(scope=body_scope))
        body = tuple(node for nid, node in self.planner.nodes.items() if nid not in before)
        for node in body:
            del self.planner.nodes[node.id]
            self.planner.bodies[node.id] = node
        if not any(node.id == site.qid for node in body):
            return  # the template could not be instantiated: said already
        mapped = Node(
            id=site.qid,
            kind=NodeKind.MAPPED,
            order=len(self.planner.nodes),
            location=site.file.source.locate(site.path),
            path=format_path(site.path),
            needs=site.needs,
            group=site.group,
            scope=scope,
            for_each=for_each,
            body=body,
            success=self.success(site),
            is_finally=site.finally_,
        )
        self.planner.add_node(site, mapped)
