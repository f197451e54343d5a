"""What `runner resume` keeps of the run it resumes: the steps that succeeded (their state,
output and named outputs) whose every upstream step is kept too, and how many attempts each
step had.  Read from the store's step rows, compared with the plan as it is planned now.

A 100,000-step run is resumed by reading only the columns this needs, as tuples (not a dict
per row), keeping a step's output decoded only when it has one, and counting only the steps
that had attempts.  Two shortcuts (shortcuts.py): when the run recorded the hash of the plan
now, its recorded plan is not read (nor unpacked: 20 MB of text for 100,000 steps); and when
the plan recorded with the run is the same text as the plan now, no node can differ, so neither
is parsed to be compared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import shortcuts
from .errors import UsageError
from .model import NodeKind, Plan, State
from .runstate import Preset

if TYPE_CHECKING:
    from .store import Store

# A step row as `Store.step_results` reads it: id, kind, state, attempts, finished, output
# (JSON), named outputs (JSON).
StepResult = tuple[str, str, str, "int | None", "float | None", "str | None", "str | None"]

_STATES = {state.value: state for state in State}
_KEPT_STATES = ("succeeded", "cached")


def recorded_plan(store: Store, run_id: str, plan_json: str, plan_hash: str) -> str:
    """The plan run `run_id` recorded (engine.plan_fingerprint's JSON), to be compared with
    `plan_json` (whose SHA-256 is `plan_hash`).  The shortcut: a run that recorded the same
    hash recorded the same text, which is `plan_json` itself then."""
    if shortcuts.enabled() and store.run(run_id)["plan_hash"] == plan_hash:
        return plan_json
    return store.plan_json(run_id)


def resume_state(
    run_id: str,
    plan: Plan,
    recorded_plan: str,
    plan_json: str,
    rows: Sequence[StepResult],
    force: bool,
    rerun: frozenset[str] = frozenset(),
) -> tuple[dict[str, Preset], dict[str, int]]:
    """What an earlier run finished (to reuse), from its step `rows`, and how many attempts
    each step had (only those that had some); refuses when a step whose output would be
    reused is planned differently now (`recorded_plan` against `plan_json`, both
    engine.plan_fingerprint's JSON).  The steps in `rerun` (`finally`) run again whatever they
    did, so they are neither."""
    differs = _differs(recorded_plan, plan_json)
    preset: dict[str, Preset] = {}
    attempts: dict[str, int] = {}
    changed: list[str] = []
    undone = _undone(rows)
    for sid, kind, state, count, _finished, raw, outputs_json in rows:
        if sid in undone or sid.endswith(":compensate"):
            continue
        if count:
            attempts[sid] = int(count)
        if kind != "step" or state not in _KEPT_STATES or sid in rerun:
            continue
        if differs is not None and differs(sid):
            changed.append(sid)
            continue
        output = None if raw is None or raw == "null" else json.loads(raw)  # most: no output
        preset[sid] = (_STATES[state], output, outputs_json)
    kept = _kept(plan, preset, [row[0] for row in rows])
    if len(kept) != len(preset):
        preset = {sid: v for sid, v in preset.items() if sid in kept}
    if changed and not force:
        shown = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        raise UsageError(
            f"the pipeline changed since run {run_id}: steps that had succeeded are planned "
            f"differently now ({shown}); resuming would mix old and new results. "
            "Start a new run, or pass --force to resume anyway (those steps run again)"
        )
    return preset, attempts


def _differs(recorded_plan: str, plan_json: str) -> Any:
    """A test of whether a node is planned differently now than the run recorded it (None:
    no node is)."""
    if shortcuts.enabled() and recorded_plan == plan_json:
        return None  # the same text: the same nodes
    old_nodes = {n["id"]: n for n in json.loads(recorded_plan)["nodes"]}
    new_nodes = {n["id"]: n for n in json.loads(plan_json)["nodes"]}
    return lambda sid: old_nodes.get(sid) != new_nodes.get(sid)


def _undone(rows: Sequence[StepResult]) -> set[str]:
    """The steps whose compensation ran, and ran after the step's last end: they were undone
    and run again.  A compensation older than the step's last end (the step ran again since,
    by a resume) undoes nothing any more."""
    compensations = [row for row in rows if row[0].endswith(":compensate")]
    if not compensations:
        return set()
    ended = {row[0]: row[4] or 0.0 for row in rows}
    return {
        sid.removesuffix(":compensate")
        for sid, _kind, state, _count, finished, _raw, _outputs in compensations
        if state == "succeeded"
        and (finished or 0.0) >= ended.get(sid.removesuffix(":compensate"), 0.0)
    }


def _kept(plan: Plan, done: Mapping[str, Any], recorded: Sequence[str]) -> set[str]:
    """The steps of `done` a resume keeps: those whose every upstream step is kept too.  A step
    that runs again can give another output (one `failed_allowed` or skipped before, say), so
    what read it runs again after it, as "re-run failed jobs" re-runs their dependents."""
    nodes = plan.nodes
    memo: dict[str, bool] = {}
    mapped = [nid for nid, node in nodes.items() if node.kind is NodeKind.MAPPED]

    def instances(nid: str) -> list[str]:  # as recorded, whatever their state
        return [sid for sid in recorded if sid not in nodes and sid.startswith(f"{nid}.")]

    def kept(nid: str) -> bool:
        if nid not in memo:
            memo[nid] = False  # a cycle cannot be planned; this only ends the recursion
            node = nodes.get(nid)
            if node is None:  # an instance of a run-time for_each
                parent = next((m for m in mapped if nid.startswith(f"{m}.")), None)
                memo[nid] = parent is not None and nid in done and upstream(parent)
            elif node.kind is NodeKind.MAPPED:
                memo[nid] = upstream(nid) and all(kept(i) for i in instances(nid))
            else:
                memo[nid] = (node.kind is not NodeKind.STEP or nid in done) and upstream(nid)
        return memo[nid]

    def upstream(nid: str) -> bool:
        return all(kept(n) for n in nodes[nid].needs)

    return {sid for sid in done if kept(sid)}
