"""Secrets: a declared secret never appears in plain text anywhere the runner writes or prints,
whatever form a step gives it, and never on a process's command line.

The leak check reads back everything: every file under the state folder (the SQLite store, its
WAL, logs), every report file, stdout and stderr of every command, and looks for the raw value
and its base64, URL-encoded and JSON-escaped forms, and each line of a multi-line secret; and for
partial leaks: any 8 bytes of a secret, in the text as it is, URL-decoded or base64-decoded.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback, processes_with, wait_for
from test_engine import marker, popen, runner_text, start_runner  # noqa: F401

WritePipeline = Callable[..., Path]

TOKEN = "tok_9f8e7d6c5b4a/+=é&x?"
MULTI_LINES = ["-----BEGIN KEY-----", "c2VjcmV0LWtleS1taWRkbGUtbGluZQ", "-----END KEY-----"]
MULTI = "\n".join(MULTI_LINES)


def forms(value: str) -> set[str]:
    raw = value.encode()
    encoded = base64.b64encode(raw).decode()
    out = {
        value,
        encoded,
        encoded.rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        json.dumps(value)[1:-1],
        # `base64` (coreutils) wraps at 76 columns: each full line decodes to 57 secret bytes
        *(encoded[i : i + 76] for i in range(0, len(encoded) - 75, 76)),
    }
    return {f for f in out if len(f) >= 4}


FORMS = forms(TOKEN) | forms(MULTI) | set().union(*(forms(line) for line in MULTI_LINES))

LIB = r'''
import os
import sys
import time


def dribble():
    """The secret one character at a time, flushed after each."""
    for ch in os.environ["API_TOKEN"]:
        sys.stdout.write(ch)
        sys.stdout.flush()
        time.sleep(0.005)
    sys.stdout.write("\n")
    return "dribbled"


def explode():
    raise RuntimeError("could not log in with " + os.environ["API_TOKEN"])


def give(token):
    return {"token": token, "note": "the argument was " + token}


def middle_line():
    print("middle:", os.environ["MULTI_KEY"].splitlines()[1])


def wait_with(token, folder):
    open(os.path.join(folder, "py.started"), "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(folder, "release")) and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(token)
'''

LEAKY = r"""
version: 1
name: leaky
secrets: [API_TOKEN, MULTI_KEY]
steps:
  - id: plain
    uses: shell
    with: {cmd: 'echo "$API_TOKEN"; echo "token=$API_TOKEN" >&2'}
  - id: templated
    uses: shell
    with: {cmd: "echo templated {{ secrets.API_TOKEN }} done"}
  - id: b64
    uses: shell
    with: {cmd: 'printf %s "$API_TOKEN" | base64'}
  - id: urlencoded
    uses: shell
    with:
      cmd: >-
        python3 -c 'import os, urllib.parse as u; t = os.environ["API_TOKEN"];
        print(u.quote(t, safe="")); print(u.quote_plus(t))'
  - id: shell_dribble
    uses: shell
    with:
      cmd: >-
        python3 -c 'import os, sys, time;
        [(sys.stdout.write(c), sys.stdout.flush(), time.sleep(0.005))
        for c in os.environ["API_TOKEN"]]'
  - id: dribble
    uses: python
    with: {call: "lib:dribble"}
  - id: explode
    uses: python
    with: {call: "lib:explode"}
  - id: give
    uses: python
    with: {call: "lib:give", args: ["{{ secrets.API_TOKEN }}"]}
  - id: echo_output
    needs: give
    uses: shell
    with: {cmd: "echo {{ steps.give.output.note }}"}
  - id: middle
    uses: python
    with: {call: "lib:middle_line"}
  - id: multi_shell
    uses: shell
    with: {cmd: 'printf "%s\n" "$MULTI_KEY"'}
  - id: multi_b64
    uses: shell
    with: {cmd: 'printf %s "$MULTI_KEY" | base64'}
outputs:
  given: "{{ steps.give.output }}"
"""


def secret_env(**extra: str) -> dict[str, str]:
    return {"API_TOKEN": TOKEN, "MULTI_KEY": MULTI, **extra}


# Partial leaks count too: any 8 bytes in a row of a secret (each line of the multi-line one),
# seen in the text as it is, URL-decoded, or base64-decoded (wrapped or not, at any alignment).
WINDOW = 8
PIECES = {
    value.encode()[i : i + WINDOW]
    for value in (TOKEN, *MULTI_LINES)
    for i in range(len(value.encode()) - WINDOW + 1)
}
B64_RUN = re.compile(rb"[A-Za-z0-9+/]{8,}")


def decoded(data: bytes) -> Iterator[bytes]:
    yield data
    yield urllib.parse.unquote_to_bytes(data.replace(b"+", b" "))
    for run in B64_RUN.findall(data.replace(b"\r", b"").replace(b"\n", b"")):
        for offset in range(4):
            part = run[offset:]
            part = part[: len(part) // 4 * 4]
            yield base64.b64decode(part)


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    found = {f for f in FORMS if f.encode() in data}
    for view in decoded(data):
        found |= {repr(p) for p in PIECES if p in view}
    return sorted(found)


def files_under(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file())


@pytest.mark.fault(34)
@pytest.mark.slow
def test_a_secret_shows_nowhere_in_any_form(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(LEAKY, files={"lib.py": LIB})
    reports = tmp_path / "reports"
    reports.mkdir()
    env = secret_env()
    result = run_cli(
        "run", str(path), "--progress", "plain", "--workers", "2",
        "--json", str(reports / "summary.json"), "--junit", str(reports / "junit.xml"),
        "--events", str(reports / "events.jsonl"), "--trace", str(reports / "trace.json"),
        env=env,
    )  # fmt: skip
    assert result.code == 1, result.output  # `explode` fails, on purpose
    assert no_traceback(runner_text(result.output))
    assert "***" in result.stdout
    printed = [result.stdout, result.stderr]

    summary = json.loads((reports / "summary.json").read_text())
    steps = {s["id"]: s for s in summary["steps"]}
    assert set(steps) - {"explode"} == {
        sid for sid, s in steps.items() if s["state"] == "succeeded"
    }, {sid: (s["state"], s["error"]) for sid, s in steps.items()}
    assert steps["explode"]["error"] == "RuntimeError: could not log in with ***"
    assert steps["give"]["output"]["token"] == "***"

    run_id = summary["run_id"]
    for args in (
        ("show", run_id),
        ("show", run_id, "--json"),
        ("logs", run_id),
        ("logs", run_id, "--json"),
        ("runs", "--json"),
        ("run", str(path), "--dry-run"),
        ("graph", str(path)),
        ("graph", str(path), "--json"),
    ):
        shown = run_cli(*args, env=env)
        assert shown.code == 0, (args, shown.output)
        printed += [shown.stdout, shown.stderr]
    logs = json.loads(run_cli("logs", run_id, "--json").stdout)
    # The steps did print their secret, in every form, and the log shows where it was masked.
    masked = ("plain", "templated", "b64", "urlencoded", "dribble", "shell_dribble", "middle")
    for step in (*masked, "multi_shell", "multi_b64"):
        assert "***" in logs[step], (step, logs[step])
    assert "templated *** done" in logs["templated"]

    for index, text in enumerate(printed):
        assert not leaks(text), (index, leaks(text), text)
    written = list(files_under(tmp_path / "state")) + list(files_under(reports))
    assert any(p.name == "runs.db" for p in written)
    for file in written:
        assert not leaks(file.read_bytes()), (file, leaks(file.read_bytes()))


ON_ARGV = """
version: 1
name: on-argv
secrets: [API_TOKEN]
env:
  MARK: "__MARK__"
params:
  dir: .
steps:
  - id: sh
    uses: shell
    with:
      cmd: >-
        T={{ secrets.API_TOKEN }}; touch sh.started;
        while [ ! -e release ]; do sleep 0.05; done; test -n "$T" && echo waited
  - id: py
    uses: python
    with: {call: "lib:wait_with", args: ["{{ secrets.API_TOKEN }}", "{{ params.dir }}"]}
"""


@pytest.mark.fault(34)
def test_a_secret_is_never_on_a_command_line(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    marker: str,  # noqa: F811
    popen: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    path = write_pipeline(ON_ARGV.replace("__MARK__", marker), files={"lib.py": LIB})
    proc = start_runner(
        tmp_path, path, "--workers", "2", "--param", f"dir={tmp_path}",
        env={"MARK": marker, "API_TOKEN": TOKEN},
    )  # fmt: skip
    popen.append(proc)
    seen: dict[int, bytes] = {}

    def look() -> bool:
        for pid in processes_with(marker):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    seen[pid] = f.read()
            except OSError:
                continue
        return (tmp_path / "sh.started").exists() and (tmp_path / "py.started").exists()

    assert wait_for(look, timeout=60), "the steps never started"
    # Until every process has been seen once (the sleeps of the loop come and go; on a busy
    # machine a few passes over /proc can miss them); the assertion below says if one is not.
    wait_for(lambda: look() and len(seen) >= 5, timeout=30)
    (tmp_path / "release").write_text("")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout + stderr
    assert len(seen) >= 5, seen  # runner, forkserver, workers, sh and its sleep
    assert any(b"/bin/sh" in cmd for cmd in seen.values()), seen
    for pid, cmd in seen.items():
        assert not leaks(cmd), (pid, cmd)
    assert not leaks(stdout + stderr)


MISSING = """
version: 1
name: missing
secrets: [API_TOKEN]
steps:
  - id: touch
    uses: shell
    with: {cmd: "touch RAN"}
"""


def test_a_missing_secret_fails_before_anything_runs(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(MISSING)
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 2, result.output
    assert "API_TOKEN" in result.stderr and "missing" in result.stderr
    assert no_traceback(result.output)
    assert not (tmp_path / "RAN").exists()
    assert not (tmp_path / "state" / "runs.db").exists()  # not even a run record


@pytest.mark.parametrize("value", ["", "a", "abc"])
def test_a_secret_shorter_than_4_characters_is_refused(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path, value: str
) -> None:
    path = write_pipeline(MISSING)
    result = run_cli("run", str(path), "--progress", "plain", env={"API_TOKEN": value})
    assert result.code == 2, result.output
    assert "API_TOKEN" in result.stderr and "4" in result.stderr
    assert no_traceback(result.output)
    assert not (tmp_path / "RAN").exists()


FROM_FILE = """
version: 1
name: from-file
secrets: [API_TOKEN]
steps:
  - id: check
    uses: shell
    with: {cmd: 'echo "$API_TOKEN"; test "$API_TOKEN" = "$EXPECTED" && echo matches'}
"""


def test_secrets_file_provides_the_values(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(FROM_FILE)
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"API_TOKEN: {json.dumps(TOKEN)}\n")
    result = run_cli(
        "run", str(path), "--progress", "plain", "--secrets-file", str(secrets),
        env={"EXPECTED": TOKEN},
    )  # fmt: skip
    assert result.code == 0, result.output
    assert not leaks(result.output)
    run_id = json.loads(run_cli("runs", "--json").stdout)[0]["id"]
    (step,) = json.loads(run_cli("show", run_id, "--json").stdout)["steps"]
    assert step["output"] == "***\nmatches"
    for file in files_under(tmp_path / "state"):
        assert not leaks(file.read_bytes()), file


IN_ARGV_LIST = """
version: 1
name: in-argv-list
secrets: [API_TOKEN]
steps:
  - id: leak
    uses: shell
    with: {cmd: ["echo", "{{ secrets.API_TOKEN }}"]}
"""


def test_a_secret_in_an_argv_list_is_refused_with_a_clear_error(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(IN_ARGV_LIST)
    result = run_cli("run", str(path), "--progress", "plain", env={"API_TOKEN": TOKEN})
    assert result.code in (1, 2), result.output
    assert "secrets.API_TOKEN" in result.output and "argv" in result.output
    assert no_traceback(runner_text(result.output))
    assert not leaks(result.output)


def test_a_secret_in_an_argv_list_is_found_by_validate(
    write_pipeline: WritePipeline, run_cli: RunCli
) -> None:
    path = write_pipeline(IN_ARGV_LIST)
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    assert "steps[0].with.cmd[1]" in result.stderr and "argv" in result.stderr
