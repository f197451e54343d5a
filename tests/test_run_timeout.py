"""The pipeline's `timeout` (Argo's `activeDeadlineSeconds`, Airflow's `dagrun_timeout`) and
the run facts `finally` steps read, `run.failures` and `run.duration` (Argo's
`workflow.failures`, `workflow.duration`), through the real `runner` command: running steps
stopped with their processes, pending ones never started, `finally` still run and not bounded
by the deadline, a resume with a new deadline, the validate errors, and the Argo translation
under pipelines/."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, RunCli, no_traceback, wait_for

WritePipeline = Callable[..., Path]

# `slow` records its process id and sleeps far past the deadline; `bad` fails with exit code 3
# at once; `after` needs `slow`, so it never starts.  The `finally` step writes what it reads.
DEADLINE = """
version: 1
name: deadline
timeout: 3s
steps:
  - id: bad
    uses: shell
    with: {cmd: "echo broken >&2; exit 3"}
  - id: slow
    uses: shell
    with: {cmd: "if [ -e fixed ]; then echo quick; else echo $$ > slow.pid; exec sleep 600; fi"}
  - id: after
    needs: slow
    uses: shell
    with: {cmd: "echo after"}
finally:
  - id: report
    uses: python
    with:
      call: "facts:write"
      args: ["{{ run.status }}", "{{ run.failures }}", "{{ run.duration }}"]
"""

FACTS = """
import json

def write(status, failures, duration):
    with open("facts.json", "w") as f:
        json.dump({"status": status, "failures": failures, "duration": duration}, f)
    return status
"""


def run_json(run_cli: RunCli, path: Path, *args: str) -> tuple[Any, dict[str, Any], float]:
    summary = path.parent / "summary.json"
    summary.unlink(missing_ok=True)
    began = time.monotonic()
    result = run_cli(*args, "--progress", "plain", "--json", str(summary), timeout=300)
    took = time.monotonic() - began
    return result, json.loads(summary.read_text()), took


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent, the worker, may not have reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_pipeline_timeout_stops_running_steps_and_finally_reads_the_failures(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(DEADLINE, files={"facts.py": FACTS})
    result, summary, took = run_json(run_cli, path, "run", str(path), "--workers", "2")
    assert result.code == 1 and no_traceback(result.output), result.output
    assert took < 120, took  # the sleep of 600s was stopped
    assert summary["failure"] == "run_timeout: the pipeline's timeout of 3s passed"
    assert "(run_timeout: the pipeline's timeout of 3s passed)" in result.stdout
    steps = {s["id"]: s for s in summary["steps"]}
    assert steps["bad"]["state"] == "failed"
    assert steps["slow"]["state"] == "cancelled"
    assert steps["slow"]["error_kind"] == "run_timeout"
    assert steps["after"]["state"] == "cancelled" and steps["after"]["attempts"] == 0
    assert steps["report"]["state"] == "succeeded"
    pid = int((tmp_path / "slow.pid").read_text())
    assert wait_for(lambda: not alive(pid), timeout=30), f"sleep {pid} outlived the deadline"
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["status"] == "failed"
    assert isinstance(facts["duration"], float) and 2.5 < facts["duration"] < took + 1
    message = "the pipeline's timeout of 3s passed"
    assert facts["failures"] == [
        {"id": "bad", "kind": "error", "message": "command exited with code 3", "exit_code": 3},
        {"id": "slow", "kind": "run_timeout", "message": message, "exit_code": None},
    ]
    shown = run_cli("show", summary["run_id"])
    assert "the pipeline's timeout of 3s passed" in shown.stdout, shown.stdout


def test_a_resume_of_a_timed_out_run_has_a_new_deadline(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(DEADLINE.replace("exit 3", "exit 0"), files={"facts.py": FACTS})
    first, summary, _ = run_json(run_cli, path, "run", str(path))
    assert first.code == 1, first.output
    (tmp_path / "fixed").touch()
    again, resumed, _ = run_json(run_cli, path, "resume", summary["run_id"])
    assert again.code == 0, again.output
    assert "failure" not in resumed
    states = {s["id"]: s["state"] for s in resumed["steps"]}
    assert states == {s: "succeeded" for s in ("bad", "slow", "after", "report")}
    assert json.loads((tmp_path / "facts.json").read_text())["failures"] == []


def test_the_pipeline_timeout_does_not_bound_finally_steps(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: late-finally
        timeout: 1s
        steps:
          - id: quick
            uses: shell
            with: {cmd: "echo quick"}
        finally:
          - id: cleanup
            uses: shell
            timeout: 120s
            with: {cmd: "sleep 2; echo {{ run.status }}"}
        """
    )
    result, summary, _ = run_json(run_cli, path, "run", str(path))
    assert result.code == 0, result.output
    assert {s["id"]: s["output"] for s in summary["steps"]} == {
        "quick": "quick",
        "cleanup": "succeeded",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            """
            steps:
              - id: a
                uses: shell
                with: {cmd: "echo {{ run.failures }}"}
            """,
            "steps[0].with.cmd: run.failures is known only to `finally` steps",
        ),
        (
            """
            steps:
              - {id: a, uses: noop}
            outputs:
              took: "{{ run.duration }}"
            """,
            "outputs.took: run.duration is known only to `finally` steps",
        ),
        (
            """
            timeout: 0
            steps:
              - {id: a, uses: noop}
            """,
            "timeout: invalid duration 0: must be more than 0",
        ),
        ("timeout: soon\nsteps:\n  - {id: a, uses: noop}\n", "timeout: "),
    ],
)
def test_validate_rejects_misuse_with_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline, text: str, message: str
) -> None:
    import textwrap

    path = write_pipeline("version: 1\nname: bad\n" + textwrap.dedent(text).lstrip())
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert f"{path.name}:" in result.stderr and message in result.stderr, result.stderr
    assert ": error: " in result.stderr


def test_a_timeout_in_an_inlined_pipeline_is_rejected_where_it_is_written(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    write_pipeline(
        "version: 1\nname: inner\ntimeout: 5s\nsteps:\n  - {id: a, uses: noop}\n", name="inner.yaml"
    )
    path = write_pipeline(
        "version: 1\nname: outer\nsteps:\n  - id: sub\n    uses: pipeline\n"
        "    with: {file: inner.yaml}\n"
    )
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    assert "inner.yaml:3:1: error: timeout: the `timeout` of an inlined pipeline" in result.stderr


def test_finally_may_read_the_run_facts(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        """
        version: 1
        name: facts
        steps:
          - {id: a, uses: noop}
        finally:
          - id: tell
            if: run.failures | length == 0 and run.duration >= 0
            uses: shell
            with: {cmd: "echo ok"}
        """
    )
    result, summary, _ = run_json(run_cli, path, "run", str(path))
    assert result.code == 0, result.output
    assert {s["id"]: s["state"] for s in summary["steps"]} == {
        "a": "succeeded",
        "tell": "succeeded",
    }


def test_the_argo_exit_handler_translation_runs_its_handler_after_the_deadline(
    run_cli: RunCli, tmp_path: Path
) -> None:
    path = PIPELINES / "argo-exit-handler.yaml"
    result, summary, _ = run_json(run_cli, tmp_path / "x", "run", str(path), "--workers", "2")
    assert result.code == 1 and no_traceback(result.output), result.output
    assert summary["failure"] == "run_timeout: the pipeline's timeout of 4s passed"
    steps = {s["id"]: s for s in summary["steps"]}
    assert steps["intentional-fail"]["state"] == "failed"
    sleeps = [steps[f"sleep-one-day.{i}"] for i in range(3)]
    assert {s["state"] for s in sleeps} == {"cancelled"}
    assert {s["error_kind"] for s in sleeps} == {"run_timeout"}
    assert steps["celebrate"]["state"] == "skipped"
    assert steps["cry"]["output"] == "boohoo!"
    notify = steps["notify"]["output"]
    assert notify.startswith("send e-mail: argo-exit-handler failed "), notify
    failures = json.loads(notify.split("Failed steps ", 1)[1])
    assert failures[0] == {
        "id": "intentional-fail",
        "kind": "error",
        "message": "command exited with code 1",
        "exit_code": 1,
    }
    # Two workers: the sleeps that ran were stopped (listed); the one never started is not.
    assert {f["id"] for f in failures[1:]} <= {s["id"] for s in sleeps}
    assert all(f["kind"] == "run_timeout" for f in failures[1:])
