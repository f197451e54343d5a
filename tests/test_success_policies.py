"""Success policies on fan-outs (`success: {min, ratio, critical}`), through the `runner`
command: the fan-out reads `partial` when some instances failed and the policy holds, its
dependents run and read `steps.X.states` / `steps.X.errors`, and the run succeeds; when the
policy does not hold the fan-out fails as without one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import RunCli, no_traceback, summary_of

WritePipeline = Callable[..., Path]

# A fan-out over four regions; those named in FAIL exit 1.  `report` reads how it went.
FANOUT = """
version: 1
name: regions
steps:
  - id: deploy
    for_each: [eu, us, asia, au]
    uses: shell
    with:
      cmd: "case ' {fail} ' in *' {{{{ item }}}} '*) echo boom-{{{{ item }}}} >&2; exit 1;; esac"
    success: {policy}
  - id: report
    needs: [deploy]
    uses: shell
    with:
      cmd: >-
        printf '%s\\n' '{{{{ steps.deploy.state }}}}' '{{{{ steps.deploy.states | tojson }}}}'
        '{{{{ steps.deploy.errors | tojson }}}}'
        '{{{{ steps.deploy.outputs | tojson }}}}' > report.txt
finally:
  - id: status
    uses: shell
    with: {{cmd: "echo {{{{ run.status }}}} > status.txt"}}
"""


def fanout(write_pipeline: WritePipeline, policy: str, fail: str) -> Path:
    return write_pipeline(FANOUT.format(policy=policy, fail=fail))


def report(tmp_path: Path) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    state, states, errors, outputs = (tmp_path / "report.txt").read_text().splitlines()
    return state, json.loads(states), json.loads(errors), json.loads(outputs)


def test_min_holds_the_fanout_is_partial_its_dependents_run_and_the_run_succeeds(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = fanout(write_pipeline, "{min: 3}", "asia")
    code, steps, output = summary_of(run_cli, path)
    assert code == 0, output
    assert steps["deploy.asia"]["state"] == "failed"
    assert steps["report"]["state"] == "succeeded"
    state, states, errors, outputs = report(tmp_path)
    assert state == "partial"
    assert states == {"eu": "succeeded", "us": "succeeded", "asia": "failed", "au": "succeeded"}
    assert errors == {"asia": "command exited with code 1"}
    assert sorted(outputs) == ["au", "eu", "us"]  # a failed instance gave nothing
    assert (tmp_path / "status.txt").read_text().strip() == "succeeded"
    [told] = [line for line in output.splitlines() if "◐ partial" in line]
    assert " deploy (" in told
    assert told.endswith("): 1 of 4 instance(s) did not succeed; the success policy holds")


def test_min_not_met_fails_the_fanout_with_the_reason_and_stops_its_dependents(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = fanout(write_pipeline, "{min: 3}", "asia us")
    code, steps, output = summary_of(run_cli, path)
    assert code == 1, output
    assert steps["report"]["state"] == "upstream_failed"
    assert "needs deploy, which failed" in steps["report"]["error"]
    assert not (tmp_path / "report.txt").exists()
    assert (tmp_path / "status.txt").read_text().strip() == "failed"
    reason = "success policy: 2 instance(s) succeeded, min is 3"
    assert any(" deploy (" in x and x.endswith(f"): {reason}") for x in output.splitlines())
    run_id = json.loads(run_cli("runs", "--json").stdout)[0]["id"]
    shown = json.loads(run_cli("show", "--json", run_id).stdout)["steps"]
    [fan] = [r for r in shown if r["step_id"] == "deploy"]
    assert fan["state"] == "failed" and fan["error"] == reason


def test_ratio_counts_the_share_of_instances_that_succeeded(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    held = fanout(write_pipeline, "{ratio: 0.75}", "au")
    assert summary_of(run_cli, held)[0] == 0
    assert report(tmp_path)[0] == "partial"
    (tmp_path / "report.txt").unlink()
    missed = fanout(write_pipeline, "{ratio: 0.75}", "au eu")
    code, steps, output = summary_of(run_cli, missed)
    assert code == 1, output
    assert steps["report"]["state"] == "upstream_failed"


def test_critical_instances_must_succeed(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = fanout(write_pipeline, "{critical: [eu, us]}", "asia au")
    assert summary_of(run_cli, path)[0] == 0
    assert report(tmp_path)[0] == "partial"
    path = fanout(write_pipeline, "{critical: [eu, us]}", "us")
    code, steps, output = summary_of(run_cli, path)
    assert code == 1 and steps["report"]["state"] == "upstream_failed", output


def test_all_succeeded_reads_succeeded(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = fanout(write_pipeline, "{min: 1}", "none")
    assert summary_of(run_cli, path)[0] == 0
    state, states, errors, _ = report(tmp_path)
    assert state == "succeeded" and set(states.values()) == {"succeeded"} and errors == {}


def test_fail_fast_leaves_a_failure_under_a_policy_to_the_policy(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = fanout(write_pipeline, "{min: 3}", "eu")
    code, steps, output = summary_of(run_cli, path, "--fail-fast", "--workers", "1")
    assert code == 0, output
    assert all(steps[f"deploy.{k}"]["state"] == "succeeded" for k in ("us", "asia", "au"))
    assert report(tmp_path)[0] == "partial"


# A template fanned out at run time over a list a step prints (Graflow's parallel group with
# a critical member): the instance `b` fails inside the template.
TEMPLATE_FANOUT = """
version: 1
name: template-fanout
templates:
  ingest:
    params: {{source: {{}}}}
    steps:
      - id: fetch
        uses: shell
        with: {{cmd: "test {{{{ source }}}} != {fail}"}}
      - id: store
        needs: [fetch]
        uses: shell
        with: {{cmd: "echo stored {{{{ source }}}}"}}
steps:
  - id: sources
    uses: shell
    with: {{cmd: "echo '[\\"a\\", \\"b\\", \\"c\\"]'", parse: json}}
  - id: ingest
    needs: [sources]
    for_each: "{{{{ steps.sources.output }}}}"
    template: ingest
    with: {{source: "{{{{ item }}}}"}}
    success: {policy}
  - id: report
    needs: [ingest]
    uses: shell
    with:
      cmd: >-
        printf '%s\\n' '{{{{ steps.ingest.state }}}}' '{{{{ steps.ingest.states | tojson }}}}'
        '{{{{ steps.ingest.errors | tojson }}}}'
        '{{{{ steps.ingest.outputs | tojson }}}}' > report.txt
"""


def test_a_template_fanned_out_at_run_time_takes_a_policy(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(TEMPLATE_FANOUT.format(fail="b", policy="{critical: [a, c]}"))
    code, steps, output = summary_of(run_cli, path)
    assert code == 0, output
    assert steps["ingest.b.fetch"]["state"] == "failed"
    assert steps["ingest.b.store"]["state"] == "upstream_failed"
    state, states, errors, _ = report(tmp_path)
    assert state == "partial"
    assert states == {"a": "succeeded", "b": "failed", "c": "succeeded"}
    assert errors == {"b": "command exited with code 1"}  # the step inside that failed
    (tmp_path / "report.txt").unlink()
    path = write_pipeline(TEMPLATE_FANOUT.format(fail="c", policy="{critical: [a, c]}"))
    code, steps, output = summary_of(run_cli, path)
    assert code == 1 and steps["report"]["state"] == "upstream_failed", output
    # A key only known at run time that no item has: the policy cannot hold.
    path = write_pipeline(TEMPLATE_FANOUT.format(fail="none", policy="{critical: [zz]}"))
    code, steps, output = summary_of(run_cli, path)
    assert code == 0 and steps["report"]["state"] == "succeeded", output  # none failed


def test_a_static_template_fanout_takes_a_policy(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    text = TEMPLATE_FANOUT.format(fail="a", policy="{min: 2}")
    text = text.replace('"{{ steps.sources.output }}"', "[a, b, c]")
    code, _, output = summary_of(run_cli, write_pipeline(text))
    assert code == 0, output
    assert report(tmp_path)[0] == "partial"


def test_validate_rejects_a_policy_that_cannot_work(
    write_pipeline: WritePipeline, run_cli: RunCli
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: bad
        steps:
          - id: fan
            for_each: [a, b]
            uses: noop
            success: {min: 3, critical: [a, zz]}
          - id: one
            uses: noop
            success: {min: 1}
        """
    )
    result = run_cli("validate", path.name)
    assert result.code == 2 and no_traceback(result.output)
    assert result.stderr.splitlines()[:3] == [
        f"{path.name}:7:20: error: steps[0].success.min: min is 3, but the for_each has 2 "
        "instance(s)",
        f"{path.name}:7:37: error: steps[0].success.critical[1]: no instance has the key 'zz' "
        "(keys: a, b)",
        f"{path.name}:10:5: error: steps[1].success: `success` is a policy of a fan-out: this "
        "step has no `for_each`",
    ]
