"""Gaps found by the reference model (tests/test_model.py): `--fail-fast` and `finally` steps,
`--fail-fast` and a step with retries left that fails as the run is being cancelled, and the
outputs and `--json` summary of `runner resume --only`.

Each test drives the real `runner` command with real worker processes and a real run store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import RunCli, no_traceback, processes_with, runner_executable, user_env, wait_for

WritePipeline = Callable[..., Path]


def summary(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def by_id(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(s.get("id", s.get("step_id"))): s for s in data["steps"]}


# -- fail-fast never cancels a `finally` step ------------------------------------------------

# `slow_cleanup` goes on only once the runner has recorded `fails` as failed (in the events
# file, flushed every turn): with the gap, fail-fast stopped it at that very moment.
FINALLY = """
version: 1
name: cleanup
steps:
  - id: main
    uses: shell
    with: {cmd: "true"}
finally:
  - id: slow_cleanup
    uses: shell
    with:
      cmd: >-
        until grep -q '"step": "fails", "state": "failed"' events.jsonl 2>/dev/null;
        do sleep 0.01; done; echo cleaned
  - id: fails
    uses: shell
    with: {cmd: "exit 1"}
"""


def test_a_failing_finally_step_does_not_cancel_the_others_with_fail_fast(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(FINALLY)
    result = run_cli(
        "run", str(path), "--fail-fast", "--workers", "2", "--progress", "plain",
        "--events", "events.jsonl", "--json", "run.json", "--grace", "1",
    )  # fmt: skip
    assert result.code == 1, result.output
    steps = by_id(summary(tmp_path / "run.json"))
    assert steps["slow_cleanup"]["state"] == "succeeded", steps["slow_cleanup"]
    assert steps["slow_cleanup"]["output"] == "cleaned"
    assert steps["fails"]["state"] == "failed"
    assert steps["main"]["state"] == "succeeded"
    assert summary(tmp_path / "run.json")["status"] == "failed"


# `slow` is running when `bad` fails: fail-fast cancels it. `report` needs it (for its state
# only) and `retried` fails once: both run to their end, the retry included.
AFTER_CANCEL = """
version: 1
name: after-cancel
steps:
  - id: slow
    uses: shell
    with: {cmd: "touch slow.started; exec sleep 60"}
  - id: bad
    uses: shell
    with: {cmd: "until [ -f slow.started ]; do sleep 0.005; done; exit 1"}
finally:
  - id: report
    needs: slow
    uses: shell
    with: {cmd: "echo slow was {{ steps.slow.state }}"}
  - id: retried
    uses: shell
    retries: {max: 1, delay: 0}
    with: {cmd: "if [ -f tried ]; then echo second; else touch tried; exit 1; fi"}
"""


def test_finally_steps_run_to_their_end_after_fail_fast_cancelled_the_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(AFTER_CANCEL)
    result = run_cli(
        "run", str(path), "--fail-fast", "--workers", "2", "--progress", "plain",
        "--json", "run.json", "--grace", "1",
    )  # fmt: skip
    assert result.code == 1, result.output
    steps = by_id(summary(tmp_path / "run.json"))
    assert (steps["slow"]["state"], steps["bad"]["state"]) == ("cancelled", "failed")
    assert steps["report"]["state"] == "succeeded", steps["report"]
    assert steps["report"]["output"] == "slow was cancelled"
    assert (steps["retried"]["state"], steps["retried"]["attempts"]) == ("succeeded", 2)
    assert steps["retried"]["output"] == "second"


# -- fail-fast: a failure that comes as the run is being cancelled ---------------------------

# Both steps wait for the file `go` and then fail. The test stops the runner (SIGSTOP) once
# both have started, creates `go`, waits until both commands have ended, and lets the runner
# go on: it then reads both failures at once, `other`'s first (it came first in the file, so it
# took the first worker, whose news is read first), and fail-fast cancels the run before it
# handles `flaky`'s. `flaky` has retries left; its later attempts wait until they are stopped.
RACE = """
version: 1
name: race
steps:
  - id: other
    uses: shell
    with:
      cmd: >-
        touch other.started; until [ -f go ]; do sleep 0.005; done; exit 1
  - id: flaky
    uses: shell
    retries: {max: 2, delay: 0}
    with:
      cmd: >-
        if [ -f flaky.tried ]; then exec sleep 60; fi; touch flaky.tried flaky.started;
        until [ -f go ]; do sleep 0.005; done; exit 1
"""
STARTED = ("other.started", "flaky.started")


def start_race(tmp_path: Path, path: Path, report: Path) -> subprocess.Popen[str]:
    for name in ("go", "flaky.tried", *STARTED):
        (tmp_path / name).unlink(missing_ok=True)
    env = user_env()
    env.pop("GITHUB_ACTIONS", None)
    env["PIPELINE_RUNNER_STATE_DIR"] = str(tmp_path / "state")
    args = ["run", str(path), "--fail-fast", "--workers", "2", "--progress", "none"]
    return subprocess.Popen(
        [runner_executable(), *args, "--grace", "1", "--json", str(report)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def fail_both_while_stopped(tmp_path: Path, pid: int) -> None:
    assert wait_for(lambda: all((tmp_path / n).exists() for n in STARTED), timeout=60)
    os.kill(pid, signal.SIGSTOP)
    try:
        (tmp_path / "go").touch()
        assert wait_for(lambda: not any(processes_with(n) for n in STARTED), timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)


def race_once(tmp_path: Path, path: Path, round_: int) -> dict[str, dict[str, Any]]:
    report = tmp_path / f"race{round_}.json"
    proc = start_race(tmp_path, path, report)
    try:
        fail_both_while_stopped(tmp_path, proc.pid)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out
    assert no_traceback(out), out
    return by_id(summary(report))


def test_a_failure_with_retries_left_as_fail_fast_cancels_is_cancelled(
    write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(RACE)
    for round_ in range(5):
        steps = race_once(tmp_path, path, round_)
        flaky, other = steps["flaky"], steps["other"]
        assert other["state"] == "failed", (round_, other)
        # Never `failed` with retries unused: its next attempt was stopped or never started.
        assert flaky["state"] == "cancelled", (round_, flaky)
        assert flaky["attempts"] in (1, 2), (round_, flaky)


# -- resume --only: outputs over every step, and a summary of every step ---------------------

FIXABLE = """
version: 1
name: fixable
steps:
  - id: a
    uses: shell
    with: {cmd: "test -f flag && echo fixed"}
  - id: b
    uses: shell
    with: {cmd: "echo b"}
outputs:
  a: "{{ steps.a.output }}"
  b: "{{ steps.b.output }}"
  b_state: "{{ steps.b.state }}"
"""


def fix_and_resume_only_a(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> tuple[str, dict[str, Any]]:
    path = write_pipeline(FIXABLE)
    first = run_cli("run", str(path), "--progress", "plain", "--json", "first.json")
    assert first.code == 1, first.output
    run_id = str(summary(tmp_path / "first.json")["run_id"])
    (tmp_path / "flag").touch()
    result = run_cli("resume", run_id, "--only", "a", "--progress", "plain", "--json", "r.json")
    assert result.code == 0, result.output
    assert no_traceback(result.output)
    return run_id, summary(tmp_path / "r.json")


def test_resume_only_that_makes_the_run_succeed_renders_its_outputs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    run_id, data = fix_and_resume_only_a(run_cli, write_pipeline, tmp_path)
    want = {"a": "fixed", "b": "b", "b_state": "succeeded"}
    assert data["status"] == "succeeded"
    assert data["outputs"] == want
    shown = run_cli("show", run_id, "--json")
    assert json.loads(shown.stdout)["run"]["outputs"] == want


def test_resume_only_summary_lists_every_step_of_the_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    run_id, data = fix_and_resume_only_a(run_cli, write_pipeline, tmp_path)
    steps = by_id(data)
    assert list(steps) == ["a", "b"]
    assert (steps["a"]["state"], steps["a"]["attempts"], steps["a"]["output"]) == (
        "succeeded", 2, "fixed",
    )  # fmt: skip
    # `b` was left out of the slice: as recorded by the first run.
    first_b = by_id(summary(tmp_path / "first.json"))["b"]
    assert steps["b"] == first_b
    assert data["counts"] == {"succeeded": 2}
    shown = by_id(json.loads(run_cli("show", run_id, "--json").stdout))
    assert shown["b"]["state"] == "succeeded" and shown["b"]["attempts"] == 1


# A fan-out, a skipped step and a step failed with continue_on_error, all left out of the slice:
# `outputs` reads them as the run recorded them.
LEFT_OUT = """
version: 1
name: left-out
steps:
  - id: fan
    for_each: [x, y]
    uses: shell
    with: {cmd: "echo {{ item }}"}
  - id: never
    if: false
    uses: shell
    with: {cmd: "echo never"}
  - id: allowed
    continue_on_error: true
    uses: shell
    with: {cmd: "exit 3"}
  - id: a
    uses: shell
    with: {cmd: "test -f flag && echo fixed"}
outputs:
  per: "{{ steps.fan.outputs }}"
  all: "{{ steps.fan.output }}"
  states: "{{ [steps.never.state, steps.allowed.state] }}"
  a: "{{ steps.a.output }}"
"""


def test_resume_only_outputs_read_steps_left_out_as_recorded(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(LEFT_OUT)
    first = run_cli("run", str(path), "--progress", "plain", "--json", "first.json")
    assert first.code == 1, first.output
    run_id = str(summary(tmp_path / "first.json")["run_id"])
    (tmp_path / "flag").touch()
    result = run_cli("resume", run_id, "--only", "a", "--progress", "plain", "--json", "r.json")
    assert result.code == 0, result.output
    data = summary(tmp_path / "r.json")
    assert data["outputs"] == {
        "per": {"x": "x", "y": "y"},
        "all": ["x", "y"],
        "states": ["skipped", "failed_allowed"],
        "a": "fixed",
    }
    steps = by_id(data)
    assert list(steps) == ["fan.x", "fan.y", "never", "allowed", "a"]
    assert steps["allowed"]["attempts"] == 1 and steps["allowed"]["exit_code"] == 3


# `resume` runs a `failed_allowed` step again, and evaluates a `skipped` step's `if` again.
AGAIN = """
version: 1
name: again
steps:
  - id: allowed
    continue_on_error: true
    uses: shell
    with: {cmd: "test -f flag && echo x"}
  - id: when_x
    needs: allowed
    if: "steps.allowed.output == 'x'"
    uses: shell
    with: {cmd: "echo ran"}
  - id: never
    if: false
    uses: shell
    with: {cmd: "echo never"}
  - id: bad
    uses: shell
    with: {cmd: "exit 1"}
"""


def test_resume_runs_failed_allowed_again_and_evaluates_skipped_again(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(AGAIN)
    first = run_cli("run", str(path), "--progress", "plain", "--json", "first.json")
    assert first.code == 1, first.output
    before = by_id(summary(tmp_path / "first.json"))
    assert (before["allowed"]["state"], before["when_x"]["state"]) == ("failed_allowed", "skipped")
    (tmp_path / "flag").touch()
    run_id = str(summary(tmp_path / "first.json")["run_id"])
    result = run_cli("resume", run_id, "--progress", "plain", "--json", "r.json")
    assert result.code == 1, result.output
    steps = by_id(summary(tmp_path / "r.json"))
    assert (steps["allowed"]["state"], steps["allowed"]["attempts"]) == ("succeeded", 2)
    assert (steps["when_x"]["state"], steps["when_x"]["output"]) == ("succeeded", "ran")
    assert steps["never"]["state"] == "skipped"


def test_resume_only_of_a_fan_outs_instances_renders_outputs_over_the_fan_out(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """`--only 'fan.*'` leaves the group `fan` out of the slice: its recorded state is stale,
    its state and output come from its instances as they are now."""
    path = write_pipeline(
        """
        version: 1
        name: fan
        steps:
          - id: fan
            for_each: [x, y]
            uses: shell
            with: {cmd: "test -f {{ item }}.ok && echo {{ item }}"}
        outputs:
          all: "{{ steps.fan.output }}"
          state: "{{ steps.fan.state }}"
        """
    )
    (tmp_path / "y.ok").touch()
    first = run_cli("run", str(path), "--progress", "plain", "--json", "first.json")
    assert first.code == 1, first.output
    (tmp_path / "x.ok").touch()
    run_id = str(summary(tmp_path / "first.json")["run_id"])
    result = run_cli("resume", run_id, "--only", "fan.*", "--progress", "plain", "--json", "r.json")
    assert result.code == 0, result.output
    assert summary(tmp_path / "r.json")["outputs"] == {"all": ["x", "y"], "state": "succeeded"}
