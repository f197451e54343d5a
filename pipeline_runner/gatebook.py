"""Approval gates in the run store: the `approvals` table (one row per gate of a run, written
when it first waits) and the answers `runner approve` / `runner reject` record in it.

A live run reads the answers (`StoreBook.answers`); `record_answer` is the other process's
side, refusing what cannot be an answer: a step that is not a waiting gate, a gate answered
already or past its timeout, a value not among the gate's choices.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .approvals import APPROVED, Answer, Gate, Record, answer_commands
from .errors import RunNotFound, UsageError, did_you_mean
from .history import live_status
from .model import State
from .store import Store, open_store


class StoreBook:
    """The gates of runs, as kept in the store (approvals.Book)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def open_gate(self, run_id: str, step_id: str, gate: Gate, now: float) -> Record:
        """The gate's row, written when it first waits (a resume finds the first time)."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO approvals (run_id, step_id, prompt, choices_json, timeout, since) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT (run_id, step_id) DO UPDATE SET "
                "prompt = excluded.prompt, choices_json = excluded.choices_json, "
                "timeout = excluded.timeout",
                (run_id, step_id, gate.prompt, json.dumps(list(gate.choices)), gate.timeout, now),
            )
        row = self.row(run_id, step_id)
        assert row is not None
        return Record(float(row["since"]), _answer(row))

    def row(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        rows = self.store.query(
            "SELECT * FROM approvals WHERE run_id = ? AND step_id = ?", (run_id, step_id)
        )
        return rows[0] if rows else None

    def answers(self, run_id: str, step_ids: Sequence[str]) -> dict[str, Answer]:
        rows = self.store.query(
            "SELECT * FROM approvals WHERE run_id = ? AND decision IS NOT NULL", (run_id,)
        )
        wanted = set(step_ids)
        found = {str(r["step_id"]): _answer(r) for r in rows if r["step_id"] in wanted}
        return {sid: answer for sid, answer in found.items() if answer is not None}


def gate_rows(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """The approval gates of a run as `runner show --json` gives them: step id -> what it
    asks, since when, and its answer (null fields while none came)."""
    rows = store.query("SELECT * FROM approvals WHERE run_id = ?", (run_id,))
    return {
        str(r["step_id"]): {
            "prompt": r["prompt"],
            "choices": json.loads(r["choices_json"] or "[]"),
            "timeout": r["timeout"],
            "waiting_since": r["since"],
            "decision": r["decision"],
            "value": json.loads(r["value_json"]) if r["value_json"] else None,
            "message": r["message"],
            "answered_by": r["answered_by"],
            "answered": r["answered"],
        }
        for r in rows
    }


def _answer(row: dict[str, Any]) -> Answer | None:
    if row["decision"] is None:
        return None
    return Answer(
        approved=row["decision"] == "approved",
        value=json.loads(row["value_json"] or "null"),
        message=str(row["message"] or ""),
        by=str(row["answered_by"] or ""),
        at=float(row["answered"] or 0.0),
    )


def record_answer(
    state_dir: Path, run_id: str, step_id: str, approve: bool, text: str | None
) -> str:
    """`runner approve` (text: the value) or `runner reject` (text: the message): record the
    answer and say what happens next."""
    store = open_store(state_dir, create=False)
    try:
        full_id = store.resolve(run_id)
        steps = {str(s["step_id"]): s for s in store.steps(full_id)}
        book = StoreBook(store)
        row = _waiting_gate(book, full_id, step_id, steps)
        value = _value(row, full_id, step_id, text) if approve else None
        _store_answer(store, full_id, step_id, approve, value, text)
        status = live_status(store.run(full_id))  # `stopped`: its runner was killed
    finally:
        store.close()
    word = "approved" if approve else "rejected"
    shown = f" with value {json.dumps(value)}" if approve else ""
    if status == "running":
        return f"{word} {step_id} of run {full_id}{shown}; the running run takes it up"
    return f"{word} {step_id} of run {full_id}{shown}; continue with: runner resume {full_id}"


def _waiting_gate(
    book: StoreBook, run_id: str, step_id: str, steps: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    step = steps.get(step_id)
    if step is None:
        raise RunNotFound(f"run {run_id} has no step {step_id!r}{did_you_mean(step_id, steps)}")
    row = book.row(run_id, step_id)
    if row is None:
        raise UsageError(f"step {step_id} of run {run_id} is not an approval gate")
    if row["decision"] is not None:
        raise UsageError(
            f"approval gate {step_id} of run {run_id} was answered already "
            f"({row['decision']} by {row['answered_by'] or 'someone'})"
        )
    if step["state"] != State.WAITING.value:
        raise UsageError(
            f"approval gate {step_id} of run {run_id} is not waiting (it is {step['state']})"
        )
    timeout = row["timeout"]
    if timeout is not None and time.time() > float(row["since"]) + float(timeout):
        raise UsageError(
            f"approval gate {step_id} of run {run_id} timed out (no answer within "
            f"{float(timeout):g}s); `runner resume {run_id}` fails it with kind timeout"
        )
    return row


def _value(row: dict[str, Any], run_id: str, step_id: str, text: str | None) -> Any:
    """The approval's value: one of the gate's choices when it has some."""
    choices = json.loads(row["choices_json"] or "[]")
    if not choices:
        return APPROVED if text is None else text
    if text in choices:
        return text
    shown = ", ".join(choices)
    if text is None:
        example = answer_commands(run_id, step_id, {"choices": choices})[0]
        raise UsageError(
            f"approval gate {step_id} asks for one of: {shown}; pass --value (e.g. {example})"
        )
    raise UsageError(
        f"--value {text!r} is not a choice of approval gate {step_id}: expected one of "
        f"{shown}{did_you_mean(text, choices)}"
    )


def _store_answer(
    store: Store, run_id: str, step_id: str, approve: bool, value: Any, text: str | None
) -> None:
    with store.transaction() as db:
        changed = db.execute(
            "UPDATE approvals SET decision = ?, value_json = ?, message = ?, answered_by = ?, "
            "answered = ? WHERE run_id = ? AND step_id = ? AND decision IS NULL",
            (
                "approved" if approve else "rejected",
                json.dumps(value),
                None if approve else text,
                _who(),
                time.time(),
                run_id,
                step_id,
            ),
        ).rowcount
    if changed != 1:
        raise UsageError(f"approval gate {step_id} of run {run_id} was answered meanwhile")


def _who() -> str:
    try:
        import getpass  # here: only an answer without --by needs it

        return getpass.getuser()
    except (KeyError, OSError):
        return ""
