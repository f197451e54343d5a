"""What CI systems show beside the code: GitHub Actions annotations of a run's failed steps and
of `runner validate`'s errors, and a GitLab Code Quality report of `runner validate`.

GitHub's workflow-command rules (docs.github.com, "Workflow commands for GitHub Actions"):
`::error file=F,line=L,col=C,title=T::MESSAGE` at the start of a line; in a property `%`, CR,
LF, `:` and `,` are written `%25`, `%0D`, `%0A`, `%3A`, `%2C`, in the message `%`, CR and LF.
`file` is read relative to the job's workspace (GITHUB_WORKSPACE), whatever the step's
`working-directory`, so runner writes it relative to GITHUB_WORKSPACE (else the current
directory); a file outside it keeps its absolute path.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from .changes import RunInfo, RunResult, StepChanged
from .errors import Diagnostic, Location
from .escape import printable
from .model import NodeKind, State
from .secrets import Masker

LOG_LINES = 50


def github_data(text: str) -> str:
    """A command's message: printable (no `##[`, no control character), then `%`, CR, LF."""
    text = printable(text, one_line=False, ci=True)
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_property(text: str) -> str:
    """A command's property value: `github_data`, and `:` and `,` too."""
    return github_data(text).replace(":", "%3A").replace(",", "%2C")


def workspace_path(file: str, workspace: str = "GITHUB_WORKSPACE") -> str:
    """`file` as a CI system reads a path: relative to its workspace (`workspace` names the
    variable: GITHUB_WORKSPACE, GitLab's CI_PROJECT_DIR), else to the current directory;
    absolute when it lies outside."""
    base = os.path.realpath(os.environ.get(workspace) or os.getcwd())
    full = os.path.realpath(file)
    relative = os.path.relpath(full, base)
    return full if relative == ".." or relative.startswith(".." + os.sep) else relative


def github_command(level: str, location: Location, title: str, message: str) -> str:
    """One annotation line: `::error ...::message` (level: error, warning or notice)."""
    props = [f"file={github_property(workspace_path(location.file))}"]
    if location.line > 0:
        props.append(f"line={location.line}")
        if location.column > 0:
            props.append(f"col={location.column}")
    props.append(f"title={github_property(title)}")
    return f"::{level} {','.join(props)}::{github_data(message)}\n"


class GitHubAnnotations:
    """`::error` for each failed step, `::warning` for each allowed failure (continue_on_error),
    each with a `::group::` holding its log tail; `::notice` for each approval gate left
    waiting, with the command lines that answer it (`state_dir`: the run's state folder)."""

    def __init__(
        self, out: TextIO | None = None, masker: Masker | None = None, state_dir: str | None = None
    ) -> None:
        self.out = out or sys.stdout
        self.mask = (masker or Masker()).text
        self.state_dir = state_dir

    def _nothing(self, *_: RunInfo | StepChanged) -> None:
        """Nothing is shown until the run has ended."""

    run_started = changed = turn = _nothing

    def run_finished(self, result: RunResult) -> None:
        for nr in result.nodes.values():
            if nr.kind is NodeKind.STEP and nr.state in (State.FAILED, State.FAILED_ALLOWED):
                self.out.write(self._step(nr))
            elif nr.kind is NodeKind.STEP and nr.state is State.WAITING:
                self.out.write(self._gate(result.run_id, nr))
        self.out.flush()

    def _gate(self, run_id: str, nr: StepChanged) -> str:
        from .approvals import answer_commands

        request = nr.output if isinstance(nr.output, dict) else {}
        prompt = str(request.get("prompt") or "")
        lines = [f"{nr.id}: {prompt}" if prompt else nr.id, "Answer with one of:"]
        lines += answer_commands(run_id, nr.id, request, self.state_dir)
        lines.append(f"then continue the run with: runner resume {run_id}")
        title = "approval waiting"
        return github_command("notice", nr.location, title, self.mask("\n".join(lines)))

    def _step(self, nr: StepChanged) -> str:
        allowed = nr.state is State.FAILED_ALLOWED
        level, title = ("warning", "step failed (allowed)") if allowed else ("error", "step failed")
        # Masked before escaped: escaping could change a secret's spelling.
        text = github_command(level, nr.location, title, self.mask(f"{nr.id}: {nr.error}"))
        text += f"::group::log of {github_data(self.mask(nr.id))}\n"
        from .report import log_tail  # shown behind `| `: no line of it starts a command

        for line in log_tail(nr.log_path, LOG_LINES):
            text += f"  | {self.mask(line)}\n"
        return text + "::endgroup::\n"


def github_diagnostics(diagnostics: Iterable[Diagnostic]) -> str:
    """`runner validate --format github`: one `::error` a problem, at its line and column."""
    return "".join(
        github_command("error", d.location, "runner validate", f"{d.path}: {d.message}")
        for d in diagnostics
    )


def codequality(diagnostics: Iterable[Diagnostic]) -> list[dict[str, Any]]:
    """GitLab's Code Quality report (docs.gitlab.com, "Code Quality report format"): one issue
    a problem; the fingerprint is stable for the same problem at the same place."""
    issues = []
    for d in diagnostics:
        path = workspace_path(d.location.file, "CI_PROJECT_DIR")
        where = f"{path}:{d.location.line}:{d.location.column}:{d.path}:{d.message}"
        issues.append(
            {
                "description": printable(f"{d.path}: {d.message}" if d.path else d.message),
                "check_name": "runner-validate",
                "fingerprint": hashlib.sha256(where.encode()).hexdigest(),
                "severity": "major",
                "location": {"path": path, "lines": {"begin": max(d.location.line, 1)}},
            }
        )
    return issues


def codequality_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps(codequality(diagnostics), indent=2) + "\n"
