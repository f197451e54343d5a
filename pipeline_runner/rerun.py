"""`runner resume --rerun GLOB` and `runner run --force GLOB`: which steps a glob selects, and
which of them run again or skip the cache.

A glob is matched against step ids, qualified instance ids included (`etl.acme.*`,
`etl.*.load`), and on resume against the ids the run recorded (the instances of a run-time
`for_each`).  A glob that matches a group (a fan-out, a template instance) selects its members.
`--rerun` adds everything downstream (Airflow's "clear task and downstream"); `--force` does
not (Snakemake's `--forcerun`: what follows runs again only when its cache key changed).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .errors import UsageError, did_you_mean
from .model import NodeKind, Plan


def check_globs(option: str, patterns: Sequence[str], ids: Iterable[str], what: str) -> None:
    """Each pattern must match an id: one that matches nothing is a mistake (a typo, a wrong
    case), not an empty selection.  One line, with the closest id."""
    known = list(dict.fromkeys(ids))
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(nid, pattern) for nid in known):
            # Ids are matched case-sensitively: a difference of case alone is the likeliest slip.
            same = [nid for nid in known if nid.casefold() == pattern.casefold()]
            hint = f" (did you mean '{same[0]}'?)" if same else did_you_mean(pattern, known)
            raise UsageError(f"{option} {pattern!r} selects no {what}{hint}")


def matching(patterns: Sequence[str], ids: Iterable[str]) -> set[str]:
    return {nid for nid in ids if any(fnmatch.fnmatchcase(nid, p) for p in patterns)}


def instances_of(nid: str, plan: Plan, recorded: Sequence[str]) -> list[str]:
    """The recorded instances of a run-time for_each `nid` (ids the plan does not have)."""
    return [sid for sid in recorded if sid not in plan.nodes and sid.startswith(f"{nid}.")]


def whole(plan: Plan, ids: Iterable[str], recorded: Sequence[str] = ()) -> set[str]:
    """`ids` with the members of each group among them (recursively), and the recorded
    instances of each run-time for_each among them."""
    out: set[str] = set()
    stack = list(ids)
    while stack:
        nid = stack.pop()
        if nid in out:
            continue
        out.add(nid)
        node = plan.nodes.get(nid)
        if node is None:
            continue
        stack.extend(node.members)
        if node.kind is NodeKind.MAPPED:
            stack.extend(instances_of(nid, plan, recorded))
    return out


def owner(plan: Plan, sid: str) -> str | None:
    """The node a run-time instance `sid` belongs to (its mapped step)."""
    cuts = [i for i in range(len(sid) - 1, 0, -1) if sid[i] == "."]
    return next((sid[:c] for c in cuts if sid[:c] in plan.nodes), None)


def downstream(
    plan: Plan, start: Iterable[str], recorded: Sequence[str] = ()
) -> tuple[set[str], set[str]]:
    """`start` (made whole) and everything that reads it, directly or not; and of those, the
    groups only recomputed.  A group that holds a step is recomputed from its members, but only
    that member runs again; a step that needs the group (or the step) runs again whole: its
    instances too, since its items may change."""
    cleared = whole(plan, start, recorded)
    held: set[str] = set()
    stack = list(cleared)
    while stack:
        nid = stack.pop()
        node = plan.nodes.get(nid)
        group = node.group if node is not None else owner(plan, nid)
        for dep in plan.dependents.get(nid, ()) if node is not None else (group,):
            if dep is None:
                continue
            if dep == group:  # the group holding `nid`: its other members are kept
                new = {dep} - cleared
                held |= new
            else:
                new = whole(plan, [dep], recorded) - cleared
                held.discard(dep)
            cleared |= new
            stack.extend(new)
    return cleared, held


class Chosen(NamedTuple):
    """The steps `--rerun` (resume) runs again, and those that skip the cache lookup: the
    `--force` ones (run), or every step `--rerun` runs again."""

    rerun: frozenset[str] = frozenset()
    forced: frozenset[str] = frozenset()
    matched: tuple[str, ...] = ()  # what the globs of --rerun selected (groups' members too)


def rerun_notes(
    plan: Plan, chosen: Chosen, globs: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """Why each step `--rerun` runs again does, for `runner show`: a glob matched it, or it is
    downstream of one that did (steps only, in the run's order)."""
    given = "--rerun " + " ".join(globs)
    matched = set(chosen.matched)
    ids = dict.fromkeys([*plan.nodes, *(str(r["step_id"]) for r in rows)])
    return {
        sid: given if sid in matched else f"downstream of {given}"
        for sid in ids
        if sid in chosen.rerun
        and (plan.nodes[sid].kind is NodeKind.STEP if sid in plan.nodes else True)
    }


def selectable(plan: Plan, only: Sequence[str], recorded: Sequence[str] = ()) -> list[str]:
    """The ids a `--force` or `--rerun` glob may select: the plan's (those of the `--only`
    slice), and the recorded instances of its run-time `for_each` steps."""
    from .runsetup import selected

    chosen = selected(plan, only)
    extra = [
        sid
        for sid in dict.fromkeys(recorded)
        if sid not in plan.nodes and not sid.endswith(":compensate") and owner(plan, sid) in chosen
    ]
    return [nid for nid in plan.nodes if nid in chosen] + extra
