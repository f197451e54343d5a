"""Steps that misbehave as processes (FAULTS.md 4, 7, 8, 9): a grandchild escaping into a session
of its own, exceptions that cannot cross a process boundary, outputs that are not JSON or too
big, and output by the hundred megabytes.  Real `runner run` processes, real workers, real files;
the runner's own peak memory is read from /proc/<pid>/status (VmHWM) while it is still running.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback, processes_with, wait_for
from faults_support import (  # noqa: F401
    Spawner,
    alive,
    kill_all,
    peak_rss_kb,
    printed_states,
    run_id_of,
    runner_text,
    show_json,
    spawn,
)

WritePipeline = Callable[..., Path]

LIB = r'''
import os
import subprocess
import threading
import time
from pathlib import Path


def publish(path, text):
    Path(path + ".tmp").write_text(text)
    os.replace(path + ".tmp", path)


def escape_python(folder):
    """A grandchild of the worker in a session of its own, left running."""
    child = subprocess.Popen(["sleep", "302"], start_new_session=True)
    publish(os.path.join(folder, "py.pid"), str(child.pid))
    return "left it"


def pause(folder, name):
    """Tell the test we are here, and wait until it says go."""
    publish(os.path.join(folder, name + ".ready"), str(os.getpid()))
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(folder, name + ".go")):
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.01)
    return name


class Locked(Exception):
    """Cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class TwoArgs(Exception):
    """Pickles, but cannot be unpickled: its __init__ wants two arguments."""

    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


class NoStr(Exception):
    def __str__(self):
        raise RuntimeError("str() of this exception fails too")


def deep_in_plugin_code(kind):
    if kind == "locked":
        raise Locked("holds a lock")
    if kind == "two_args":
        raise TwoArgs("left", "right")
    raise NoStr()


def raise_(kind):
    deep_in_plugin_code(kind)


def lambda_():
    return lambda: None


def generator():
    return (i for i in range(3))


def open_file():
    return open(__file__)


def nested_too_deep():
    value = []
    for _ in range(100_000):
        value = [value]
    return value


def huge(mib):
    return "x" * (mib * 1024 * 1024)
'''


def logs_of(run_cli: RunCli, run_id: str) -> dict[str, str]:
    result = run_cli("logs", run_id, "--json")
    assert result.code == 0, result.output
    found: dict[str, str] = json.loads(result.stdout)
    return found


# -- 4: a grandchild escaping with setsid ---------------------------------------------------------

ESCAPE = """
version: 1
name: escape
env:
  MARK: "{marker}"
params:
  dir: .
steps:
  - id: shell_escape
    uses: shell
    with:
      # `setsid` alone (a new session, pid known), and a double fork (the session leader exits,
      # its child is orphaned): both leave the step's process group and its session.  The step
      # ends only once the first has left (its session is its own and it runs `sleep`), or
      # stopping the step's group could catch it before it escaped.
      cmd: >-
        setsid sleep 300 & p=$!;
        until [ "$(cut -d' ' -f6 /proc/$p/stat)" = $p ] && grep -q '^Name:.sleep' /proc/$p/status;
        do sleep 0.01; done; echo $p > sh.pid;
        setsid sh -c 'sleep 301 & echo $! > double.pid';
        echo started
  - id: py_escape
    uses: python
    with: {{call: "lib:escape_python", args: ["{{{{ params.dir }}}}"]}}
  - id: after
    needs: [shell_escape, py_escape]
    uses: shell
    with:
      cmd: >-
        for f in sh.pid double.pid py.pid; do
        if kill -0 $(cat $f) 2>/dev/null && ! grep -q '^State:.*zombie' /proc/$(cat $f)/status;
        then echo "$f alive"; fi; done; echo checked
outputs:
  after: "{{{{ steps.after.output }}}}"
"""


@pytest.mark.fault(4)
def test_a_grandchild_escaping_with_setsid_is_killed_and_named_in_a_warning(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    marker = f"escape-{tmp_path.name}"
    try:
        escapes_are_killed_and_named(write_pipeline, run_cli, tmp_path, marker)
    finally:  # when the runner failed to, so that nothing outlives the test
        kill_all(processes_with(marker))


def escapes_are_killed_and_named(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path, marker: str
) -> None:
    path = write_pipeline(ESCAPE.format(marker=marker), files={"lib.py": LIB})
    result = run_cli(
        "run", str(path), "--progress", "plain", "--workers", "2", "--param", f"dir={tmp_path}",
        timeout=60,
    )  # fmt: skip
    assert result.code == 0, result.output
    assert no_traceback(runner_text(result.output)), result.output
    pids = {name: int((tmp_path / f"{name}.pid").read_text()) for name in ("sh", "double", "py")}
    # Killed when its step ended: the next step, started after, found none of them alive.
    assert '"after": "checked"' in result.stdout, result.stdout
    assert not [name for name, pid in pids.items() if alive(pid)], pids
    assert wait_for(lambda: not processes_with(marker), timeout=5), processes_with(marker)

    logs = logs_of(run_cli, run_id_of(result.stdout))
    shell_log, py_log = logs["shell_escape"], logs["py_escape"]
    warning = re.search(
        r"^\[runner\] warning: killed processes it left running: .*",
        shell_log,
        re.M,
    )
    assert warning, shell_log
    # Named by pid and command line (or only the program, read right after its exec).
    for name, seconds in (("sh", 300), ("double", 301)):
        assert re.search(rf"\b{pids[name]} \(sleep( {seconds})?\)", warning.group()), shell_log
    assert re.search(rf"\[runner\] warning: .*\b{pids['py']} \(sleep( 302)?\)", py_log), py_log


# -- 7: exceptions that cannot cross a process boundary -----------------------------------------

UNPICKLABLE = """
version: 1
name: unpicklable
steps:
  - {id: locked, uses: python, priority: 9, with: {call: "lib:raise_", args: [locked]}}
  - {id: two_args, uses: python, priority: 8, with: {call: "lib:raise_", args: [two_args]}}
  - {id: no_str, uses: python, priority: 7, with: {call: "lib:raise_", args: [no_str]}}
  - id: later
    for_each: [a, b, c]
    uses: shell
    with: {cmd: "echo {{ item }}"}
outputs:
  later: "{{ steps.later.output }}"
"""


@pytest.mark.fault(7)
def test_exceptions_that_cannot_be_pickled_fail_their_step_with_type_message_and_traceback(
    write_pipeline: WritePipeline, run_cli: RunCli
) -> None:
    path = write_pipeline(UNPICKLABLE, files={"lib.py": LIB})
    # One worker: the steps after the bad ones can only run if the same pool goes on.
    result = run_cli("run", str(path), "--progress", "plain", "--workers", "1", timeout=60)
    assert result.code == 1, result.output
    assert no_traceback(runner_text(result.output)), result.output
    assert "[crash]" not in result.stdout and "worker process died" not in result.stdout
    states = printed_states(result.stdout)
    assert {k: states[k] for k in ("locked", "two_args", "no_str")} == dict.fromkeys(
        ("locked", "two_args", "no_str"), "failed"
    )
    assert {states[f"later.{k}"] for k in "abc"} == {"succeeded"}

    run_id = run_id_of(result.stdout)
    errors = {s["step_id"]: s["error"] for s in show_json(run_cli, run_id)["steps"]}
    assert errors["locked"] == "Locked: holds a lock"
    assert errors["two_args"] == "TwoArgs: left and right"
    assert errors["no_str"].startswith("NoStr: ")
    logs = logs_of(run_cli, run_id)
    for step, kind in (("locked", "Locked"), ("two_args", "TwoArgs"), ("no_str", "NoStr")):
        log = logs[step]
        # The formatted traceback, down to the line of the step's code that raised.
        assert "Traceback (most recent call last)" in log, log
        assert re.search(r'lib\.py", line \d+, in deep_in_plugin_code', log), log
        assert f"lib.{kind}" in log, log
        assert "pipeline_runner" not in log, log  # the runner's own frames are left out


# -- 8: outputs that are not JSON, or too big ------------------------------------------------------

OUTPUTS = """
version: 1
name: outputs
params:
  dir: .
steps:
  - id: first
    uses: python
    priority: 9
    with: {{call: "lib:pause", args: ["{{{{ params.dir }}}}", first]}}
  - {{id: a_lambda, uses: python, with: {{call: "lib:lambda_"}}}}
  - {{id: a_generator, uses: python, with: {{call: "lib:generator"}}}}
  - {{id: an_open_file, uses: python, with: {{call: "lib:open_file"}}}}
  - {{id: too_deep, uses: python, with: {{call: "lib:nested_too_deep"}}}}
  - {{id: huge_return, uses: python, with: {{call: "lib:huge", args: [{mib}]}}}}
  - id: huge_stdout
    uses: shell
    with: {{cmd: "head -c {bytes} /dev/zero | tr '\\\\0' x"}}
  - id: probe
    uses: python
    priority: -9
    with: {{call: "lib:pause", args: ["{{{{ params.dir }}}}", probe]}}
"""
BIG_MIB = 48


@pytest.mark.fault(8)
def test_outputs_that_are_not_json_or_too_big_fail_saying_what_and_the_runner_stays_flat(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    spawn: Spawner,  # noqa: F811
) -> None:
    path = write_pipeline(
        OUTPUTS.format(mib=BIG_MIB, bytes=BIG_MIB * 1024 * 1024), files={"lib.py": LIB}
    )
    # One worker, so `first` runs before the big outputs and `probe` after all of them.
    run = spawn(
        "run", str(path), "--progress", "plain", "--workers", "1", "--param", f"dir={tmp_path}"
    )
    assert wait_for((tmp_path / "first.ready").exists, timeout=60), "first never ran"
    before = peak_rss_kb(run.pid)  # imports, plan and store are all done by now
    (tmp_path / "first.go").write_text("")
    assert wait_for((tmp_path / "probe.ready").exists, timeout=120), "probe never ran"
    after = peak_rss_kb(run.pid)
    (tmp_path / "probe.go").write_text("")
    stdout, stderr = run.proc.communicate(timeout=60)
    assert run.proc.returncode == 1, stdout + stderr
    assert no_traceback(runner_text(stdout + stderr)), stdout + stderr

    # Two outputs of 48 MiB went through the workers; none of it through the runner.
    assert after - before < 16 * 1024, (before, after)
    errors = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\S+ \S+ failed\s+(\S+) \([\d.]+s\): (.*)$", stdout, re.M)
    }
    assert set(errors) == {
        "a_lambda", "a_generator", "an_open_file", "too_deep", "huge_return", "huge_stdout"
    }, stdout  # fmt: skip
    assert errors["a_lambda"].startswith("output is not JSON-serialisable (function)")
    assert errors["a_generator"].startswith("output is not JSON-serialisable (generator)")
    assert errors["an_open_file"].startswith("output is not JSON-serialisable (TextIOWrapper)")
    assert errors["too_deep"].startswith("output is not JSON-serialisable (list)")
    size = BIG_MIB * 1024 * 1024 + 2  # the string and its quotes
    assert errors["huge_return"] == (
        f"output is {size:,} bytes of JSON, over the limit of {16 * 1024 * 1024:,}"
    )
    assert "larger than 16 MiB" in errors["huge_stdout"], errors["huge_stdout"]
    assert printed_states(stdout)["probe"] == "succeeded"


def test_a_shell_step_with_too_much_stdout_says_how_big(
    write_pipeline: WritePipeline, run_cli: RunCli
) -> None:
    path = write_pipeline(
        "version: 1\nname: p\nsteps:\n  - id: big\n    uses: shell\n"
        "    with: {cmd: \"head -c 20000000 /dev/zero | tr '\\\\0' x\"}\n"
    )
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 1, result.output
    assert re.search(r"20,000,000 bytes|19\.\d MiB", result.stdout), result.stdout


# -- 9: a step printing hundreds of megabytes, or one endless line --------------------------------

# FAULTS.md says 1 GB; 300 MB keeps the suite fast and is still past the 256 MiB log limit, so
# the cut and its marker are exercised.  The endless line is 24 MB without a single newline.
FLOOD = """
version: 1
name: flood
params:
  dir: .
steps:
  - id: first
    uses: python
    priority: 9
    with: {{call: "lib:pause", args: ["{{{{ params.dir }}}}", first]}}
  - id: flood
    uses: shell
    with:
      cmd: "{{ yes 'a line of text, again and again' | head -c {flood}; echo; }} >&2; echo end"
  - id: one_line
    uses: shell
    with: {{cmd: "head -c {line} /dev/zero | tr '\\\\0' y >&2; exit 5"}}
  - id: probe
    uses: python
    priority: -9
    with: {{call: "lib:pause", args: ["{{{{ params.dir }}}}", probe]}}
"""
FLOOD_BYTES = 300_000_000
LINE_BYTES = 24_000_000
LOG_LIMIT = 256 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.fault(9)
def test_a_step_printing_hundreds_of_megabytes_costs_the_runner_no_memory(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    spawn: Spawner,  # noqa: F811
) -> None:
    path = write_pipeline(FLOOD.format(flood=FLOOD_BYTES, line=LINE_BYTES), files={"lib.py": LIB})
    run = spawn(
        "run", str(path), "--progress", "plain", "--workers", "1", "--param", f"dir={tmp_path}"
    )
    assert wait_for((tmp_path / "first.ready").exists, timeout=60), "first never ran"
    before = peak_rss_kb(run.pid)
    (tmp_path / "first.go").write_text("")
    assert wait_for((tmp_path / "probe.ready").exists, timeout=120), "probe never ran"
    after = peak_rss_kb(run.pid)
    (tmp_path / "probe.go").write_text("")
    stdout, stderr = run.proc.communicate(timeout=60)
    assert run.proc.returncode == 1, stdout + stderr
    assert after - before < 16 * 1024, (before, after)

    states = printed_states(stdout)
    assert (states["flood"], states["one_line"]) == ("succeeded", "failed"), stdout
    # The terminal shows a capped tail of the failed step's log: no 24 MB line on it.
    assert len(stdout) + len(stderr) < 32 * 1024, len(stdout) + len(stderr)
    tail = [line for line in stdout.splitlines() if line.lstrip().startswith("| ")]
    assert tail and all(len(line) <= 420 for line in tail), [len(line) for line in tail]
    assert "yyyy" in tail[0]

    logs = tmp_path / "state" / "runs" / run_id_of(stdout) / "logs"
    flood_log = logs / "flood.log"
    try:
        assert LOG_LIMIT < flood_log.stat().st_size < LOG_LIMIT + 4096
        with open(flood_log, "rb") as f:
            f.seek(-200, 2)
            end = f.read().decode()
        assert f"[log cut at {LOG_LIMIT:,} bytes]" in end, end
        assert re.search(r"\[[\d,]+ more bytes not written\]\n$", end), end
        line_log = (logs / "one_line.log").read_bytes()
        assert line_log.count(b"y") == LINE_BYTES  # under the limit: written whole
    finally:
        flood_log.unlink(missing_ok=True)  # a quarter of a gigabyte
