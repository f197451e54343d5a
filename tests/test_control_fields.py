"""Control fields from data (issue: real pipelines natively, item 5): `timeout`, `retries` (and
its fields), `continue_on_error` and `priority` may be `{{ }}` templates rendered before the run
from params, template parameters or the for_each item (Argo's timeout parameter, GitHub's
`continue-on-error: ${{ matrix.experimental }}`), type-checked when rendered."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]

# GitHub: strategy.matrix.include gives `experimental: true` to one leg and
# `continue-on-error: ${{ matrix.experimental }}` lets that leg fail.
MATRIX = """
version: 1
name: experimental
params:
  attempts: 2
  legs:
    - {python: "3.11", experimental: false}
    - {python: "3.13", experimental: true}
templates:
  test:
    params: {wait: {default: 30s}}
    steps:
      - id: run
        uses: shell
        timeout: "{{ wait }}"
        with: {cmd: "sleep 5"}
steps:
  - id: leg
    uses: shell
    for_each: "{{ params.legs }}"
    key: "py{{ item.python | replace('.', '') }}"
    continue_on_error: "{{ item.experimental }}"
    retries: {max: "{{ params.attempts }}", delay: "{{ '10ms' }}", jitter: false}
    priority: "{{ 10 if item.experimental else 1 }}"
    with: {cmd: "echo run >> {{ step.key }}.count; test {{ item.experimental }} = false"}
  - id: slow
    template: test
    with: {wait: "{{ 0.2 }}"}
"""


def test_control_fields_rendered_from_the_item_params_and_template_parameters(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(MATRIX)
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(summary))
    assert result.code == 1 and no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert steps["leg.py311"]["state"] == "succeeded"
    assert steps["leg.py313"]["state"] == "failed_allowed"
    assert steps["leg.py313"]["attempts"] == 3  # retries.max from params
    assert (tmp_path / "py313.count").read_text() == "run\n" * 3
    assert steps["slow.run"]["state"] == "failed"
    assert steps["slow.run"]["error_kind"] == "timeout"  # the template parameter's 0.2s


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "timeout",
            "'{{ params.word }}'",
            "timeout: rendered to string 'soon': expected a duration",
        ),
        ("timeout", "'{{ 0 }}'", "timeout: invalid duration 0: must be more than 0"),
        (
            "retries",
            "'{{ -1 }}'",
            "retries: rendered to integer -1: expected an integer of 0 or more",
        ),
        (
            "retries",
            "{max: 1, backoff: '{{ 0.5 }}'}",
            "retries.backoff: rendered to number 0.5: expected a number of 1 or more",
        ),
        (
            "continue_on_error",
            "'{{ params.word }}'",
            "continue_on_error: rendered to string 'soon': expected true or false",
        ),
        (
            "priority",
            "'{{ params.word }}'",
            "priority: rendered to string 'soon': expected an integer",
        ),
        (
            "timeout",
            "'{{ steps.first.output }}'",
            "timeout: `timeout` must be known before the run",
        ),
        (
            "continue_on_error",
            "yes",
            "continue_on_error: expected true or false, found string 'yes'",
        ),
        (
            "priority",
            "high",
            "priority: expected an integer, found string 'high'",
        ),
    ],
)
def test_a_control_field_of_the_wrong_type_is_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline, field: str, value: str, message: str
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: bad-control
        params: {{word: soon}}
        steps:
          - id: first
            uses: noop
          - id: second
            needs: first
            uses: noop
            {field}: {value}
        """)
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert "p.yaml:10:" in result.output and f"steps[1].{message}" in result.output


def test_a_rendered_text_that_reads_as_the_type_is_taken(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """A string parameter (typed, so `--param` gives text) still sets a count or a flag."""
    path = write_pipeline("""
        version: 1
        name: texts
        params:
          tries: {type: string, default: "2"}
          allow: {type: string, default: "true"}
          limit: {type: string, default: "30"}
        steps:
          - id: a
            uses: shell
            retries: {max: "{{ params.tries }}", delay: 0, jitter: false}
            continue_on_error: "{{ params.allow }}"
            timeout: "{{ params.limit }}"
            with: {cmd: "exit 3"}
        """)
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(summary))
    assert result.code == 0 and no_traceback(result.output), result.output
    step = json.loads(summary.read_text())["steps"][0]
    assert (step["state"], step["attempts"]) == ("failed_allowed", 3)


def test_a_duration_past_what_a_float_holds_is_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    """An integer of 400 digits, written or rendered, is over the limit (it used to stop
    `validate` with an internal error: the float conversion overflowed)."""
    huge = "1" + "0" * 400
    path = write_pipeline(f"""
        version: 1
        name: huge
        params: {{n: {huge}}}
        steps:
          - id: a
            uses: noop
            timeout: {huge}
          - id: b
            uses: noop
            timeout: "{{{{ params.n }}}}"
        """)
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert "steps[0].timeout: invalid duration" in result.output
    assert "over the limit of 24 days (576h)" in result.output
    assert "steps[1].timeout: rendered to integer" in result.output
