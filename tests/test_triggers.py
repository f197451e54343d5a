"""Trigger rules and skips (semantics.md, "Trigger rules and skips"), through the `runner`
command: a skipped need skips its dependents, `trigger:` rules, the status functions of `if`,
`skip_exit_codes`, and a fan-out's outputs without its skipped instances.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import test_engine
from conftest import PIPELINES, RunCli, no_traceback, wait_for
from test_engine import start_runner

marker = test_engine.marker  # the fixtures of the engine tests: runners started are cleaned up
popen = test_engine.popen

WritePipeline = Callable[..., Path]
Steps = dict[str, dict[str, Any]]
RUN_ID = re.compile(r"\brun (\d{8}T\d{6}-[0-9a-f]{6})\b")


def run(run_cli: RunCli, path: Path, *args: str) -> Any:
    result = run_cli("run", str(path), "--progress", "plain", *args)
    assert no_traceback(result.output), result.output
    return result


def shown(run_cli: RunCli, output: str) -> dict[str, dict[str, Any]]:
    """Every step of the run as `runner show --json` gives it, by id."""
    found = RUN_ID.search(output)
    assert found, output
    result = run_cli("show", found.group(1), "--json")
    assert result.code == 0, result.output
    return {s["step_id"]: s for s in json.loads(result.stdout)["steps"]}


def run_to_end(run_cli: RunCli, path: Path, code: int, *args: str) -> Steps:
    """Run `path` (exit `code` expected); every step as the store recorded it, by id."""
    result = run(run_cli, path, *args)
    assert result.code == code, result.output
    return shown(run_cli, result.stdout)


def states(steps: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {sid: s["state"] for sid, s in steps.items()}


def test_a_skipped_need_skips_its_dependents_and_the_reason_names_it(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: skips
        steps:
          - id: deploy
            if: false
            uses: shell
            with: {cmd: "echo deploying"}
          - id: smoke
            needs: deploy
            uses: shell
            with: {cmd: "touch smoke.ran"}
          - id: announce
            needs: smoke
            uses: shell
            with: {cmd: "touch announce.ran"}
          - id: summary
            needs: smoke
            if: "steps.smoke.state == 'skipped'"
            uses: shell
            with: {cmd: "echo smoke was {{ steps.smoke.state }}"}
        """
    )
    result = run(run_cli, path, "--junit", "junit.xml")
    assert result.code == 0, result.output
    assert "○ skipped         smoke (needs deploy, which was skipped)" in result.stdout
    steps = shown(run_cli, result.stdout)
    assert states(steps) == {
        "deploy": "skipped",
        "smoke": "skipped",
        "announce": "skipped",
        "summary": "skipped",
    }
    assert steps["smoke"]["error"] == "needs deploy, which was skipped"
    assert steps["announce"]["error"] == "needs smoke, which was skipped"
    assert not (tmp_path / "smoke.ran").exists() and not (tmp_path / "announce.ran").exists()
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    skipped = cases["smoke"].find("skipped")
    assert skipped is not None and skipped.get("message") == "needs deploy, which was skipped"
    assert cases["smoke"].find("failure") is None


TRIGGERS = """
version: 1
name: triggers
steps:
  - {id: ok, uses: shell, with: {cmd: "true"}}
  - {id: bad, uses: shell, with: {cmd: "exit 4"}}
  - {id: skip, if: false, uses: noop}
  - {id: allowed, uses: shell, continue_on_error: true, with: {cmd: "exit 5"}}
"""
# (id, trigger, needs, expected state)
RULES = [
    ("all_success_skip", "all_success", "ok, skip", "skipped"),
    ("all_success_bad", "all_success", "ok, bad", "upstream_failed"),
    ("all_success_allowed", "all_success", "ok, allowed", "succeeded"),
    ("all_done", "all_done", "bad, skip, ok", "succeeded"),
    ("one_success", "one_success", "ok, bad", "succeeded"),
    ("one_success_none", "one_success", "bad, skip", "upstream_failed"),
    ("one_success_skip", "one_success", "skip", "skipped"),
    ("one_failed", "one_failed", "ok, bad", "succeeded"),
    ("one_failed_none", "one_failed", "ok, skip", "skipped"),
    ("none_failed", "none_failed", "ok, skip", "succeeded"),
    ("none_failed_only_skips", "none_failed", "skip", "succeeded"),
    ("none_failed_bad", "none_failed", "ok, bad", "upstream_failed"),
    ("join", "none_failed_min_one_success", "ok, skip", "succeeded"),
    ("join_only_skips", "none_failed_min_one_success", "skip", "skipped"),
    ("join_bad", "none_failed_min_one_success", "bad, ok", "upstream_failed"),
]


def test_each_trigger_rule_reads_the_states_of_the_needs(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    text = TRIGGERS + "".join(
        f"  - {{id: {sid}, trigger: {rule}, needs: [{needs}], uses: noop}}\n"
        for sid, rule, needs, _ in RULES
    )
    steps = run_to_end(
        run_cli, write_pipeline(text), 1
    )  # `bad` failed: no handler turns the run green
    assert {sid: steps[sid]["state"] for sid, *_ in RULES} == {sid: s for sid, *_, s in RULES}
    assert steps["one_failed_none"]["error"] == (
        "trigger one_failed does not hold: ok succeeded, skip skipped"
    )
    assert steps["none_failed_bad"]["error"] == "needs bad, which failed"


def test_status_functions_decide_alone_and_failure_reads_every_ancestor(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: status
        steps:
          - {id: build, uses: shell, with: {cmd: "exit 2"}}
          - {id: test, needs: build, uses: shell, with: {cmd: "touch test.ran"}}
          - id: on_failure          # build failed two steps up: test is upstream_failed
            needs: test
            if: failure()
            uses: shell
            with: {cmd: "echo test was {{ steps.test.state }} > failure.txt"}
          - {id: on_success, needs: test, if: success(), uses: noop}
          - {id: cleanup, needs: test, if: always(), uses: shell, with: {cmd: "touch cleanup.ran"}}
          - {id: on_cancel, needs: test, if: cancelled(), uses: noop}
          - {id: lint, uses: noop}
          - {id: lint_failure, needs: lint, if: failure(), uses: noop}
          - {id: lint_success, needs: lint, if: "success() and params.strict", uses: noop}
        params: {strict: true}
        """
    )
    steps = run_to_end(run_cli, path, 1)
    assert states(steps) == {
        "build": "failed",
        "test": "upstream_failed",
        "on_failure": "succeeded",
        "on_success": "skipped",
        "cleanup": "succeeded",
        "on_cancel": "skipped",
        "lint": "succeeded",
        "lint_failure": "skipped",
        "lint_success": "succeeded",
    }
    assert (tmp_path / "failure.txt").read_text().strip() == "test was upstream_failed"
    assert not (tmp_path / "test.ran").exists() and (tmp_path / "cleanup.ran").exists()


def test_a_state_test_runs_a_handler_with_a_rule_that_lets_it(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """Argo's `depends: "flaky.Failed"`: `trigger: all_done` plus an `if` on the need's state."""
    path = write_pipeline(
        """
        version: 1
        name: depends
        steps:
          - {id: flaky, uses: shell, with: {cmd: "exit 1"}}
          - id: recover
            needs: flaky
            trigger: all_done
            if: "steps.flaky.state == 'failed'"
            uses: shell
            with: {cmd: "touch recovered"}
          - id: celebrate
            needs: flaky
            trigger: all_done
            if: "steps.flaky.state == 'succeeded'"
            uses: noop
        """
    )
    found = states(run_to_end(run_cli, path, 1))
    assert found == {
        "flaky": "failed",
        "recover": "succeeded",
        "celebrate": "skipped",
    }
    assert (tmp_path / "recovered").exists()


def test_always_and_cancelled_steps_run_when_fail_fast_cancels_the_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: cancelled
        steps:
          - id: slow
            uses: shell
            with: {cmd: "touch slow.started; sleep 60"}
          - id: boom
            uses: shell
            with: {cmd: "while [ ! -e slow.started ]; do sleep 0.05; done; exit 1"}
          - {id: after, needs: slow, uses: shell, with: {cmd: "touch after.ran"}}
          - id: cleanup
            needs: slow
            if: always()
            uses: shell
            with: {cmd: "echo {{ steps.slow.state }} > cleanup.txt"}
          - id: on_cancel
            needs: cleanup
            if: cancelled()
            uses: shell
            with: {cmd: "touch on_cancel.ran"}
          - {id: on_success, needs: slow, if: success(), uses: noop}
        finally:
          - {id: report, if: cancelled(), uses: shell, with: {cmd: "touch report.ran"}}
        """
    )
    found = states(run_to_end(run_cli, path, 1, "--fail-fast", "--workers", "2"))
    assert found == {
        "slow": "cancelled",
        "boom": "failed",
        "after": "cancelled",
        "cleanup": "succeeded",
        "on_cancel": "succeeded",
        "on_success": "cancelled",
        "report": "succeeded",
    }
    assert (tmp_path / "cleanup.txt").read_text().strip() == "cancelled"
    assert not (tmp_path / "after.ran").exists()


def test_an_always_step_runs_after_ctrl_c_and_the_run_stays_cancelled(
    write_pipeline: WritePipeline, tmp_path: Path, popen: list[subprocess.Popen[str]]
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: interrupted
        steps:
          - {id: work, uses: shell, with: {cmd: "touch work.started; sleep 60"}}
          - {id: next, needs: work, uses: shell, with: {cmd: "touch next.ran"}}
          - id: cleanup
            needs: next
            if: always()
            uses: shell
            with: {cmd: "echo {{ steps.work.state }} {{ steps.next.state }} > cleanup.txt"}
        """
    )
    proc = start_runner(tmp_path, path, "--workers", "2")
    popen.append(proc)
    assert wait_for((tmp_path / "work.started").exists, timeout=60), "work never started"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert (tmp_path / "cleanup.txt").read_text().split() == ["cancelled", "cancelled"]
    assert test_engine.states(stdout) == {
        "work": "cancelled",
        "next": "cancelled",
        "cleanup": "succeeded",
    }
    assert not (tmp_path / "next.ran").exists()


def test_skip_exit_codes_skip_the_step_without_retrying_and_never_fail_the_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: exit99
        steps:
          - id: check
            uses: shell
            retries: {max: 3, delay: 0}
            skip_exit_codes: [99]
            with: {cmd: "echo x >> check.calls; exit 99"}
          - {id: load, needs: check, uses: shell, with: {cmd: "touch load.ran"}}
          - id: py
            uses: python
            skip_exit_codes: [99, 98]
            with: {call: "sys:exit", args: [98]}
          - id: other_code
            uses: shell
            continue_on_error: true
            skip_exit_codes: [99]
            with: {cmd: "exit 3"}
        """
    )
    result = run(run_cli, path, "--junit", "junit.xml")
    assert result.code == 0, result.output
    assert "○ skipped         check (" in result.stdout
    assert "exited with code 99, one of its skip_exit_codes" in result.stdout
    steps = shown(run_cli, result.stdout)
    assert states(steps) == {
        "check": "skipped",
        "load": "skipped",
        "py": "skipped",
        "other_code": "failed_allowed",
    }
    assert steps["check"]["attempts"] == 1 and steps["check"]["exit_code"] == 99
    assert steps["py"]["error"] == "exited with code 98, one of its skip_exit_codes"
    assert steps["load"]["error"] == "needs check, which was skipped"
    assert (tmp_path / "check.calls").read_text().splitlines() == ["x"]
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    # An allowed failure is not a JUnit failure (docs/reports.md); skipped steps are counted
    # on the testsuite, where Jenkins' schema has `skipped`.
    suite = junit.find("testsuite")
    assert suite is not None and suite.get("skipped") == "3"
    assert junit.get("failures") == "0" and junit.get("skipped") is None
    (allowed,) = [c for c in junit.iter("testcase") if c.get("name") == "other_code"]
    assert allowed.get("status") == "failed_allowed" and allowed.find("failure") is None


def test_a_fan_outs_outputs_leave_out_its_skipped_instances(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: fan
        steps:
          - id: build
            for_each: [linux, mac, windows]
            if: item != 'mac'
            uses: shell
            with: {cmd: "echo built-{{ item }}"}
          - id: none
            for_each: [a, b]
            if: false
            uses: noop
          - {id: after_none, needs: none, uses: noop}
        outputs:
          built: "{{ steps.build.output }}"
          by_key: "{{ steps.build.outputs }}"
        """
    )
    result = run(run_cli, path, "--json", "run.json")
    assert result.code == 0, result.output
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["outputs"] == {
        "built": ["built-linux", "built-windows"],
        "by_key": {"linux": "built-linux", "windows": "built-windows"},
    }
    steps = shown(run_cli, result.stdout)
    assert steps["after_none"]["state"] == "skipped"
    assert steps["after_none"]["error"] == "needs none, which was skipped"


def test_a_run_time_for_each_after_a_skipped_need_is_skipped_whole(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: mapped
        steps:
          - {id: list, if: false, uses: shell, with: {cmd: "echo '[1, 2]'", parse: json}}
          - id: each
            needs: list
            for_each: "{{ steps.list.output }}"
            uses: shell
            with: {cmd: "echo {{ item }}"}
        """
    )
    steps = run_to_end(run_cli, path, 0)
    assert steps["each"]["state"] == "skipped"
    assert steps["each"]["error"] == "needs list, which was skipped"


def test_resume_decides_a_skipped_step_again(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """A skipped step is not kept by resume: its gate is asked again."""
    path = write_pipeline(
        """
        version: 1
        name: gate
        steps:
          - id: gate
            uses: shell
            skip_exit_codes: [99]
            with: {cmd: "test -e open || exit 99"}
          - {id: publish, needs: gate, uses: shell, with: {cmd: "touch published"}}
          - {id: flaky, uses: shell, with: {cmd: "test -e fixed"}}
        """
    )
    first = run(run_cli, path)
    assert first.code == 1, first.output
    assert states(shown(run_cli, first.stdout))["publish"] == "skipped"
    (tmp_path / "open").touch()
    (tmp_path / "fixed").touch()
    run_id = RUN_ID.search(first.stdout)
    assert run_id
    again = run_cli("resume", run_id.group(1), "--progress", "plain")
    assert again.code == 0, again.output
    assert states(shown(run_cli, again.stdout)) == {
        "gate": "succeeded",
        "publish": "succeeded",
        "flaky": "succeeded",
    }
    assert (tmp_path / "published").exists()


# -- the translations under pipelines/ ----------------------------------------------------------


def test_the_airflow_branch_dag_skips_the_branches_not_taken_and_joins(
    run_cli: RunCli, tmp_path: Path
) -> None:
    path, summary = PIPELINES / "airflow-branch.yaml", tmp_path / "run.json"
    steps = run_to_end(run_cli, path, 0, "--param", "choice=c", "--json", str(summary))
    taken = {"branch_c", "follow_c", "ext_py.c"}
    for sid in ("branch", "follow"):
        for option in "abd":
            assert steps[f"{sid}_{option}"]["state"] == "skipped", sid + option
    assert steps["follow_b"]["error"] == "needs branch_b, which was skipped"
    assert {s for s in taken if steps[s]["state"] == "succeeded"} == taken
    assert steps["join"]["state"] == steps["join_ext_python"]["state"] == "succeeded"
    assert json.loads(summary.read_text())["outputs"] == {
        "branch": "branch_c",
        "ext_py": {"c": "Hello World from external Python"},
    }


def test_the_airflow_branch_dag_takes_one_random_branch(run_cli: RunCli) -> None:
    found = states(run_to_end(run_cli, PIPELINES / "airflow-branch.yaml", 0))
    ran = [o for o in "abcd" if found[f"branch_{o}"] == "succeeded"]
    assert len(ran) == 1 and found[f"follow_{ran[0]}"] == "succeeded", found
    assert sum(found[f"follow_{o}"] == "skipped" for o in "abcd") == 3, found
    assert found["join"] == "succeeded"


def test_the_argo_dag_runs_its_failure_edges_and_its_exit_handler(run_cli: RunCli) -> None:
    steps = run_to_end(
        run_cli, PIPELINES / "argo-dag-depends.yaml", 1
    )  # C failed: handled, but the workflow fails
    assert states(steps) == {
        "A": "succeeded",
        "B": "succeeded",
        "C": "failed",
        "should-execute-1": "succeeded",
        "should-execute-2": "succeeded",
        "should-not-execute": "upstream_failed",
        "should-execute-3": "succeeded",
        "notify": "succeeded",
        "celebrate": "skipped",
        "cry": "succeeded",
    }
    assert steps["notify"]["output"] == "send e-mail: argo-dag-depends failed"
    assert steps["cry"]["output"] == "boohoo!"


def test_the_schema_offers_exactly_the_rules_the_scheduler_knows() -> None:
    from pipeline_runner import triggers
    from pipeline_runner.schema import pipeline_schema

    step = pipeline_schema()["$defs"]["step"]["properties"]
    assert tuple(step["trigger"]["enum"]) == triggers.TRIGGERS
    assert step["trigger"]["default"] == triggers.DEFAULT
