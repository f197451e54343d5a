"""Dead letters: the failed instances of a run (`runner failed`), and what `runner resume
--failed` re-drives (the error-handling pattern's dead-letter queue).

A failed step's rendered inputs (its `with`, and its `for_each` item) are recorded with it
(store.py), so the list says what each failure was given.  Re-driving is a resume of a slice:
the failed steps and everything downstream of them run again (`--rerun` of the failed steps,
within the `--only` slice they make); the rest of the run is kept as recorded, even what did not
succeed for another reason (a cancelled step stays cancelled).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import UsageError
from .escape import printable
from .model import Plan
from .rerun import downstream, owner


def failed_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of the steps that ended `failed` (not compensations), in the run's order."""
    return [
        r
        for r in rows
        if r["kind"] == "step"
        and r["state"] == "failed"
        and not str(r["step_id"]).endswith(":compensate")
    ]


def letters(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each failed step: its id, rendered inputs, error kind, message, attempts, exit code
    and log file."""
    return [
        {
            "step": r["step_id"],
            "inputs": json.loads(r["inputs_json"]) if r["inputs_json"] else None,
            "kind": r["error_kind"] or "error",
            "message": r["error"] or "",
            "attempts": int(r["attempts"] or 0),
            "exit_code": r["exit_code"],
            "log": r["log_path"],
        }
        for r in failed_rows(rows)
    ]


def text(run_id: str, found: Sequence[Mapping[str, Any]]) -> str:
    """`runner failed` for people: one block per failed step."""
    if not found:
        return f"run {run_id}: no failed steps\n"
    lines = [f"run {run_id}: {len(found)} failed step(s)"]
    for letter in found:
        attempts = letter["attempts"]
        lines.append(
            f"{printable(letter['step'])}  {letter['kind']}, {attempts} attempt"
            f"{'s' if attempts != 1 else ''}: {printable(letter['message'])}"
        )
        if letter["inputs"] is not None:
            shown = json.dumps(letter["inputs"], ensure_ascii=False, sort_keys=True)
            lines.append(f"    inputs: {printable(shown)}")
    lines.append(f"re-drive them with: runner resume {run_id} --failed")
    return "\n".join(lines) + "\n"


def redrive(plan: Plan, run_id: str, rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The `--only` slice of `resume --failed`: the nodes of the plan holding the failed
    steps and those downstream of them (a run-time for_each instance is its mapped step's);
    the failed steps themselves are re-run (`--rerun`), whatever else they hold is kept."""
    failed = [str(r["step_id"]) for r in failed_rows(rows)]
    if not failed:
        raise UsageError(f"run {run_id} has no failed steps: nothing to re-drive")
    recorded = [str(r["step_id"]) for r in rows]
    cleared, _ = downstream(plan, failed, recorded)
    chosen = {nid if nid in plan.nodes else owner(plan, nid) for nid in cleared}
    return tuple(nid for nid in plan.nodes if nid in chosen)


def failed_ids(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(str(r["step_id"]) for r in failed_rows(rows))
