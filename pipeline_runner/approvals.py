"""Approval gates: a `uses: approval` step waits for a person's answer instead of running.

When a gate becomes ready the run records it `waiting`: it holds no worker and no pool slot,
and the rest of the DAG goes on.  The answer is recorded in the run store by another process
(`runner approve` / `runner reject`, gatebook.py); a live run looks for answers every
`defaults.APPROVAL_POLL` seconds, and a run that has nothing left but waiting gates (and what
needs them) stops with status `waiting` (exit code 75) until `runner resume`.

This module holds the decisions, over plain values: what a gate asks (`Gate`, from its
rendered `with`), what its answer makes of it (`verdict`), which gates of a run are waiting
and when to look again (`Gates`).  A gate's `timeout` counts from when it first waited, a time
the store keeps across resumes.
"""

from __future__ import annotations

import math
import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import defaults
from .durations import parse_duration
from .kinds import FailureKind
from .model import State

USES = "approval"  # the plugin name of a gate
# Settings of a step that run an attempt: a gate runs none, so they are refused on it.
ATTEMPT_KEYS = ("retries", "timeout", "cache", "pool", "skip_exit_codes", "resources")
APPROVED = "approved"  # an approval's output when no --value is given


@dataclass(frozen=True, slots=True)
class Gate:
    """What a gate asks, from its rendered `with`."""

    prompt: str = ""
    choices: tuple[str, ...] = ()
    timeout: float | None = None  # seconds from when it first waited

    def request(self, since: float) -> dict[str, Any]:
        """What a waiting gate shows as its output (reports, `--json`, annotations)."""
        return {
            "prompt": self.prompt,
            "choices": list(self.choices),
            "timeout": self.timeout,
            "waiting_since": since,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """An approval's answer: approved or not, the value given, by whom and when."""

    approved: bool
    value: Any = None
    message: str = ""
    by: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Record:
    """A gate as the store holds it: when it first waited, and its answer if one came."""

    since: float
    answer: Answer | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a gate ends: succeeded with `output`, or failed with `kind` and `message`."""

    state: State
    output: Any = None
    kind: str | None = None
    message: str = ""


class Book(Protocol):
    """Where gates and their answers are kept (the run store: gatebook.StoreBook)."""

    def open_gate(self, run_id: str, step_id: str, gate: Gate, now: float) -> Record: ...

    def answers(self, run_id: str, step_ids: Sequence[str]) -> dict[str, Answer]: ...


@dataclass
class MemoryBook:
    """Gates of a run that has no store: they wait, and nothing answers them."""

    since: dict[str, float] = field(default_factory=dict)

    def open_gate(self, run_id: str, step_id: str, gate: Gate, now: float) -> Record:
        return Record(self.since.setdefault(step_id, now))

    def answers(self, run_id: str, step_ids: Sequence[str]) -> dict[str, Answer]:
        return {}


def gate_of(with_: Mapping[str, Any]) -> Gate:
    """The gate a rendered `with` asks for; ValueError for a value rendered at run time that
    cannot work (the planner checks the others, see `with_problems`)."""
    prompt = with_.get("prompt", "")
    if not isinstance(prompt, str):
        raise ValueError(f"approval: prompt: expected a string, found {prompt!r}")
    choices = with_.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"approval: choices: expected a list of strings, found {choices!r}")
    timeout = with_.get("timeout")
    seconds = None
    if timeout is not None:
        seconds = parse_duration(timeout)  # its ValueError says what is wrong
        if seconds == 0:
            raise ValueError(
                f"approval: timeout: invalid duration {timeout!r}: must be more than 0"
            )
    return Gate(prompt, tuple(dict.fromkeys(choices)), seconds)


def with_problems(with_: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the schema cannot say about a gate's `with` known before the run: (key, message)
    for a timeout out of range and choices given twice.  Templated values are left to
    `gate_of` at run time (the caller passes them as non-strings)."""
    problems = []
    timeout = with_.get("timeout")
    if isinstance(timeout, (str, int, float)) and not isinstance(timeout, bool):
        try:
            if parse_duration(timeout) == 0:
                problems.append(("timeout", f"invalid duration {timeout!r}: must be more than 0"))
        except ValueError as exc:
            problems.append(("timeout", str(exc)))
    choices = with_.get("choices")
    if isinstance(choices, list):
        texts = [c for c in choices if isinstance(c, str)]
        twice = sorted({c for c in texts if texts.count(c) > 1})
        if twice:
            problems.append(("choices", f"choice {twice[0]!r} is given more than once"))
    return problems


def verdict(gate: Gate, record: Record, now: float) -> Outcome | None:
    """What a gate's answer (or its timeout) makes of it; None while it waits.  An answer
    given after the timeout passed does not count."""
    deadline = record.since + gate.timeout if gate.timeout is not None else math.inf
    answer = record.answer
    if answer is not None and answer.at <= deadline:
        who = f" by {answer.by}" if answer.by else ""
        if answer.approved:
            return Outcome(State.SUCCEEDED, answer.value)
        why = f": {answer.message}" if answer.message else ""
        return Outcome(State.FAILED, None, FailureKind.REJECTED, f"rejected{who}{why}")
    if now >= deadline:
        assert gate.timeout is not None
        waited = _seconds(gate.timeout)
        return Outcome(State.FAILED, None, FailureKind.TIMEOUT, f"no answer within {waited}")
    return None


def _seconds(value: float) -> str:
    return f"{value:g}s"


@dataclass
class Waiting:
    """A gate the run waits on, and since when."""

    gate: Gate
    since: float


class Gates:
    """The waiting gates of a run (the core's: the scheduler asks, transitions apply)."""

    def __init__(self, book: Book | None, run_id: str) -> None:
        self.book: Book = book if book is not None else MemoryBook()
        self.run_id = run_id
        self.waiting: dict[str, Waiting] = {}
        self.next_look = 0.0

    def open(self, step_id: str, gate: Gate) -> tuple[Outcome | None, float]:
        """A gate became ready: its outcome if answered (or timed out) already, and when it
        first waited.  Otherwise it is waiting from now on."""
        now = time.time()
        record = self.book.open_gate(self.run_id, step_id, gate, now)
        outcome = verdict(gate, record, now)
        if outcome is None:
            self.waiting[step_id] = Waiting(gate, record.since)
        return outcome, record.since

    def wait_limit(self, timeout: float | None) -> float | None:
        """The loop's wait, shortened to look for answers while gates wait."""
        if not self.waiting:
            return timeout
        soon = max(self.next_look - time.time(), 0.0)
        for entry in self.waiting.values():
            if entry.gate.timeout is not None:
                soon = min(soon, max(entry.since + entry.gate.timeout - time.time(), 0.0))
        return soon if timeout is None else min(timeout, soon)

    def due(self) -> bool:
        return bool(self.waiting) and time.time() >= self.next_look

    def look(self, still_waiting: Callable[[str], bool]) -> list[tuple[str, Outcome]]:
        """The gates answered (or timed out) since the last look; they wait no more."""
        now = time.time()
        self.next_look = now + defaults.APPROVAL_POLL
        for sid in [s for s in self.waiting if not still_waiting(s)]:
            del self.waiting[sid]  # cancelled meanwhile
        if not self.waiting:
            return []
        answers = self.book.answers(self.run_id, list(self.waiting))
        ended = []
        for sid, entry in list(self.waiting.items()):
            outcome = verdict(entry.gate, Record(entry.since, answers.get(sid)), now)
            if outcome is not None:
                del self.waiting[sid]
                ended.append((sid, outcome))
        return ended


# -- how to answer ---------------------------------------------------------------------------


def state_dir_flag(state_dir: str | None) -> str:
    """` --state-dir DIR` when the answer must name the run's state folder (not the default,
    nor the one the environment names)."""
    if not state_dir:
        return ""
    default = os.environ.get(defaults.STATE_DIR_ENV) or defaults.STATE_DIR
    if os.path.abspath(default) == os.path.abspath(state_dir):
        return ""
    return f" --state-dir {shlex.quote(state_dir)}"


def answer_commands(
    run_id: str, step_id: str, request: Mapping[str, Any] | None, state_dir: str | None = None
) -> list[str]:
    """The command lines that answer a waiting gate: one `runner approve` per choice (or one
    without --value), then `runner reject`."""
    where = state_dir_flag(state_dir)
    target = f"{shlex.quote(run_id)} {shlex.quote(step_id)}{where}"
    choices = list((request or {}).get("choices") or ())
    approve = [f"runner approve {target} --value {shlex.quote(c)}" for c in choices]
    return [*(approve or [f"runner approve {target}"]), f"runner reject {target}"]


def waiting_lines(
    run_id: str, gates: Sequence[tuple[str, Any]], state_dir: str | None = None
) -> list[str]:
    """What the end of a waiting run prints: each gate's prompt and the commands that answer
    it, and last, how to answer and go on."""
    lines = []
    for step_id, request in gates:
        asked = request if isinstance(request, Mapping) else None
        prompt = str((asked or {}).get("prompt") or "")
        lines.append(f"waiting for approval: {step_id}" + (f": {prompt}" if prompt else ""))
        lines.extend("  " + c for c in answer_commands(run_id, step_id, asked, state_dir))
    flag = state_dir_flag(state_dir)
    run = shlex.quote(run_id)
    step = shlex.quote(gates[0][0]) if len(gates) == 1 else "STEP"
    lines.append(
        f"answer with: runner approve {run} {step} [--value V]{flag} | runner reject {run} "
        f"{step} [--message M]{flag}, then continue with: runner resume {run}{flag}"
    )
    return lines
