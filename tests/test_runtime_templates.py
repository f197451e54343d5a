"""Run-time fan-out of a template (issue: real pipelines natively, item 1): a `template:` step
whose `for_each` reads a step's output (GitHub's `fromJson(needs.x.outputs.y)` matrix of a
multi-step job, Argo's `withParam` over a steps template).  Its body is checked before the run
like a static instance's; its instances are planned when the needs finish, recorded, resumable,
and `steps.T.outputs` aggregates them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import (
    PIPELINES,
    RunCli,
    no_traceback,
    processes_with,
    summary_of,
    summary_with_outputs,
    wait_for,
)
from test_engine import marker, popen, start_runner  # noqa: F401

WritePipeline = Callable[..., Path]

FANOUT = """
version: 1
name: computed-jobs
templates:
  job:
    params: {os: {}, py: {default: "3"}}
    steps:
      - id: setup
        uses: shell
        with: {cmd: "echo {{ os }}"}
      - id: test
        uses: shell
        needs: [setup]
        with: {cmd: "echo {{ steps.setup.output }}-{{ py }}"}
    outputs:
      result: "{{ steps.test.output }}"
steps:
  - id: prepare
    uses: shell
    with:
      parse: json
      cmd: |
        echo 'PLAN'
  - id: build
    template: job
    needs: [prepare]
    for_each: "{{ steps.prepare.output }}"
    with: {os: "{{ item.os }}", py: "{{ item.py }}"}
  - id: collect
    uses: shell
    needs: [build]
    with: {cmd: "echo '{{ steps.build.outputs | tojson }}'"}
"""

MATRIX = json.dumps(
    {
        "matrix": {"os": ["linux", "macos"], "py": ["3.11", "3.12"]},
        "exclude": [{"os": "macos", "py": "3.11"}],
    }
)


def test_a_template_fans_out_over_a_matrix_computed_by_an_earlier_step(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(FANOUT.replace("PLAN", MATRIX))
    code, steps, output = summary_of(run_cli, path)
    assert code == 0, output
    assert json.loads(steps["collect"]["output"]) == {
        "linux.3-11": {"result": "linux-3.11"},
        "linux.3-12": {"result": "linux-3.12"},
        "macos.3-12": {"result": "macos-3.12"},
    }
    # each instance's steps ran in order; `collect` after every one of them
    for key in ("linux.3-11", "linux.3-12", "macos.3-12"):
        setup, test = steps[f"build.{key}.setup"], steps[f"build.{key}.test"]
        assert test["started"] >= setup["finished"]
        assert steps["collect"]["started"] >= test["finished"]


def test_a_template_fans_out_over_a_computed_list(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    plan = json.dumps([{"os": "linux", "py": "3"}, {"os": "bsd", "py": "2"}])
    text = FANOUT.replace("PLAN", plan).replace(
        'for_each: "{{ steps.prepare.output }}"',
        'for_each: "{{ steps.prepare.output }}"\n    as: leg\n    key: "{{ leg.os }}"',
    )
    text = text.replace('{os: "{{ item.os }}", py: "{{ item.py }}"}', '{os: "{{ leg.os }}"}')
    code, steps, output = summary_of(run_cli, write_pipeline(text))
    assert code == 0, output
    assert json.loads(steps["collect"]["output"]) == {
        "linux": {"result": "linux-3"},
        "bsd": {"result": "bsd-3"},
    }


def test_graph_shows_a_mapped_template(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(FANOUT.replace("PLAN", MATRIX))
    text = run_cli("graph", str(path))
    assert text.code == 0, text.output
    assert "  build [template: setup, test] (mapped)  <- prepare\n" in text.stdout
    dot = run_cli("graph", str(path), "--dot")
    assert '"build" [label="build [template: setup, test] (mapped)", shape=box3d' in dot.stdout, (
        dot.stdout
    )
    mermaid = run_cli("graph", str(path), "--mermaid")
    assert '[["build [template: setup, test] (mapped)"]]' in mermaid.stdout, mermaid.stdout


BROKEN_BODY = """
version: 1
name: broken
templates:
  job:
    params: {os: {}}
    steps:
      - id: setup
        uses: shell
        with: {cmd: "echo {{ os }} {{ steps.test.output }}"}
      - id: test
        uses: shell
        with: {cmd: "echo {{ osx }}"}
steps:
  - id: prepare
    uses: shell
    with: {parse: json, cmd: "echo '[]'"}
  - id: build
    template: job
    needs: [prepare]
    for_each: "{{ steps.prepare.output }}"
    with: {os: "{{ item.os }}", oss: 1}
"""


def test_validate_checks_the_body_of_a_run_time_fan_out(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(BROKEN_BODY)
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors == [
        f"{path}:9:21: error: templates.job.steps[0].with.cmd: steps.test is read here, but "
        "'test' is not upstream of this step; add it to `needs` (needs: [test])",
        f"{path}:12:21: error: templates.job.steps[1].with.cmd: undefined name 'osx' "
        "(did you mean 'os'?)",
        f"{path}:21:33: error: steps[1].with.oss: template 'job' has no parameter 'oss' "
        "(did you mean 'os'?)",
    ], result.stderr


def test_an_instance_id_that_spells_a_planned_id_fails_the_fan_out(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    # item `a` makes the step `build.a.setup`; item `a.setup` would make an instance with
    # that id
    plan = json.dumps([{"os": "a"}, {"os": "a.setup"}])
    text = FANOUT.replace("PLAN", plan).replace(
        'for_each: "{{ steps.prepare.output }}"',
        'for_each: "{{ steps.prepare.output }}"\n    key: "{{ item.os }}"',
    )
    text = text.replace('{os: "{{ item.os }}", py: "{{ item.py }}"}', '{os: "{{ item.os }}"}')
    code, steps, output = summary_of(run_cli, write_pipeline(text))
    assert code == 1, output
    assert (
        "build: for_each: the id 'build.a.setup' is made twice: a key with '.' can spell the id "
        "of another item's step; choose another key" in output
    ), output
    assert steps["collect"]["state"] == "upstream_failed"


# Each step of an instance appends `<key>-<step>` to out.txt; the kill comes mid-way.
SLOW = """
version: 1
name: resumable
env:
  MARK: MARKER
templates:
  job:
    params: {n: {}}
    steps:
      - id: one
        uses: shell
        with: {cmd: "echo {{ n }}-one >> out.txt; sleep 0.2; echo {{ n }}"}
      - id: two
        uses: shell
        needs: [one]
        with: {cmd: "echo {{ n }}-two >> out.txt; sleep 0.2; echo {{ steps.one.output }}"}
    outputs: {n: "{{ steps.two.output }}"}
steps:
  - id: prepare
    uses: shell
    with: {parse: json, cmd: "echo prepare >> out.txt; echo '[\\"a\\", \\"b\\", \\"c\\", \\"d\\"]'"}
  - id: fan
    template: job
    needs: [prepare]
    for_each: "{{ steps.prepare.output }}"
    with: {n: "{{ item }}"}
outputs:
  all: "{{ steps.fan.outputs | tojson }}"
"""


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_run_time_template_fan_out_killed_mid_run_resumes_to_the_end_once(
    run_cli: RunCli,
    write_pipeline: WritePipeline,
    tmp_path: Path,
    marker: str,  # noqa: F811
    popen: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    path = write_pipeline(SLOW.replace("MARKER", marker))
    out = tmp_path / "out.txt"
    proc = start_runner(tmp_path, path, "--workers", "2", env={"MARK": marker})
    popen.append(proc)
    assert wait_for(lambda: len(lines(out)) >= 4, timeout=60), lines(out)
    os.kill(proc.pid, signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=30)
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)
    seen_at_kill = lines(out)
    assert len(seen_at_kill) < 9, "the run ended before the kill"
    run_id = stdout.split("run ", 1)[1].split(":", 1)[0]
    db = sqlite3.connect(tmp_path / "state" / "runs.db")
    try:
        recorded = {
            row[0]: row[1]
            for row in db.execute("SELECT step_id, state FROM steps WHERE run_id = ?", (run_id,))
        }
    finally:
        db.close()
    assert "fan.a.one" in recorded, recorded  # the instances are recorded as they are planned
    done_before = {sid for sid, state in recorded.items() if state == "succeeded"}

    resumed = run_cli("resume", run_id, "--progress", "plain", "--workers", "2")
    assert resumed.code == 0 and no_traceback(resumed.output), resumed.output
    counts = {line: lines(out).count(line) for line in set(lines(out))}
    assert set(counts) == {"prepare"} | {f"{k}-{s}" for k in "abcd" for s in ("one", "two")}
    twice = {line for line, c in counts.items() if c == 2}
    assert all(c in (1, 2) for c in counts.values()), counts
    # Only what had started and not been recorded as succeeded at the kill ran again (the
    # workers may hold more attempts than they have processes, so not a fixed number).
    assert twice <= set(seen_at_kill), (twice, seen_at_kill)
    for line in twice:
        key, step = line.split("-")
        assert f"fan.{key}.{step}" not in done_before, (line, done_before)
    shown = json.loads(run_cli("show", run_id, "--json").stdout)
    assert shown["run"]["status"] == "succeeded"
    assert json.loads(shown["run"]["outputs"]["all"]) == {k: {"n": k} for k in "abcd"}


def test_the_github_computed_matrix_example_runs_each_job_of_the_matrix(
    run_cli: RunCli, tmp_path: Path
) -> None:
    path = PIPELINES / "github-computed-matrix.yaml"
    out = tmp_path / "summary.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(out))
    assert result.code == 0 and no_traceback(result.output), result.output
    summary = json.loads(out.read_text())
    assert json.loads(summary["outputs"]["files"]) == {
        "example_1": {"path": "example_1/", "text": "Hello from example 1"},
        "example_2": {"path": "example_2/", "text": "Hello from example 2"},
    }
    ids = [s["id"] for s in summary["steps"]]
    for key in ("example_1", "example_2"):
        inner = [f"use_matrix.{key}.{s}" for s in ("checkout", "echo_output", "cat_file")]
        assert [i for i in ids if i.startswith(f"use_matrix.{key}.")] == inner


NESTED = """
version: 1
name: nested
templates:
  inner:
    params: {v: {}}
    steps:
      - id: show
        uses: shell
        with: {cmd: "echo inner-{{ v }}"}
  outer:
    params: {os: {}}
    steps:
      - id: list
        uses: shell
        with: {cmd: "echo '[\\"a\\", \\"b\\"]'", parse: json}
      - id: fan
        template: inner
        needs: [list]
        for_each: "{{ steps.list.output }}"
        as: v2
        with: {v: "{{ os }}-{{ v2 }}"}
      - id: static
        uses: shell
        for_each: [x]
        with: {cmd: "echo static-{{ os }}-{{ item }}"}
    outputs:
      fan: "{{ steps.fan.outputs }}"
      static: "{{ steps.static.outputs }}"
steps:
  - id: plan
    uses: shell
    with: {cmd: "echo '[\\"linux\\", \\"bsd\\"]'", parse: json}
  - id: top
    template: outer
    needs: [plan]
    for_each: "{{ steps.plan.output }}"
    with: {os: "{{ item }}"}
outputs:
  all: "{{ steps.top.outputs | tojson }}"
"""


def test_a_run_time_fan_out_inside_a_run_time_fan_out(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    code, summary, output = summary_with_outputs(run_cli, write_pipeline(NESTED))
    assert code == 0, output
    assert json.loads(summary["outputs"]["all"]) == {
        os: {
            "fan": {v: {"show": f"inner-{os}-{v}"} for v in "ab"},
            "static": {"x": f"static-{os}-x"},
        }
        for os in ("linux", "bsd")
    }


def test_fail_fast_in_a_computed_matrix_of_templates_cancels_the_other_instances(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    plan = json.dumps({"matrix": {"os": ["bad", "slow"]}, "fail_fast": True})
    text = FANOUT.replace("PLAN", plan).replace(
        'with: {cmd: "echo {{ os }}"}',
        'with: {cmd: "if [ {{ os }} = bad ]; then while [ ! -e slow.started ]; do sleep 0.02; '
        'done; exit 1; fi; touch slow.started; while [ ! -e never ]; do sleep 0.05; done"}\n'
        "        timeout: 60s",
    )
    code, steps, output = summary_of(run_cli, write_pipeline(text), "--workers", "3")
    assert code == 1, output
    states = {sid: s["state"] for sid, s in steps.items()}
    assert states == {
        "prepare": "succeeded",
        "build.bad.setup": "failed",
        "build.bad.test": "upstream_failed",
        "build.slow.setup": "cancelled",
        "build.slow.test": "cancelled",
        "collect": "upstream_failed",
    }, output


def test_resume_only_another_step_keeps_the_recorded_instances(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    text = FANOUT.replace("PLAN", MATRIX) + (
        "  - id: flaky\n"
        "    uses: shell\n"
        '    with: {cmd: "if [ -e fixed ]; then echo fine; else exit 1; fi"}\n'
        "outputs:\n"
        '  built: "{{ steps.build.outputs | tojson }}"\n'
    )
    path = write_pipeline(text)
    code, steps, output = summary_of(run_cli, path)
    assert code == 1 and steps["flaky"]["state"] == "failed", output
    run_id = output.split("run ", 1)[1].split(":", 1)[0]
    (tmp_path / "fixed").touch()
    out = tmp_path / "resumed.json"
    resumed = run_cli(
        "resume", run_id, "--only", "flaky", "--progress", "plain", "--json", str(out)
    )
    assert resumed.code == 0 and no_traceback(resumed.output), resumed.output
    summary = json.loads(out.read_text())
    states = {s["id"]: s["state"] for s in summary["steps"]}
    assert states["build.macos.3-12.test"] == "succeeded" and states["flaky"] == "succeeded"
    assert json.loads(summary["outputs"]["built"]) == {
        "linux.3-11": {"result": "linux-3.11"},
        "linux.3-12": {"result": "linux-3.12"},
        "macos.3-12": {"result": "macos-3.12"},
    }


def test_a_fan_out_that_fails_before_its_items_are_known_is_a_failed_step_in_every_report(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """A run-time for_each whose expression fails (here: a number, not a list) is the one
    record of that failure: the summary counts it, --json lists it and JUnit fails on it
    (they used to show a failed run with every step green)."""
    path = write_pipeline("""
        version: 1
        name: badfan
        steps:
          - id: prepare
            uses: shell
            with: {cmd: "echo 5", parse: json}
          - id: broken
            uses: shell
            needs: prepare
            for_each: "{{ steps.prepare.output }}"
            with: {cmd: "echo {{ item }}"}
    """)
    summary, junit = tmp_path / "s.json", tmp_path / "j.xml"
    result = run_cli(
        "run", str(path), "--progress", "plain", "--json", str(summary), "--junit", str(junit)
    )
    assert result.code == 1 and no_traceback(result.output), result.output
    data = json.loads(summary.read_text())
    assert data["counts"] == {"succeeded": 1, "failed": 1}
    assert [(s["id"], s["state"]) for s in data["steps"]] == [
        ("prepare", "succeeded"),
        ("broken", "failed"),
    ]
    assert 'failures="1"' in junit.read_text()
