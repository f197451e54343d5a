"""Bounded loops at plan time: a step (or template instance) with `loop: {until, max_iterations}`
becomes a MAPPED node whose iterations the scheduler makes one at a time (loops.py).

Everything that can be checked before the run is checked here, located: the keys `loop`
cannot be combined with, `max_iterations` against its bound, and `until` (its syntax, and
that every name it reads exists).  Iteration k is a run-time instance whose scope binds
`loop` to `{index: k, previous: <output of k - 1>}`, so a value that reads `loop` is kept for
the run (Deferred), as a run-time for_each's item is.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from . import defaults
from .model import Deferred, ForEach, Loop, NodeKind
from .namecheck import STEP_NAMES
from .rendering import INVALID, Rules

if TYPE_CHECKING:
    from .planner import Planner
    from .site import Site

LOOP_NAME = "loop"  # the name an iteration's templates read its index and previous output by
UNTIL_NAMES = frozenset({"output", "outputs", LOOP_NAME})  # what `until` reads besides those
# keys a loop cannot be combined with: each would be silently meaningless or ambiguous
CONFLICTS = ("for_each", "as", "key", "max_parallel", "compensate", "cache")


class LoopPlans:
    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    def expand(self, site: Site) -> None:
        spec = self.spec(site)
        if spec is None:
            return
        for_each = ForEach(None, LOOP_NAME)
        planner = self.planner
        if "template" in site.step:
            planner.fanouts.add_mapped_template(site, for_each)
            node = planner.nodes.get(site.qid)
            if node is not None and node.kind is NodeKind.MAPPED:
                planner.nodes[site.qid] = dataclasses.replace(node, loop=spec)
            return
        node = planner.steps.step_node(site, STEP_NAMES | {LOOP_NAME})
        if node is None:
            return
        mapped = dataclasses.replace(node, kind=NodeKind.MAPPED, for_each=for_each, loop=spec)
        planner.add_node(site, mapped)

    def spec(self, site: Site) -> Loop | None:
        """The step's `loop`, checked; None when a problem was reported."""
        step, f, problems = site.step, site.file, self.planner.problems
        ok = True
        for name in CONFLICTS:
            if name in step:
                message = f"`{name}` cannot be combined with `loop` on one step"
                problems.error(f, site.at(name), message, key=True)
                ok = False
        if step.get("uses") == "pipeline":
            message = "an inlined pipeline (`uses: pipeline`) cannot loop; loop a template instead"
            problems.error(f, site.at("loop"), message, key=True)
            ok = False
        spec = step["loop"]
        limit = spec["max_iterations"]
        if limit > defaults.MAX_LOOP_ITERATIONS:
            message = f"max_iterations is at most {defaults.MAX_LOOP_ITERATIONS}, got {limit}"
            problems.error(f, site.at("loop", "max_iterations"), message)
            ok = False
        until = until_expression(spec["until"])
        rules = Rules(STEP_NAMES | UNTIL_NAMES | {"*"}, site.needs)
        checked = self.planner.values.render(
            f, Deferred(until), site.at("loop", "until"), site.scope, rules
        )
        if checked is INVALID:
            ok = False
        return Loop(until, int(limit)) if ok else None


def until_expression(text: str) -> str:
    """`until` as a template: a bare expression gets its braces (as an `if` does)."""
    text = text.strip()
    return text if text.startswith("{{") else "{{ " + text + " }}"
