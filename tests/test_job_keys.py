"""Job-level keys (issue: real pipelines natively): `if`, `timeout`, `retries`,
`continue_on_error`, `priority`, `pool` and `env` on a step that instantiates a template apply to
every step of the instance, as a GitHub job's `if`, `timeout-minutes`, `continue-on-error` and
`env` apply to its steps.  A step's own value wins (its `env` entries over the job's); the job's
`if` and the step's must both hold."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]

JOB = """
version: 1
name: jobs
secrets: [TOKEN]
params: {deploy: true, limit: 0.5}
env: {LEVEL: top}
templates:
  deploy:
    params: {region: {}}
    steps:
      - id: push
        uses: shell
        env: {LEVEL: step}
        with: {cmd: 'echo "$REGION $LEVEL $JOB_TOKEN {{ region }}"'}
      - id: patient
        needs: push
        uses: shell
        timeout: 30s
        with: {cmd: "sleep 1; echo waited"}
      - id: slow
        needs: push
        uses: shell
        with: {cmd: "sleep 30"}
      - id: gated
        needs: push
        if: "steps.push.state == 'never'"
        uses: shell
        with: {cmd: "echo never"}
steps:
  - id: check
    uses: shell
    with: {cmd: "echo go"}
  - id: eu
    template: deploy
    needs: check
    if: steps.check.output == 'go' and params.deploy
    timeout: "{{ params.limit }}"
    continue_on_error: true
    env: {REGION: "eu-{{ params.deploy }}", LEVEL: job, JOB_TOKEN: "{{ secrets.TOKEN }}"}
    with: {region: eu}
  - id: us
    template: deploy
    needs: check
    if: steps.check.output == 'stop'
    with: {region: us}
  - id: after
    needs: [eu, us]
    trigger: none_failed  # `us` was skipped: by default that would skip `after` too
    uses: shell
    with: {cmd: "echo {{ steps.eu.state }} {{ steps.us.state }}"}
"""


def test_job_level_keys_apply_to_every_step_of_the_instance(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(JOB)
    summary = tmp_path / "s.json"
    result = run_cli(
        "run", str(path), "--progress", "plain", "--json", str(summary),
        env={"TOKEN": "tok-1234"},
    )  # fmt: skip
    assert result.code == 0 and no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    # env: the job's under the step's own (LEVEL), over the top-level env; secrets masked
    assert steps["eu.push"]["output"] == "eu-true step *** eu"
    # timeout: the job's 0.5s for a step without its own; the step's own 30s wins
    assert steps["eu.slow"]["error_kind"] == "timeout"
    assert steps["eu.patient"]["output"] == "waited"
    # continue_on_error: the job's, so the timed-out step does not fail the run
    assert steps["eu.slow"]["state"] == "failed_allowed"
    # if: the job's and the step's own must both hold
    assert steps["eu.gated"]["state"] == "skipped"
    assert {steps[f"us.{s}"]["state"] for s in ("push", "patient", "slow", "gated")} == {"skipped"}
    assert steps["after"]["output"] == "succeeded skipped"  # a group: one step succeeded


def test_a_job_if_from_the_item_skips_one_instance_of_a_fan_out(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline("""
        version: 1
        name: legs
        templates:
          build:
            params: {os: {}}
            steps:
              - id: compile
                uses: shell
                with: {cmd: "echo compiled on {{ os }}"}
              - id: nested
                template: inner
                needs: compile
          inner:
            steps:
              - id: test
                uses: shell
                with: {cmd: "echo tested"}
        steps:
          - id: build
            for_each: [linux, windows]
            template: build
            if: item != 'windows'
            with: {os: "{{ item }}"}
        """)
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--json", str(summary))
    assert result.code == 0 and no_traceback(result.output), result.output
    states = {s["id"]: s["state"] for s in json.loads(summary.read_text())["steps"]}
    assert states == {
        "build.linux.compile": "succeeded",
        "build.linux.nested.test": "succeeded",
        "build.windows.compile": "skipped",
        "build.windows.nested.test": "skipped",
    }


def test_job_level_retries_and_priority_are_each_steps_unless_it_sets_its_own(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline("""
        version: 1
        name: retried
        templates:
          flaky:
            steps:
              - id: a
                uses: shell
                with: {cmd: "echo x >> a.count; exit 1"}
              - id: b
                uses: shell
                retries: 0
                with: {cmd: "echo x >> b.count; exit 1"}
        steps:
          - id: job
            template: flaky
            retries: {max: 2, delay: 0, jitter: false}
            continue_on_error: true
            priority: 5
        """)
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 0 and no_traceback(result.output), result.output
    assert (tmp_path / "a.count").read_text() == "x\n" * 3
    assert (tmp_path / "b.count").read_text() == "x\n"


def test_bad_job_level_keys_are_located_at_the_instantiating_step(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline("""
        version: 1
        name: bad-job
        templates:
          t:
            steps:
              - id: s
                uses: noop
        steps:
          - id: a
            uses: noop
          - id: b
            template: t
            if: steps.a.state == 'succeeded'
            timeout: 0s
            pool: gpu
            env: {"A=B": x}
            continue_on_error: "{{ 'maybe' }}"
        """)
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    errors = [line.split(": error: ", 1)[1] for line in result.stderr.splitlines()[:-1]]
    assert errors == [
        "steps[1].if: steps.a is read here, but 'a' is not upstream of this step; add it to "
        "`needs` (needs: [a])",
        "steps[1].timeout: invalid duration '0s': must be more than 0",
        "steps[1].pool: unknown pool 'gpu' (pools: none)",
        "steps[1].env.A=B: invalid environment variable name 'A=B': a name is not empty and has "
        "no '=' or NUL character",
        "steps[1].continue_on_error: rendered to string 'maybe': expected true or false",
    ], result.stderr
