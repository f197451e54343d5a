"""Named outputs (issue: real pipelines natively, item 7): a step writes `NAME=VALUE` lines (or
GitHub's `NAME<<DELIM` blocks, or a JSON object) to the file `$RUNNER_OUTPUT` names, or calls
`ctx.set_output`; its dependents read `steps.X.outputs.NAME`, while stdout stays `steps.X.output`.
They are masked, recorded, kept by resume and restored by a cache hit.  A step reads its own id
and instance key as `step.id` and `step.key`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]


def outputs_of(summary: Path) -> dict[str, tuple[object, object]]:
    steps = json.loads(summary.read_text())["steps"]
    return {s["id"]: (s["output"], s["outputs"]) for s in steps}


SHELL = """
version: 1
name: named
steps:
  - id: build
    uses: shell
    with:
      cmd: |
        echo "version=1.2.3" >> "$RUNNER_OUTPUT"
        echo "empty=" >> "$RUNNER_OUTPUT"
        echo "eq=a=b" >> "$RUNNER_OUTPUT"
        { echo "notes<<EOF"; echo first; echo second; echo EOF; } >> "$RUNNER_OUTPUT"
        echo "version=1.2.4" >> "$RUNNER_OUTPUT"
        echo built
  - id: json
    uses: shell
    with:
      cmd: |
        echo '{"count": 3, "tags": ["a", "b"]}' > "$RUNNER_OUTPUT"
  - id: use
    needs: [build, json]
    uses: shell
    with:
      cmd: >-
        echo "{{ steps.build.output }} {{ steps.build.outputs.version }}
        [{{ steps.build.outputs.empty }}] {{ steps.build.outputs.eq }}
        {{ steps.build.outputs.notes | replace('\\n', '+') }}
        {{ steps.json.outputs.count + 1 }} {{ steps.json.outputs.tags | join(',') }}"
"""


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_shell_step_writes_named_outputs_its_dependents_read(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, executor: str
) -> None:
    path = write_pipeline(SHELL)
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--executor", executor, "--json", str(summary))
    assert result.code == 0 and no_traceback(result.output), result.output
    found = outputs_of(summary)
    assert found["build"] == (
        "built",
        {"version": "1.2.4", "empty": "", "eq": "a=b", "notes": "first\nsecond"},
    )
    assert found["json"] == ("", {"count": 3, "tags": ["a", "b"]})
    assert found["use"] == ("built 1.2.4 [] a=b first+second 4 a,b", None)


PYTHON = """
version: 1
name: named-python
steps:
  - id: calc
    uses: python
    with: {call: "mod:calc"}
  - id: env
    uses: python
    with: {call: "mod:by_file"}
  - id: use
    needs: [calc, env]
    uses: shell
    with:
      cmd: "echo {{ steps.calc.output }} {{ steps.calc.outputs.total }} {{ steps.env.outputs.via }}"
"""

MOD = """
import os

def calc(ctx):
    ctx.set_output("total", 42)
    ctx.set_output("shadowed", "by set_output")
    with open(ctx.env["RUNNER_OUTPUT"], "a") as f:
        f.write("shadowed=by the file\\n")
    return "main"

def by_file():
    with open(os.environ["RUNNER_OUTPUT"], "a") as f:
        f.write("via=file\\n")
"""


def test_a_python_step_gives_named_outputs_by_ctx_and_by_the_file(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(PYTHON, files={"mod.py": MOD})
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--json", str(summary))
    assert result.code == 0 and no_traceback(result.output), result.output
    found = outputs_of(summary)
    assert found["calc"] == ("main", {"total": 42, "shadowed": "by the file"})
    assert found["use"][0] == "main 42 file"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("just some text", "$RUNNER_OUTPUT line 1: expected NAME=VALUE or NAME<<DELIMITER"),
        ("ok=1\\nbad name=2", "$RUNNER_OUTPUT line 2: output name 'bad name' is not a name"),
        ("notes<<EOF\\nline", "'notes<<EOF' is never ended by a line 'EOF'"),
        ("{not json", "$RUNNER_OUTPUT starts with '{' but is not JSON"),
        ("[1, 2]", "expected NAME=VALUE"),
    ],
)
def test_a_malformed_outputs_file_fails_the_step_with_the_line_named(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, lines: str, message: str
) -> None:
    path = write_pipeline(f"""
        version: 1
        name: bad-outputs
        steps:
          - id: a
            uses: shell
            with:
              cmd: printf '{lines}\\n' > "$RUNNER_OUTPUT"
          - id: b
            needs: a
            uses: noop
        """)
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(summary))
    assert result.code == 1 and no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert steps["a"]["state"] == "failed" and message in steps["a"]["error"]
    assert steps["b"]["state"] == "upstream_failed"


def test_an_outputs_file_over_the_limit_fails_the_step(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline("""
        version: 1
        name: big-outputs
        steps:
          - id: a
            uses: shell
            with:
              cmd: >-
                printf 'x=' > "$RUNNER_OUTPUT";
                head -c 16777300 /dev/zero | tr '\\0' a >> "$RUNNER_OUTPUT"
        """)
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 1 and no_traceback(result.output), result.output
    assert "$RUNNER_OUTPUT holds more than 16,777,216 bytes" in result.output


def test_secrets_in_named_outputs_are_masked_everywhere(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline("""
        version: 1
        name: secret-outputs
        secrets: [TOKEN]
        steps:
          - id: a
            uses: shell
            with: {cmd: 'echo "token=$TOKEN" >> "$RUNNER_OUTPUT"'}
        """)
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--json", str(summary), env={"TOKEN": "hunter2-xyz"})
    assert result.code == 0, result.output
    assert outputs_of(summary)["a"][1] == {"token": "***"}
    stored = [
        row[0]
        for row in sqlite3.connect(tmp_path / "state" / "runs.db").execute(
            "SELECT outputs_json FROM steps"
        )
    ]
    assert stored == ['{"token": "***"}']


RESUMED = """
version: 1
name: resumed
steps:
  - id: a
    uses: shell
    with: {cmd: 'echo run >> a.count; echo "n=7" >> "$RUNNER_OUTPUT"; echo main'}
  - id: b
    needs: a
    uses: shell
    with: {cmd: 'test -e ok && echo "{{ steps.a.output }}-{{ steps.a.outputs.n }}"'}
"""


def test_resume_keeps_the_named_outputs_of_a_kept_step(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(RESUMED)
    first = run_cli("run", str(path), "--progress", "plain")
    assert first.code == 1, first.output
    run_id = first.output.split("run ")[-1].split()[0]
    (tmp_path / "ok").touch()
    summary = tmp_path / "s.json"
    second = run_cli("resume", run_id, "--progress", "plain", "--json", str(summary))
    assert second.code == 0 and no_traceback(second.output), second.output
    assert (tmp_path / "a.count").read_text() == "run\n"  # a was kept, not run again
    assert outputs_of(summary)["b"][0] == "main-7"


def test_a_cache_hit_restores_the_named_outputs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        RESUMED.replace(
            "    uses: shell\n    with: {cmd: 'echo run",
            "    uses: shell\n    cache: true\n    with: {cmd: 'echo run",
            1,
        )
    )
    (tmp_path / "ok").touch()
    for _ in range(2):
        summary = tmp_path / "s.json"
        result = run_cli("run", str(path), "--progress", "plain", "--json", str(summary))
        assert result.code == 0 and no_traceback(result.output), result.output
        assert outputs_of(summary)["b"][0] == "main-7"
    assert (tmp_path / "a.count").read_text() == "run\n"  # the second run took the cache
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert steps["a"]["state"] == "cached" and steps["a"]["outputs"] == {"n": "7"}


IDS = """
version: 1
name: ids
templates:
  stage:
    params: {name: {}}
    steps:
      - id: work
        uses: shell
        with: {cmd: 'echo "at=$(echo {{ step.id }})" >> "$RUNNER_OUTPUT"; echo {{ name }}'}
    outputs:
      where: "{{ steps.work.outputs.at }}"
steps:
  - id: fan
    uses: shell
    for_each: [x, y]
    with: {cmd: "echo {{ step.id }} {{ step.key }}"}
  - id: single
    uses: shell
    if: step.key is none
    with: {cmd: "echo {{ step.id }}"}
  - id: stage
    template: stage
    with: {name: s1}
  - id: report
    needs: [fan, stage]
    uses: shell
    with:
      cmd: >-
        echo {{ steps.stage.outputs.where }} {{ steps.stage.output.where }}
        {{ steps.fan.outputs.y }}
"""


def test_a_step_reads_its_own_id_and_key_and_a_template_instance_has_named_outputs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(IDS)
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--json", str(summary))
    assert result.code == 0 and no_traceback(result.output), result.output
    found = outputs_of(summary)
    assert found["fan.x"][0] == "fan.x x"
    assert found["single"][0] == "single"
    assert found["stage.work"] == ("s1", {"at": "stage.work"})
    assert found["report"][0] == "stage.work stage.work fan.y y"


def test_a_fan_outs_outputs_stay_its_instances_by_key(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """On a fan-out, `steps.X.outputs` is key -> output as before; an instance's named outputs
    are read on the instance."""
    path = write_pipeline("""
        version: 1
        name: fan-named
        steps:
          - id: fan
            uses: shell
            for_each: [x, y]
            with: {cmd: 'echo "up={{ item | upper }}" >> "$RUNNER_OUTPUT"; echo {{ item }}'}
          - id: use
            needs: fan
            uses: shell
            with: {cmd: "echo {{ steps.fan.outputs.x }} {{ steps['fan.y'].outputs.up }}"}
        """)
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--json", str(summary))
    assert result.code == 0 and no_traceback(result.output), result.output
    assert outputs_of(summary)["use"][0] == "x Y"


def test_a_named_output_read_with_fromjson_is_a_computed_matrix(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """GitHub's `matrix: ${{ fromJSON(needs.prepare.outputs.matrix) }}`: a named output is
    text; `fromjson` makes it the matrix of a run-time fan-out.  Text that is not JSON fails
    the fan-out with a message naming the filter."""
    path = write_pipeline("""
        version: 1
        name: fromjson
        steps:
          - id: prepare
            uses: shell
            with:
              cmd: >-
                echo 'matrix={"matrix": {"os": ["linux", "mac"]}, "exclude": [{"os": "mac"}]}'
                >> "$RUNNER_OUTPUT"; echo 'bad=[1,' >> "$RUNNER_OUTPUT"
          - id: test
            uses: shell
            needs: prepare
            for_each: "{{ steps.prepare.outputs.matrix | fromjson }}"
            with: {cmd: "echo {{ item.os }}"}
          - id: broken
            uses: shell
            needs: prepare
            for_each: "{{ steps.prepare.outputs.bad | fromjson }}"
            with: {cmd: "echo {{ item }}"}
    """)
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(summary))
    assert result.code == 1 and no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert steps["test.linux"]["output"] == "linux"
    assert "test.mac" not in steps
    assert steps["broken"]["state"] == "failed"
    assert "fromjson: not JSON" in steps["broken"]["error"], steps["broken"]
