"""A step's named outputs (`steps.X.outputs.NAME`), beside its output (`steps.X.output`).

Every step's process finds in `$RUNNER_OUTPUT` the path of a file it may write (GitHub's
`$GITHUB_OUTPUT`); a plugin's code may also call `ctx.set_output(name, value)`.  The file holds
`NAME=VALUE` lines, GitHub's multi-line form

    NAME<<DELIMITER
    line 1
    line 2
    DELIMITER

or one JSON object (the file starts with `{`).  Values from lines are text; a JSON object's keep
their types.  A name written twice keeps its last value; the file's win over `set_output`'s.
A line that is none of these, an unended `<<` block, a name that is not an identifier or a file
over the output limit fails the attempt, with the line named.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from . import defaults

OUTPUT_ENV = "RUNNER_OUTPUT"
# The same path under the prefix of runner's own variables (envvars.py); a step gets both.
OUTPUT_ENVS = ("PIPELINE_RUNNER_OUTPUT", OUTPUT_ENV)
MAX_FILE_BYTES = defaults.MAX_OUTPUT_BYTES
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


class OutputsError(ValueError):
    """The named outputs cannot be read; the message says where and why."""


def name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not _NAME.match(name):
        return (
            f"output name {name!r} is not a name (letters, digits, '_' and '-', "
            "not starting with a digit or '-')"
        )
    return None


def file_path(scratch_dir: str, attempt: int) -> str:
    """Where an attempt's step writes its named outputs: beside the step's scratch folder, one
    file per attempt (a retry starts with none)."""
    head, stem = os.path.split(scratch_dir)
    return f"{head}/.outputs/{stem}.{attempt}"


def read_file(path: str) -> dict[str, Any]:
    """The outputs the file at `path` holds ({} when the step wrote none); the file is removed."""
    try:
        fd = os.open(path, os.O_RDONLY)  # most steps write none: the cheapest way to learn it
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise OutputsError(f"cannot read ${OUTPUT_ENV} ({path}): {exc}") from None
    try:
        with open(fd, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise OutputsError(f"cannot read ${OUTPUT_ENV} ({path}): {exc}") from None
    try:
        os.unlink(path)
    except OSError:
        pass
    return _parse_bytes(data)


def _parse_bytes(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_FILE_BYTES:
        raise OutputsError(
            f"${OUTPUT_ENV} holds more than {MAX_FILE_BYTES:,} bytes; write big results to a file"
        )
    return parse(data.decode("utf-8", errors="replace"))


class SharedFile:
    """A pool worker's speed shortcut: one named-outputs file for all the attempts it runs in
    one run folder, held open.  Whether an attempt wrote to it is an `fstat` of the open file,
    not a look-up of a name no attempt before used (the dearest system call of a no-op step),
    and `$RUNNER_OUTPUT` stays the same from one attempt to the next.  Emptied before each
    attempt that may write (a leftover process of the one before cannot lend it outputs) and
    after it is read.  A step that replaces or removes the file (`mv tmp "$RUNNER_OUTPUT"`) is
    read by name, as `read_file` does, and the file is made again.  With the shortcuts off
    (shortcuts.py) each attempt has a file of its own (`file_path`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.env = dict.fromkeys(OUTPUT_ENVS, path)  # the variables that name it
        self.fd = -1
        self.left_empty = False  # by the last `take` (and no attempt ran code since)
        self._open()

    def _open(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            self.fd = os.open(self.path, flags, 0o666)
        except OSError:
            self.fd = -1  # the step's writes fail and say why; read by name meanwhile

    def clear(self, untouched: bool = False) -> None:
        """Before an attempt: the file is there, empty.  `untouched`: the caller knows that no
        process has run since the last attempt's end that could write to it (a speed shortcut,
        see worker_main); if that attempt's `take` left it empty, it is not looked at."""
        left_empty, self.left_empty = self.left_empty, False
        if untouched and left_empty:
            return
        if self.fd < 0:
            self._open()
            return
        status = os.fstat(self.fd)
        if status.st_nlink == 0:
            self._open()
        elif status.st_size:
            os.ftruncate(self.fd, 0)

    def take(self) -> dict[str, Any]:
        """What the attempt wrote ({} if nothing); the file is left empty."""
        if self.fd < 0:
            return read_file(self.path)
        status = os.fstat(self.fd)
        if status.st_nlink == 0:  # replaced or removed: what is at the name now
            found = read_file(self.path)
            self._open()
            return found
        if not status.st_size:
            self.left_empty = True
            return {}
        try:
            data = os.pread(self.fd, min(status.st_size, MAX_FILE_BYTES) + 1, 0)
            os.ftruncate(self.fd, 0)
        except OSError as exc:
            raise OutputsError(f"cannot read ${OUTPUT_ENV} ({self.path}): {exc}") from None
        self.left_empty = True
        return _parse_bytes(data)


def parse(text: str) -> dict[str, Any]:
    if text.lstrip().startswith("{"):
        return _parse_json(text)
    out: dict[str, Any] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        line = lines[i].removesuffix("\r")
        i += 1
        if not line.strip():
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if heredoc > 0 and (eq < 0 or heredoc < eq):
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            if not delimiter:
                raise OutputsError(f"${OUTPUT_ENV} line {i}: '{name}<<' has no delimiter")
            end = _find(lines, i, delimiter)
            if end < 0:
                raise OutputsError(
                    f"${OUTPUT_ENV} line {i}: '{name}<<{delimiter}' is never ended by a line "
                    f"'{delimiter}'"
                )
            value = "\n".join(x.removesuffix("\r") for x in lines[i:end])
            i = end + 1
        elif eq > 0:
            name, value = line[:eq], line[eq + 1 :]
        else:
            raise OutputsError(
                f"${OUTPUT_ENV} line {i}: expected NAME=VALUE or NAME<<DELIMITER, got {line[:80]!r}"
            )
        problem = name_problem(name)
        if problem:
            raise OutputsError(f"${OUTPUT_ENV} line {i}: {problem}")
        out[name] = value
    return out


def _find(lines: list[str], start: int, delimiter: str) -> int:
    for j in range(start, len(lines)):
        if lines[j].removesuffix("\r") == delimiter:
            return j
    return -1


def _parse_json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise OutputsError(f"${OUTPUT_ENV} starts with '{{' but is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise OutputsError(f"${OUTPUT_ENV} holds JSON that is not an object")
    for name in value:
        problem = name_problem(name)
        if problem:
            raise OutputsError(f"${OUTPUT_ENV}: {problem}")
    return value
