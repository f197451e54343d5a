"""Approval gates (`uses: approval`), through the `runner` command with real processes: a gate
waits (state `waiting`, no worker held), the run stops with exit code 75 when only gates are
left, `runner approve` / `runner reject` answer it from another process, live or before
`runner resume`, and a timeout fails it.  The deployment state machine example end to end."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, RunCli, no_traceback, runner_executable, user_env, wait_for

WritePipeline = Callable[..., Path]
RUN_ID = re.compile(r"\brun (\d{8}T\d{6}-[0-9a-f]{6})\b")
EXIT_WAITING = 75


def run_id_of(output: str) -> str:
    found = RUN_ID.search(output)
    assert found, output
    return found.group(1)


def show(run_cli: RunCli, run_id: str) -> dict[str, Any]:
    result = run_cli("show", run_id, "--json")
    assert result.code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def steps_of(run_cli: RunCli, run_id: str) -> dict[str, dict[str, Any]]:
    return {s["step_id"]: s for s in show(run_cli, run_id)["steps"]}


def states(run_cli: RunCli, run_id: str) -> dict[str, str]:
    return {sid: s["state"] for sid, s in steps_of(run_cli, run_id).items()}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- the deployment state machine --------------------------------------------------------------


@pytest.fixture
def deploy(tmp_path: Path) -> Path:
    """The example, copied: its steps write the history and the environments in its folder."""
    shutil.copytree(PIPELINES, tmp_path / "pipelines")
    return tmp_path / "pipelines" / "deploy-state-machine.yaml"


def start(run_cli: RunCli, path: Path, *args: str, **kw: Any) -> tuple[str, Any]:
    result = run_cli("run", str(path), "--progress", "plain", *args, cwd=path.parent, **kw)
    assert no_traceback(result.output), result.output
    assert result.code == EXIT_WAITING, result.output
    return run_id_of(result.stdout), result


def test_deploy_waits_at_the_gate_then_an_approval_from_another_process_promotes(
    run_cli: RunCli, deploy: Path
) -> None:
    run_id, result = start(run_cli, deploy)
    folder = deploy.parent
    last = result.stdout.splitlines()[-1]
    assert last == (
        f"answer with: runner approve {run_id} gate [--value V] | runner reject {run_id} gate "
        f"[--message M], then continue with: runner resume {run_id}"
    )
    assert f"  runner approve {run_id} gate --value promote" in result.stdout
    assert f"run {run_id} waiting in " in result.stdout
    assert "waiting for approval: gate: Promote 1.4.0 from staging to production?" in result.stdout
    assert states(run_cli, run_id) == {
        "build": "succeeded",
        "staging": "succeeded",
        "gate": "waiting",
        "production": "pending",
        "record": "pending",
    }
    runs = run_cli("runs")
    assert re.search(rf"^{run_id}  waiting ", runs.stdout, re.M), runs.stdout
    assert json.loads(run_cli("runs", "--json").stdout)[0]["status"] == "waiting"
    assert lines(folder / "envs" / "staging.txt") == ["1.4.0"]
    assert not (folder / "envs" / "production.txt").exists()

    answer = run_cli("approve", run_id, "gate", "--value", "promote")
    assert answer.code == 0, answer.output
    assert f"continue with: runner resume {run_id}" in answer.stdout

    resumed = run_cli("resume", run_id, "--progress", "plain", cwd=folder)
    assert resumed.code == 0, resumed.output
    assert lines(folder / "envs" / "production.txt") == ["1.4.0"]
    assert lines(folder / "history.txt") == [
        "build 1.4.0",
        "deploy 1.4.0 to staging (was none)",
        "deploy 1.4.0 to production (was none)",
        f"run {run_id} of 1.4.0 ended succeeded",
    ]
    steps = steps_of(run_cli, run_id)
    assert steps["gate"]["state"] == "succeeded"
    assert steps["gate"]["output"] == "promote"  # the value is the gate's output
    approval = steps["gate"]["approval"]
    assert (approval["decision"], approval["value"]) == ("approved", "promote")
    assert approval["choices"] == ["promote", "rollback"]
    assert approval["timeout"] == 24 * 3600
    assert approval["answered"] >= approval["waiting_since"]
    assert show(run_cli, run_id)["run"]["status"] == "succeeded"


def test_a_rejected_deploy_rolls_staging_back_by_compensation(
    run_cli: RunCli, deploy: Path
) -> None:
    folder = deploy.parent
    (folder / "envs").mkdir()
    (folder / "envs" / "staging.txt").write_text("1.3.9\n")
    run_id, _ = start(run_cli, deploy)
    assert lines(folder / "envs" / "staging.txt") == ["1.4.0"]
    answer = run_cli("reject", run_id, "gate", "--message", "not on a Friday")
    assert answer.code == 0, answer.output

    resumed = run_cli("resume", run_id, "--progress", "plain", cwd=folder)
    assert resumed.code == 1, resumed.output
    assert lines(folder / "envs" / "staging.txt") == ["1.3.9"]  # rolled back
    assert lines(folder / "history.txt")[-2:] == [
        "rollback staging to 1.3.9",
        f"run {run_id} of 1.4.0 ended compensated",  # every compensation succeeded
    ]
    steps = steps_of(run_cli, run_id)
    assert steps["gate"]["state"] == "failed"
    assert steps["gate"]["error_kind"] == "rejected"
    assert "not on a Friday" in steps["gate"]["error"]
    assert steps["production"]["state"] == "upstream_failed"
    assert steps["staging:compensate"]["state"] == "succeeded"
    assert steps["staging"]["state"] == "compensated"
    assert show(run_cli, run_id)["run"]["status"] == "compensated"


@pytest.mark.parametrize(
    ("value", "params", "history"),
    [
        ("rollback", (), ["gate chose rollback", "rollback staging to none"]),
        (
            "promote",
            ("-p", "fail_production=true"),
            ["deploy 1.4.0 to production (was none)", "rollback staging to none"],
        ),
    ],
)
def test_a_rollback_answer_or_a_failed_production_deploy_compensates(
    run_cli: RunCli, deploy: Path, value: str, params: tuple[str, ...], history: list[str]
) -> None:
    run_id, _ = start(run_cli, deploy, *params)
    assert run_cli("approve", run_id, "gate", "--value", value).code == 0
    resumed = run_cli("resume", run_id, "--progress", "plain", cwd=deploy.parent)
    assert resumed.code == 1, resumed.output
    assert lines(deploy.parent / "history.txt")[-3:-1] == history
    assert not (deploy.parent / "envs" / "staging.txt").exists()
    assert states(run_cli, run_id)["production"] == "failed"


# -- answered while the run is live -------------------------------------------------------------

LIVE = """
version: 1
name: live
steps:
  - id: gate
    uses: approval
    with: {prompt: "go on?"}
  - id: after
    needs: gate
    uses: shell
    with: {cmd: "echo {{ steps.gate.output }} > after.txt"}
  - id: other
    uses: shell
    # runs until the test lets it end, after it saw the gate end in the live run
    with: {cmd: "for i in $(seq 600); do [ -f go.txt ] && exit 0; sleep 0.1; done; exit 1"}
"""


def test_an_answer_from_another_process_is_taken_up_by_the_live_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(LIVE)
    env = {**user_env(), "PIPELINE_RUNNER_STATE_DIR": str(tmp_path / "state")}
    # One worker: `other` has it while the gate waits, so the gate holds none.
    proc = subprocess.Popen(
        [runner_executable(), "run", str(path), "--progress", "plain", "--workers", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def now() -> dict[str, str]:
            found = run_cli("runs", "--json")
            rows = json.loads(found.stdout) if found.code == 0 else []
            return states(run_cli, rows[0]["id"]) if rows else {}

        assert wait_for(
            lambda: now() == {"gate": "waiting", "after": "pending", "other": "running"},
            timeout=60,
            interval=0.2,
        )
        run_id = json.loads(run_cli("runs", "--json").stdout)[0]["id"]
        answer = run_cli("approve", run_id, "gate", "--value", "yes")
        assert answer.code == 0, answer.output
        assert "the running run takes it up" in answer.stdout
        # the live run ends the gate while `other` still runs: no resume
        assert wait_for(lambda: now()["gate"] == "succeeded", timeout=60, interval=0.2)
        assert now()["other"] == "running"
        (tmp_path / "go.txt").write_text("")
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert (tmp_path / "after.txt").read_text() == "yes\n"
    assert states(run_cli, run_id) == {
        "gate": "succeeded",
        "after": "succeeded",
        "other": "succeeded",
    }
    assert "resume" not in out


# -- timeouts -----------------------------------------------------------------------------------


def test_a_gate_times_out_while_the_run_goes_on(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: t
        steps:
          - id: gate
            uses: approval
            with: {timeout: 500ms}
          - id: other
            uses: shell
            with: {cmd: "sleep 3"}
        """
    )
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 1, result.output
    steps = steps_of(run_cli, run_id_of(result.stdout))
    assert steps["gate"]["state"] == "failed"
    assert steps["gate"]["error_kind"] == "timeout"
    assert steps["gate"]["error"] == "no answer within 0.5s"
    assert steps["other"]["state"] == "succeeded"


def test_a_gate_timeout_counts_from_the_first_wait_across_resume(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: t
        steps:
          - id: gate
            uses: approval
            with: {timeout: 1s}
        """
    )
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == EXIT_WAITING, result.output
    run_id = run_id_of(result.stdout)
    since = steps_of(run_cli, run_id)["gate"]["started"]
    assert wait_for(lambda: time.time() > since + 1.2, timeout=30)
    late = run_cli("approve", run_id, "gate")
    assert late.code == 2, late.output
    assert "timed out (no answer within 1s)" in late.stderr
    resumed = run_cli("resume", run_id, "--progress", "plain")
    assert resumed.code == 1, resumed.output
    gate = steps_of(run_cli, run_id)["gate"]
    assert (gate["state"], gate["error_kind"]) == ("failed", "timeout")


# -- answers that cannot be ---------------------------------------------------------------------


def test_approve_refuses_what_is_not_a_waiting_gate(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: t
        steps:
          - id: first
            uses: noop
          - id: gate
            needs: first
            uses: approval
            with: {prompt: "ship it?", choices: [ship, hold]}
        """
    )
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == EXIT_WAITING, result.output
    run_id = run_id_of(result.stdout)
    refused = {
        ("approve", run_id, "gate"): "approval gate gate asks for one of: ship, hold; pass "
        f"--value (e.g. runner approve {run_id} gate --value ship)",
        ("approve", run_id, "gate", "--value", "shp"): "--value 'shp' is not a choice of "
        "approval gate gate: expected one of ship, hold (did you mean 'ship'?)",
        ("approve", run_id, "first"): f"step first of run {run_id} is not an approval gate",
        ("reject", run_id, "gat"): f"run {run_id} has no step 'gat' (did you mean 'gate'?)",
        ("approve", "nope", "gate"): "no run with id 'nope'",
    }
    for args, message in refused.items():
        answer = run_cli(*args)
        assert answer.code == 2, (args, answer.output)
        assert message in answer.stderr, (args, answer.stderr)
        assert no_traceback(answer.output)
    assert run_cli("approve", run_id, "gate", "--value", "hold").code == 0
    again = run_cli("reject", run_id, "gate")
    assert again.code == 2
    assert f"approval gate gate of run {run_id} was answered already (approved by " in again.stderr
    assert run_cli("resume", run_id, "--progress", "plain").code == 0
    done = run_cli("approve", run_id, "gate", "--value", "ship")
    assert done.code == 2 and "was answered already" in done.stderr


# -- reports ------------------------------------------------------------------------------------

ONE_GATE = """
version: 1
name: ci
steps:
  - id: build
    uses: noop
  - id: gate
    needs: build
    uses: approval
    with: {prompt: "Deploy?", choices: [yes, no]}
"""


def test_in_github_actions_a_notice_says_how_to_answer(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    write_pipeline(ONE_GATE)
    env = {"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(tmp_path)}
    result = run_cli("run", "p.yaml", "--progress", "plain", env=env)
    assert result.code == EXIT_WAITING, result.output
    run_id = run_id_of(result.stdout)
    notices = [line for line in result.stdout.splitlines() if line.startswith("::notice ")]
    assert notices == [
        "::notice file=p.yaml,line=6,col=5,title=approval waiting::gate: Deploy?%0A"
        "Answer with one of:%0A"
        f"runner approve {run_id} gate --value yes%0A"
        f"runner approve {run_id} gate --value no%0A"
        f"runner reject {run_id} gate%0A"
        f"then continue the run with: runner resume {run_id}"
    ]


def test_json_summary_and_show_list_the_waiting_gate(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(ONE_GATE)
    out = tmp_path / "summary.json"
    result = run_cli("run", str(path), "--progress", "none", "--json", str(out))
    assert result.code == EXIT_WAITING, result.output
    assert result.stderr.splitlines()[-1].startswith("answer with: runner approve ")
    summary = json.loads(out.read_text())
    assert summary["status"] == "waiting"
    gate = next(s for s in summary["steps"] if s["id"] == "gate")
    assert gate["state"] == "waiting"
    assert gate["approval"]["prompt"] == "Deploy?"
    assert gate["approval"]["choices"] == ["yes", "no"]
    shown = run_cli("show", run_id_of(result.stderr))
    assert re.search(r"^  gate +waiting .*waiting for approval: Deploy\?$", shown.stdout, re.M)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (
            "with: {choices: promote}",
            "p.yaml:6:21: error: steps[0].with.choices: approval: expected a list, found string "
            "'promote'",
        ),
        (
            "with: {choices: [a, 1]}",
            "p.yaml:6:25: error: steps[0].with.choices[1]: approval: expected a string, found "
            "integer 1 (YAML reads 1 as an integer; quote it: '1')",
        ),
        (
            "with: {choices: [a, a]}",
            "p.yaml:6:21: error: steps[0].with.choices: approval: choice 'a' is given more "
            "than once",
        ),
        (
            "with: {timeout: 5 minutes}",
            "p.yaml:6:21: error: steps[0].with.timeout: approval: invalid duration "
            "'5 minutes': expected e.g. 500ms, 30s, 5m, 2h, 1h30m",
        ),
        (
            "with: {timeout: 0s}",
            "p.yaml:6:21: error: steps[0].with.timeout: approval: invalid duration '0s': must "
            "be more than 0",
        ),
        (
            "with: {promt: x}",
            "p.yaml:6:12: error: steps[0].with.promt: approval: unknown key 'promt' (did you "
            "mean 'prompt'?)",
        ),
        (
            "retries: 2",
            "p.yaml:6:5: error: steps[0].retries: an approval gate runs no attempt, so "
            "`retries` cannot apply to it (limit its wait with `with.timeout`)",
        ),
    ],
)
def test_validate_locates_what_cannot_work_on_a_gate(
    run_cli: RunCli, write_pipeline: WritePipeline, step: str, error: str
) -> None:
    write_pipeline(
        f"""
        version: 1
        name: v
        steps:
          - id: gate
            uses: approval
            {step}
        """
    )
    for command in ("validate", "run"):
        result = run_cli(command, "p.yaml")
        assert result.code == 2, result.output
        assert error in result.stderr.splitlines(), result.stderr
        assert no_traceback(result.output)


def test_a_gate_cannot_be_a_finally_step_nor_a_compensation(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    write_pipeline(
        """
        version: 1
        name: v
        steps:
          - id: a
            uses: noop
            compensate: {uses: approval}
        finally:
          - id: gate
            uses: approval
        """
    )
    result = run_cli("validate", "p.yaml")
    assert result.code == 2, result.output
    assert result.stderr.splitlines()[:2] == [
        "p.yaml:6:24: error: steps[0].compensate.uses: a compensation cannot be an approval gate",
        "p.yaml:9:11: error: finally[0].uses: an approval gate cannot be a `finally` step (it "
        "would wait after the run ended); put it among the steps",
    ]


def test_resume_ends_answered_gates_and_the_others_wait_again(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: two
        steps:
          - id: legal
            uses: approval
          - id: security
            uses: approval
          - id: ship
            needs: [legal, security]
            uses: shell
            with: {cmd: "echo {{ steps.legal.output }} {{ steps.security.output }}"}
        """
    )
    first = run_cli("run", str(path), "--progress", "plain")
    assert first.code == EXIT_WAITING, first.output
    run_id = run_id_of(first.stdout)
    assert first.stdout.splitlines()[-1].startswith(f"answer with: runner approve {run_id} STEP ")
    assert run_cli("approve", run_id, "legal", "--value", "ok by legal").code == 0
    second = run_cli("resume", run_id, "--progress", "plain")
    assert second.code == EXIT_WAITING, second.output
    assert states(run_cli, run_id) == {
        "legal": "succeeded",
        "security": "waiting",
        "ship": "pending",
    }
    assert second.stdout.splitlines()[-1].startswith(
        f"answer with: runner approve {run_id} security "
    )
    assert run_cli("approve", run_id, "security").code == 0
    third = run_cli("resume", run_id, "--progress", "plain")
    assert third.code == 0, third.output
    assert steps_of(run_cli, run_id)["ship"]["output"] == "ok by legal approved"


def test_ctrl_c_cancels_a_waiting_gate_and_it_can_no_longer_be_answered(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: stop
        steps:
          - id: gate
            uses: approval
          - id: other
            uses: shell
            with: {cmd: "sleep 60"}
        """
    )
    env = {**user_env(), "PIPELINE_RUNNER_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen(
        [runner_executable(), "run", str(path), "--progress", "plain"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def both_started() -> bool:
            found = run_cli("runs", "--json")
            rows = json.loads(found.stdout) if found.code == 0 else []
            return bool(rows) and states(run_cli, rows[0]["id"]) == {
                "gate": "waiting",
                "other": "running",
            }

        assert wait_for(both_started, timeout=60, interval=0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    run_id = run_id_of(out)
    assert show(run_cli, run_id)["run"]["status"] == "cancelled"
    assert states(run_cli, run_id) == {"gate": "cancelled", "other": "cancelled"}
    late = run_cli("approve", run_id, "gate")
    assert late.code == 2
    assert f"approval gate gate of run {run_id} is not waiting (it is cancelled)" in late.stderr
