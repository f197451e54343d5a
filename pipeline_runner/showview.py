"""`runner show`: a run's steps as text lines or as JSON, read from the store.

The plain version is here: read the step rows, drop the groups that are not a success policy's
verdict, and print each row (`step_line`) or encode each as `json.dumps` would (`json_step`).
A 100,000-step run is 6 MB of text and 55 MB of JSON; `showfast.py` writes the same bytes with
SQLite doing most of the per-row work, and is used unless the speed shortcuts are off
(shortcuts.py).  Its rows that SQLite cannot render exactly are rendered here, row by row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from . import shortcuts
from .escape import in_ci, printable
from .jsonout import echo_json
from .store import Store, open_store


def show(state_dir: Path, run_id: str, as_json: bool) -> None:
    """Print run `run_id` (a unique prefix will do) of the store in `state_dir`."""
    store = open_store(state_dir, create=False)
    try:
        full_id = store.resolve(run_id)
        row = store.run(full_id)
        if shortcuts.enabled():
            from .showfast import show_fast

            if show_fast(store, row, as_json):
                return
        show_plain(store, row, as_json)
    finally:
        store.close()


def show_plain(store: Store, row: dict[str, Any], as_json: bool) -> None:
    from .gatebook import gate_rows
    from .verdicts import is_verdict

    run_id = row["id"]
    rows: Iterable[Any] = store.steps(run_id) if as_json else store.step_lines(run_id)
    steps = [s for s in rows if s["kind"] != "group" or is_verdict(s["state"], s["error"])]
    reruns = store.reruns(run_id)
    if as_json:
        gates = gate_rows(store, run_id)
        shown = [json_step(s, gates.get(s["step_id"]), reruns) for s in steps]
        echo_json({"run": json_run(row), "steps": shown})
        return
    ci = in_ci()  # once: a run's steps may be 100,000 lines
    lines = [header(row)]
    lines.extend(step_line(step, reruns, ci) for step in steps)
    click.echo("\n".join(lines))


def header(row: Mapping[str, Any]) -> str:
    return f"run {row['id']}: {row['pipeline']} {row['status']} ({printable(row['file'])})"


def step_line(step: Mapping[str, Any], reruns: Mapping[str, str], ci: bool) -> str:
    """A step as `runner show` prints it: id, state, attempts, duration, error, re-run note."""
    took = ""
    if step["started"] and step["finished"]:
        took = f"{step['finished'] - step['started']:.2f}s"
    error = f"  {printable(step['error'], ci=ci)}" if step["error"] else ""
    sid = printable(step["step_id"], ci=ci)
    why = reruns.get(step["step_id"])
    note = f"  (re-run: {printable(why, ci=ci)})" if why else ""
    state, attempts = step["state"], step["attempts"]
    return f"  {sid:<32} {state:<16} {attempts:>2} {took:>8}{error}{note}"


def json_run(row: dict[str, Any]) -> dict[str, Any]:
    """The run as `runner show --json` gives it: its outputs decoded."""
    row["outputs"] = json.loads(row.pop("outputs_json") or "null")
    return row


def json_step(
    step: dict[str, Any], gate: dict[str, Any] | None, reruns: Mapping[str, str]
) -> dict[str, Any]:
    """A step row as `runner show --json` gives it: its JSON columns decoded, the gate's
    question and answer (an approval gate), why it ran again (`resume --rerun`)."""
    if gate is not None:
        step["approval"] = gate
    step["output"] = json.loads(step.pop("output_json") or "null")
    step["rerun"] = reruns.get(step["step_id"])
    step["outputs"] = json.loads(step.pop("outputs_json") or "null")
    step["inputs"] = json.loads(step.pop("inputs_json") or "null")
    return step
