"""Report files of a run: `--json` (summary), `--junit` (JUnit XML), `--events` (JSON lines,
written as the run goes) and `--trace` (Chrome trace-event JSON for Perfetto).

All of them go through the run's secret masker: a secret never reaches a report file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO
from xml.etree import ElementTree as ET

from .changes import RunInfo, RunResult, StepChanged
from .escape import ci_report
from .kinds import FailureKind
from .model import NodeKind, State
from .report import log_tail
from .secrets import Masker


def write_report(path: str, text: str, *, xml: bool = False) -> None:
    """Write a report file: `-` is stdout; a regular file (or a new one) is replaced atomically,
    by a temporary file renamed over it, so a reader never sees half a report; a symlink to one
    stays a symlink and its target is replaced.  Anything else (a FIFO, a device such as
    /dev/stdout, a symlink to one) is written in place: renaming over it would replace the FIFO
    or the device node with a regular file."""
    if path == "-":
        sys.stdout.write(ci_report(text, xml=xml))  # read by CI: no `##[` command
        sys.stdout.flush()
        return
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
        return
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        if mode is not None:
            os.chmod(tmp, stat.S_IMODE(mode))  # the report keeps the permissions it had
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_report(path: str) -> TextIO:
    """The file `--events` streams to: stdout for `-`, else opened in place (a FIFO or a
    device stays what it is; a regular file is truncated and written as the run goes)."""
    if path == "-":
        return sys.stdout
    return open(path, "w", encoding="utf-8")


def step_json(nr: StepChanged) -> dict[str, Any]:
    duration = None
    if nr.started is not None and nr.finished is not None:
        duration = round(nr.finished - nr.started, 6)
    data = {
        "id": nr.id,
        "state": nr.state.value,
        "attempts": nr.attempt,
        "started": nr.started,
        "finished": nr.finished,
        "duration": duration,
        "error_kind": nr.error_kind,
        "error": nr.error or None,
        "exit_code": nr.exit_code,
        "worker": nr.worker,
        "group": nr.group,
        "key": nr.key,
        "output": nr.output if nr.state in _WITH_OUTPUT else None,
        "outputs": json.loads(nr.outputs_json) if nr.outputs_json else None,
    }
    if nr.state is State.WAITING:  # an approval gate: what it asks (approvals.Gate.request)
        data["approval"] = nr.output
    return data


def summary_json(result: RunResult, plan_name: str, masker: Masker) -> dict[str, Any]:
    steps = [step_json(nr) for nr in result.nodes.values() if nr.kind is NodeKind.STEP]
    data = {
        "run_id": result.run_id,
        "pipeline": plan_name,
        "status": result.status,
        "exit_code": result.exit_code,
        "started": result.started,
        "finished": result.finished,
        "duration": round(result.finished - result.started, 6),
        "counts": result.counts,
        "outputs": result.outputs,
        "steps": steps,
    }
    if result.failure:
        data["failure"] = result.failure
    return masker.value(data)  # type: ignore[no-any-return]


def write_json(path: str, result: RunResult, plan_name: str, masker: Masker) -> None:
    text = json.dumps(summary_json(result, plan_name, masker), indent=2, default=str)
    write_report(path, text + "\n")


_WITH_OUTPUT = (State.SUCCEEDED, State.CACHED, State.COMPENSATED)


def _suite_of(nr: StepChanged, nodes: Mapping[str, StepChanged]) -> str:
    """The template instance (or nested pipeline) a step belongs to, else the pipeline."""
    group = nr.group
    while group is not None and group in nodes:
        owner = nodes[group]
        if owner.group_kind in ("template", "pipeline"):
            return group
        group = owner.group
    return ""


# What XML 1.0 allows in a document: anything else (ESC, NUL, a lone surrogate, U+FFFE) makes
# the whole report unreadable, so it is shown as a visible escape instead.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """`text` with every character XML 1.0 forbids shown as `\\xNN` (or `\\uNNNN`)."""
    return _NOT_XML.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 256 else f"\\u{ord(m[0]):04x}", text
    )


def _clean(root: ET.Element) -> None:
    """Every attribute and text of the report made XML 1.0 (step ids, errors, logs)."""
    for element in root.iter():
        for key, value in element.attrib.items():
            element.set(key, xml_text(value))
        if element.text:
            element.text = xml_text(element.text)


def _testcase(suite: ET.Element, nr: StepChanged, classname: str, masker: Masker) -> str:
    """One step's testcase; what it counts as: "failures", "skipped" or "" (passed).  An
    allowed failure (`continue_on_error`) passes, as it did not fail the run: its error and
    log tail are in `system-out` and its `status` is `failed_allowed`."""
    seconds = (nr.finished - nr.started) if nr.started and nr.finished else 0.0
    case = ET.SubElement(suite, "testcase", name=nr.id, classname=classname, time=f"{seconds:.3f}")
    case.set("status", nr.state.value)
    message = masker.text(nr.error or nr.state.value)
    if nr.state is State.FAILED:
        failure = ET.SubElement(
            case, "failure", message=message, type=str(nr.error_kind or FailureKind.ERROR)
        )
        failure.text = masker.text("\n".join(log_tail(nr.log_path, 50)))
        return "failures"
    if nr.state is State.FAILED_ALLOWED:
        out = ET.SubElement(case, "system-out")
        tail = "\n".join(log_tail(nr.log_path, 50))
        out.text = masker.text(f"failed, allowed (continue_on_error): {nr.error}\n{tail}")
        return ""
    if nr.state is State.COMPENSATED:
        out = ET.SubElement(case, "system-out")
        out.text = f"succeeded, then undone by {nr.id}:compensate (the run failed)"
        return ""
    # not run: also a gate still waiting for its answer, and what needs it (a `waiting` run)
    if nr.state in (State.UPSTREAM_FAILED, State.CANCELLED, State.SKIPPED) or not nr.state.finished:
        ET.SubElement(case, "skipped", message=message)
        return "skipped"
    return ""


def junit_xml(result: RunResult, plan_name: str, masker: Masker) -> str:
    """One testsuite per template instance (the rest in one suite named after the pipeline),
    one testcase per step; failures carry the error and the tail of the step's log.  Elements
    and attributes are those of Jenkins' JUnit schema (no `skipped` on `testsuites`)."""
    suites: dict[str, list[StepChanged]] = {}
    for nr in result.nodes.values():
        if nr.kind is NodeKind.STEP:
            suites.setdefault(_suite_of(nr, result.nodes), []).append(nr)
    root = ET.Element("testsuites", name=plan_name)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(result.started))
    for suite_name, members in suites.items():
        suite = ET.SubElement(root, "testsuite", name=suite_name or plan_name)
        counts = {"tests": len(members), "failures": 0, "errors": 0, "skipped": 0}
        classname = f"{plan_name}.{suite_name or plan_name}"
        for nr in members:
            counted = _testcase(suite, nr, classname, masker)
            if counted:
                counts[counted] += 1
        for key, value in counts.items():
            suite.set(key, str(value))
            if key in totals:
                totals[key] += value
        elapsed = sum(float(case.get("time") or 0) for case in suite)
        suite.set("time", f"{elapsed:.3f}")
        suite.set("timestamp", stamp)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{result.finished - result.started:.3f}")
    _clean(root)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str, result: RunResult, plan_name: str, masker: Masker) -> None:
    write_report(path, junit_xml(result, plan_name, masker), xml=True)


def trace_json(result: RunResult, masker: Masker) -> dict[str, Any]:
    """Chrome trace events: one track (tid) per worker, one complete event per attempt."""
    tids: dict[str, int] = {}
    events: list[dict[str, Any]] = []
    origin = result.started
    for nr in result.nodes.values():
        if nr.kind is not NodeKind.STEP:
            continue
        for number, attempt in enumerate(nr.attempts, start=1):
            worker = attempt.worker or "runner"
            tid = tids.setdefault(worker, len(tids) + 1)
            events.append(
                {
                    "name": nr.id,
                    "cat": nr.uses or "step",
                    "ph": "X",
                    "ts": round((attempt.started - origin) * 1e6, 1),
                    "dur": round(max(attempt.finished - attempt.started, 0) * 1e6, 1),
                    "pid": 1,
                    "tid": tid,
                    "args": {
                        "attempt": number,
                        "ok": attempt.ok,
                        "error": masker.text(attempt.message) if not attempt.ok else None,
                    },
                }
            )
    for worker, tid in tids.items():
        events.append(
            {
                "name": "thread_name",
                "ph": "M",
                "pid": 1,
                "tid": tid,
                "args": {"name": f"worker {worker}"},
            }
        )
    events.append(
        {
            "name": "process_name",
            "ph": "M",
            "pid": 1,
            "tid": 0,
            "args": {"name": f"runner {result.run_id}"},
        }
    )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(path: str, result: RunResult, masker: Masker) -> None:
    write_report(path, json.dumps(trace_json(result, masker)) + "\n")


class EventsFile:
    """`--events FILE`: one JSON object a line per state change, flushed every turn."""

    def __init__(self, path: str, masker: Masker) -> None:
        self.file = open_report(path)
        self.masker = masker
        self.lines: list[str] = []
        self.run_id = ""

    def _emit(self, data: dict[str, Any]) -> None:
        self.lines.append(self.masker.json(data, default=str))

    def run_started(self, run: RunInfo) -> None:
        self.run_id = run.run_id
        self._emit(
            {
                "time": run.started,
                "run_id": run.run_id,
                "event": "run_started",
                "pipeline": run.plan.name,
            }
        )

    def changed(self, nr: StepChanged) -> None:
        old = nr.old
        if old is nr.state:
            return  # news about a step (its process started), not a change of state
        data: dict[str, Any] = {
            "time": time.time(),
            "run_id": self.run_id,
            "event": "state",
            "step": nr.id,
            "state": nr.state.value,
            "previous": old.value,
            "attempt": nr.attempt,
        }
        if nr.error and nr.state in (
            State.FAILED,
            State.FAILED_ALLOWED,
            State.RETRYING,
            State.UPSTREAM_FAILED,
        ):
            data["error"] = nr.error
        self._emit(data)

    def turn(self) -> None:
        if self.lines:
            text = "\n".join(self.lines) + "\n"
            self.file.write(ci_report(text) if self.file is sys.stdout else text)
            self.file.flush()
            self.lines = []

    def run_finished(self, result: RunResult) -> None:
        self._emit(
            {
                "time": result.finished,
                "run_id": result.run_id,
                "event": "run_finished",
                "status": result.status,
                "exit_code": result.exit_code,
            }
        )
        self.turn()
        if self.file is not sys.stdout:
            self.file.close()
