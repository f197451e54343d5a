"""Needs on one instance of a fan-out (issue: real pipelines natively, item 3): `build.linux`
is instance `linux` of sibling `build`, as GitLab's needs:parallel:matrix and Argo's depends on
one item.  The need is checked when the file is planned; the step starts when that one instance
has succeeded, not the whole fan-out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PIPELINES, RunCli, no_traceback

WritePipeline = Callable[..., Path]


def test_the_gitlab_matrix_example_runs_its_test_after_its_one_build(
    run_cli: RunCli, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.json"
    path = PIPELINES / "gitlab-matrix-needs.yaml"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(summary))
    assert result.code == 0 and no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert (
        steps["rspec"]["output"] == "Running rspec on linux against Building linux for aws/app1..."
    )
    assert steps["rspec"]["started"] >= steps["build.aws-app1"]["finished"]


# The slow instance waits for a file that only the dependent writes: had `deploy` waited for
# the whole fan-out, the run would end in its timeout.
NOT_THE_OTHERS = """
version: 1
name: one-instance
steps:
  - id: build
    uses: shell
    for_each: [fast, slow]
    timeout: 60s
    with:
      cmd: >-
        if [ "{{ item }}" = slow ]; then
          while [ ! -e deployed ]; do sleep 0.05; done; echo slow-done;
        else echo fast-done; fi
  - id: deploy
    uses: shell
    needs: [build.fast]
    with: {cmd: "touch deployed; echo {{ steps['build.fast'].output }}"}
"""


def test_a_step_needing_one_instance_does_not_wait_for_the_others(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(NOT_THE_OTHERS)
    result = run_cli("run", str(path), "--progress", "plain", "--workers", "3", timeout=120)
    assert result.code == 0 and no_traceback(result.output), result.output
    assert (tmp_path / "deployed").exists()


TEMPLATE_FAN_OUT = """
version: 1
name: tenants
params: {tenants: [acme, globex]}
templates:
  etl:
    params: {tenant: {}}
    steps:
      - {id: extract, uses: shell, with: {cmd: "echo {{ tenant }}"}}
steps:
  - id: etl
    template: etl
    for_each: "{{ params.tenants }}"
    with: {tenant: "{{ item }}"}
  - id: report
    uses: shell
    needs: [etl.acme]
    with: {cmd: "echo {{ steps['etl.acme'].state }}"}
"""


def test_one_instance_of_a_template_fan_out_can_be_needed(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TEMPLATE_FAN_OUT)
    graph = run_cli("graph", str(path), "--json")
    assert graph.code == 0, graph.output
    nodes = {n["id"]: n for n in json.loads(graph.stdout)["nodes"]}
    assert nodes["report"]["needs"] == ["etl.acme"]
    summary = tmp_path / "summary.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(summary))
    assert result.code == 0, result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert steps["report"]["output"] == "succeeded"


@pytest.mark.parametrize(
    ("needs", "message"),
    [
        (
            "[build.linux-azure]",
            "steps[1].needs[0]: unknown instance 'build.linux-azure' "
            "(did you mean 'build.linux-aws'?)",
        ),
        ("[build.zzz]", "unknown instance 'build.zzz' ('build' has build.linux-aws, build.mac)"),
        ("[nope.x]", "steps[1].needs[0]: unknown step 'nope.x'"),
        ("[deploy.x]", "steps[1].needs[0]: step 'deploy.x' needs itself"),
    ],
)
def test_a_need_on_an_instance_that_does_not_exist_is_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline, needs: str, message: str
) -> None:
    path = write_pipeline(
        "version: 1\nname: n\nsteps:\n"
        "  - {id: build, uses: noop, for_each: [linux-aws, mac]}\n"
        f"  - {{id: deploy, uses: noop, needs: {needs}}}\n"
    )
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.stderr), result.output
    assert f"{path}:5:" in result.stderr and message in result.stderr, result.stderr


def test_instances_known_only_at_run_time_cannot_be_needed_one_by_one(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        "version: 1\nname: n\nsteps:\n"
        '  - {id: list, uses: python, with: {call: "json:loads", args: ["[1, 2]"]}}\n'
        "  - id: each\n    uses: noop\n    needs: [list]\n"
        '    for_each: "{{ steps.list.output }}"\n'
        "  - {id: after, uses: noop, needs: [each.0]}\n"
    )
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.stderr), result.output
    assert "'each' is expanded at run time" in result.stderr, result.stderr
