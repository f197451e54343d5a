"""A pool worker's per-attempt shortcuts (worker.py): after a `noop` attempt it does not ask the
kernel for its working folder nor look for a named-outputs file.  Whatever an attempt changed
(its folder, its outputs) must still be put right for the next one, shortcuts on and off."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

PIPELINE = """
version: 1
name: shortcuts
steps:
  - id: wander
    uses: python
    with: {call: "mod:wander"}
  - id: rest1
    needs: wander
    uses: noop
  - id: rest2
    needs: rest1
    uses: noop
  - id: where
    needs: rest2
    uses: python
    with: {call: "mod:where"}
  - id: rest3
    needs: where
    uses: noop
  - id: after
    needs: rest3
    uses: python
    with: {call: "mod:where"}
"""

MOD = """
import os


def wander():
    os.makedirs("elsewhere", exist_ok=True)
    os.chdir("elsewhere")  # left there: the next attempt must not start here
    with open(os.environ["RUNNER_OUTPUT"], "w") as f:
        f.write("went=yes\\n")


def where():
    with open(os.environ["RUNNER_OUTPUT"], "w") as f:
        f.write("seen=" + os.path.basename(os.environ["RUNNER_OUTPUT"]) + "\\n")
    return os.getcwd()
"""


@pytest.mark.parametrize("plain", ["", "1"], ids=["shortcuts", "plain"])
def test_noop_attempts_between_steps_keep_the_folder_and_the_outputs_right(
    run_cli: RunCli,
    write_pipeline: Callable[..., Path],
    tmp_path: Path,
    plain: str,
) -> None:
    path = write_pipeline(PIPELINE, files={"mod.py": MOD})
    summary = tmp_path / "s.json"
    result = run_cli(
        "run",
        str(path),
        "--workers",
        "1",
        "--json",
        str(summary),
        env={"PIPELINE_RUNNER_NO_SHORTCUTS": plain},
    )
    assert result.code == 0 and no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert steps["wander"]["outputs"] == {"went": "yes"}
    for sid in ("where", "after"):
        assert steps[sid]["output"] == str(tmp_path), steps[sid]
        # Plain: a file per attempt; the shortcut: one file per worker, emptied between attempts.
        assert steps[sid]["outputs"] == {"seen": "w0" if not plain else f"{sid}.1"}
    for sid in ("rest1", "rest2", "rest3"):
        assert steps[sid]["state"] == "succeeded" and not steps[sid]["outputs"], steps[sid]


REPLACED = """
version: 1
name: outputs-file
steps:
  - id: moved
    uses: shell
    with: {cmd: 'echo tmp=1 > t && mv t "$RUNNER_OUTPUT"'}
  - id: quiet
    needs: moved
    uses: python
    with: {call: "mod:quiet"}
  - id: removed
    needs: quiet
    uses: shell
    with: {cmd: 'echo gone=1 >> "$RUNNER_OUTPUT" && rm "$RUNNER_OUTPUT"'}
  - id: again
    needs: removed
    uses: shell
    with: {cmd: 'echo d=4 >> "$RUNNER_OUTPUT"'}
  - id: whole
    needs: again
    uses: python
    with: {call: "mod:whole"}
  - id: retried
    needs: whole
    uses: python
    with: {call: "mod:flaky"}
    retries: {max: 1, delay: 0s}
"""

REPLACED_MOD = """
import os


def quiet():
    return None


def whole():
    with open(os.environ["RUNNER_OUTPUT"], "w") as f:
        f.write('{"n": 2, "tags": ["a"]}')


def flaky(ctx):
    with open(os.environ["RUNNER_OUTPUT"], "a") as f:
        f.write(f"try{ctx.attempt}=yes\\n")
    if ctx.attempt == 1:
        raise RuntimeError("first try fails")
"""


@pytest.mark.parametrize("plain", ["", "1"], ids=["shortcuts", "plain"])
def test_an_outputs_file_replaced_or_removed_by_a_step_is_read_and_made_again(
    run_cli: RunCli,
    write_pipeline: Callable[..., Path],
    tmp_path: Path,
    plain: str,
) -> None:
    """A step that replaces (`mv`) or removes its outputs file is read by name; the next step
    starts with an empty file, and so does a retry (what the failed try wrote is not kept)."""
    path = write_pipeline(REPLACED, files={"mod.py": REPLACED_MOD})
    summary = tmp_path / "s.json"
    state = tmp_path / "state"
    result = run_cli(
        "run",
        str(path),
        "--workers",
        "1",
        "--state-dir",
        str(state),
        "--json",
        str(summary),
        env={"PIPELINE_RUNNER_NO_SHORTCUTS": plain},
    )
    assert result.code == 0 and no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert steps["moved"]["outputs"] == {"tmp": "1"}
    assert not steps["quiet"]["outputs"]
    assert not steps["removed"]["outputs"]
    assert steps["again"]["outputs"] == {"d": "4"}
    assert steps["whole"]["outputs"] == {"n": 2, "tags": ["a"]}
    assert steps["retried"]["outputs"] == {"try2": "yes"}
    if not plain:  # the worker ended normally: it leaves no outputs file behind
        assert not [p for p in state.rglob(".outputs/*") if p.is_file()]


STDOUT = """
version: 1
name: stdout
steps:
  - {id: closes, uses: python, with: {call: "mod:closes"}}
  - {id: after_close, needs: closes, uses: python, with: {call: "mod:say", args: [two]}}
  - {id: strict, needs: after_close, uses: python, with: {call: "mod:strict"}}
  - {id: odd, needs: strict, uses: python, with: {call: "mod:odd"}}
  - {id: detaches, needs: odd, uses: python, with: {call: "mod:detaches"}}
  - {id: last, needs: detaches, uses: python, with: {call: "mod:say", args: [four]}}
"""

STDOUT_MOD = """
import sys


def say(word):
    print(word)


def closes():
    print("one")
    sys.stdout.close()


def strict():
    sys.stdout.reconfigure(errors="strict")
    print("three")


def odd():
    print("bad \\udc80 byte")  # unencodable: replaced, as the step's own stream does


def detaches():
    sys.stdout.detach()
"""


@pytest.mark.parametrize("plain", ["", "1"], ids=["shortcuts", "plain"])
def test_a_step_that_closes_or_changes_its_stdout_leaves_the_next_step_a_good_one(
    run_cli: RunCli,
    write_pipeline: Callable[..., Path],
    tmp_path: Path,
    plain: str,
) -> None:
    """Every attempt prints to a fresh, working sys.stdout, whatever the attempt before it on
    the same worker did to its own (closed, reconfigured, detached)."""
    path = write_pipeline(STDOUT, files={"mod.py": STDOUT_MOD})
    summary = tmp_path / "s.json"
    env = {"PIPELINE_RUNNER_NO_SHORTCUTS": plain}
    result = run_cli("run", str(path), "--workers", "1", "--json", str(summary), env=env)
    assert result.code == 0 and no_traceback(result.output), result.output
    report = json.loads(summary.read_text())
    steps = {s["id"]: s for s in report["steps"]}
    assert len({s["worker"] for s in steps.values()}) == 1, steps
    expected = {"closes": "one", "after_close": "two", "strict": "three", "last": "four"}
    for sid, word in {**expected, "odd": "bad ? byte"}.items():
        logs = run_cli("logs", report["run_id"], sid, env=env)
        assert logs.code == 0 and word in logs.stdout, (sid, logs.output)


HANDLERS = """
version: 1
name: handlers
steps:
  - {id: by_signal, uses: python, with: {call: "mod:by_signal"}}
  - {id: seen1, needs: by_signal, uses: python, with: {call: "mod:seen"}}
  - {id: by_c_module, needs: seen1, uses: python, with: {call: "mod:by_c_module"}}
  - {id: seen2, needs: by_c_module, uses: python, with: {call: "mod:seen"}}
  - {id: plain, needs: seen2, uses: python, with: {call: "mod:seen"}}
"""

HANDLERS_MOD = """
import signal


def by_signal():
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def by_c_module():
    from _signal import SIG_IGN, SIGUSR2, signal as set_handler

    set_handler(SIGUSR2, SIG_IGN)


def seen():
    return [signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,
            signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL]
"""


@pytest.mark.parametrize("plain", ["", "1"], ids=["shortcuts", "plain"])
def test_a_signal_handler_a_step_set_is_put_back_however_it_was_set(
    run_cli: RunCli,
    write_pipeline: Callable[..., Path],
    tmp_path: Path,
    plain: str,
) -> None:
    """A handler set with signal.signal or with the C module's own function is undone before
    the next attempt on the same worker (the shortcut compares the handlers only after an
    attempt that set one)."""
    path = write_pipeline(HANDLERS, files={"mod.py": HANDLERS_MOD})
    summary = tmp_path / "s.json"
    env = {"PIPELINE_RUNNER_NO_SHORTCUTS": plain}
    result = run_cli("run", str(path), "--workers", "1", "--json", str(summary), env=env)
    assert result.code == 0 and no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert len({s["worker"] for s in steps.values()}) == 1, steps
    for sid in ("seen1", "seen2", "plain"):
        assert steps[sid]["output"] == [True, True], (sid, steps[sid])


LATE = """
version: 1
name: late-writer
steps:
  # Its own outputs may be read while that process writes a line (a cut line fails it).
  - {id: leaves, uses: python, continue_on_error: true, with: {call: "mod:leaves"}}
  - {id: next, needs: leaves, uses: python, with: {call: "mod:nothing"}}
  - {id: again, needs: next, uses: python, with: {call: "mod:nothing"}}
"""

LATE_MOD = """
import os
import subprocess
import time


def leaves():
    # A process left running that keeps writing outputs, after this attempt's were read too.
    subprocess.Popen(["sh", "-c", 'while :; do echo late=1 >> "$RUNNER_OUTPUT"; done'])
    time.sleep(0.2)


def nothing():
    return None
"""


@pytest.mark.parametrize("plain", ["", "1"], ids=["shortcuts", "plain"])
def test_outputs_a_leftover_process_wrote_are_not_the_next_steps(
    run_cli: RunCli,
    write_pipeline: Callable[..., Path],
    tmp_path: Path,
    plain: str,
) -> None:
    """A process a step left running, killed by its worker, may still have written to the
    outputs file after the step's outputs were read: the next step on that worker starts with
    an empty file (the shortcut skips that look only when the attempt before left nothing)."""
    path = write_pipeline(LATE, files={"mod.py": LATE_MOD})
    summary = tmp_path / "s.json"
    env = {"PIPELINE_RUNNER_NO_SHORTCUTS": plain}
    result = run_cli("run", str(path), "--workers", "1", "--json", str(summary), env=env)
    assert no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert len({s["worker"] for s in steps.values()}) == 1, steps
    for sid in ("next", "again"):
        assert steps[sid]["state"] == "succeeded" and not steps[sid]["outputs"], steps[sid]
