"""Report files of a run, read as their consumers read them: `--json` (a summary for tools),
`--junit` (CI test reports), `--events` (JSON lines, one state change each) and `--trace`
(Chrome/Perfetto trace events)."""

from __future__ import annotations

import itertools
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, RunCli, no_traceback
from test_engine import runner_text

WritePipeline = Callable[..., Path]

ETL_STEPS = {
    "prepare",
    "report",
    *(
        f"etl.{t}.{s}"
        for t in ("acme", "globex", "initech")
        for s in ("extract", "transform", "load")
    ),
}


def run_with_reports(run_cli: RunCli, path: Path, out: Path, *args: str) -> Any:
    result = run_cli(
        "run",
        str(path),
        "--progress",
        "plain",
        "--workers",
        "2",
        "--json",
        str(out / "summary.json"),
        "--junit",
        str(out / "junit.xml"),
        "--events",
        str(out / "events.jsonl"),
        "--trace",
        str(out / "trace.json"),
        *args,
    )
    assert no_traceback(runner_text(result.output)), result.output
    return result


@pytest.fixture
def etl(tmp_path: Path, run_cli: RunCli) -> Path:
    """The etl example run once with every report; returns the folder of the reports."""
    shutil.copytree(PIPELINES, tmp_path / "pipelines")
    out = tmp_path / "reports"
    out.mkdir()
    result = run_with_reports(run_cli, tmp_path / "pipelines" / "etl.yaml", out)
    assert result.code == 0, result.output
    return out


def test_json_summary_of_the_etl_example(etl: Path, run_cli: RunCli) -> None:
    data = json.loads((etl / "summary.json").read_text())
    assert data["status"] == "succeeded" and data["exit_code"] == 0
    assert data["pipeline"] == "etl"
    shown = json.loads(run_cli("show", data["run_id"], "--json").stdout)
    assert shown["run"]["id"] == data["run_id"]
    assert data["counts"] == {"succeeded": 11}
    assert data["outputs"]["report"]["grand_total"] == 72
    assert data["outputs"] == shown["run"]["outputs"]
    assert data["duration"] >= 0
    steps = {s["id"]: s for s in data["steps"]}
    assert set(steps) == ETL_STEPS
    for step in steps.values():
        assert step["state"] == "succeeded"
        assert step["attempts"] == 1
        assert isinstance(step["duration"], float) and step["duration"] >= 0
        assert step["started"] <= step["finished"]
        assert step["error"] is None
    assert steps["prepare"]["output"] == "preparing 3 tenants"
    assert steps["etl.acme.load"]["group"] == "etl.acme"


def test_junit_has_a_suite_per_template_instance(etl: Path) -> None:
    root = ET.parse(etl / "junit.xml").getroot()
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"etl", "etl.acme", "etl.globex", "etl.initech"}
    assert [c.get("name") for c in suites["etl"].findall("testcase")] == ["prepare", "report"]
    for tenant in ("acme", "globex", "initech"):
        suite = suites[f"etl.{tenant}"]
        names = [c.get("name") for c in suite.findall("testcase")]
        assert names == [f"etl.{tenant}.{s}" for s in ("extract", "transform", "load")]
    for suite in suites.values():
        cases = suite.findall("testcase")
        assert suite.get("tests") == str(len(cases))
        assert suite.get("failures") == "0" and suite.get("skipped") == "0"
        assert float(suite.get("time") or "x") >= 0
        for case in cases:
            assert case.get("classname") and float(case.get("time") or "x") >= 0
            assert list(case) == []  # passed: no failure, no skipped
    assert root.get("tests") == "11" and root.get("failures") == "0"


def test_events_are_json_lines_of_state_changes_in_order(etl: Path) -> None:
    lines = (etl / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert events[0]["event"] == "run_started"
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "succeeded"
    run_ids = {e["run_id"] for e in events}
    assert len(run_ids) == 1
    changes = [e for e in events if e["event"] == "state"]
    assert len(changes) == len(events) - 2
    times = [e["time"] for e in changes]
    assert times == sorted(times)
    last: dict[str, str] = {}
    for change in changes:
        # every line is a real change, and follows on from the step's previous line
        assert change["state"] != change["previous"], change
        assert change["previous"] == last.get(change["step"], "pending"), change
        last[change["step"]] = change["state"]
    for step in ETL_STEPS:
        states = [c["state"] for c in changes if c["step"] == step]
        assert states == ["running", "succeeded"], (step, states)


def test_trace_has_one_track_per_worker(etl: Path) -> None:
    trace = json.loads((etl / "trace.json").read_text())
    events = trace["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["name"] for e in spans} == ETL_STEPS
    assert len(spans) == len(ETL_STEPS)  # one attempt each
    for span in spans:
        assert {"name", "ph", "ts", "dur", "pid", "tid"} <= set(span)
        assert span["ts"] >= 0 and span["dur"] >= 0
    threads = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert {e["tid"] for e in spans} <= set(threads)
    assert 1 <= len(threads) <= 2  # --workers 2, and no worker was replaced
    assert len(set(threads.values())) == len(threads)
    for tid in threads:
        # a worker runs one attempt at a time: its spans never overlap
        mine = sorted((e["ts"], e["dur"]) for e in spans if e["tid"] == tid)
        for (ts, dur), (next_ts, _) in itertools.pairwise(mine):
            assert ts + dur <= next_ts + 1, (tid, mine)


FAILING = """
version: 1
name: failing
steps:
  - id: fine
    uses: shell
    with: {cmd: "echo all good"}
  - id: broken
    uses: shell
    with: {cmd: "echo first clue; echo second clue >&2; echo last words; exit 3"}
  - id: after
    needs: broken
    uses: noop
"""


def test_a_failing_step_in_every_report(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    out.mkdir()
    result = run_with_reports(run_cli, write_pipeline(FAILING), out)
    assert result.code == 1, result.output

    root = ET.parse(out / "junit.xml").getroot()
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "failing"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    failure = cases["broken"].find("failure")
    assert failure is not None
    assert "exit" in (failure.get("message") or "") and "3" in (failure.get("message") or "")
    tail = failure.text or ""
    assert "first clue" in tail and "second clue" in tail and "last words" in tail
    assert cases["after"].find("skipped") is not None
    assert list(cases["fine"]) == []

    data = json.loads((out / "summary.json").read_text())
    assert data["status"] == "failed" and data["exit_code"] == 1
    assert data["counts"] == {"succeeded": 1, "failed": 1, "upstream_failed": 1}
    steps = {s["id"]: s for s in data["steps"]}
    assert steps["broken"]["state"] == "failed" and "3" in steps["broken"]["error"]
    assert steps["after"]["state"] == "upstream_failed"

    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    failed = [e for e in events if e.get("step") == "broken" and e.get("state") == "failed"]
    assert len(failed) == 1 and "3" in failed[0]["error"]
    assert events[-1]["status"] == "failed"

    trace = json.loads((out / "trace.json").read_text())
    (span,) = [e for e in trace["traceEvents"] if e.get("name") == "broken"]
    assert span["args"]["ok"] is False and "3" in span["args"]["error"]


def test_junit_reads_in_a_junit_library(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    junitparser = pytest.importorskip("junitparser")
    out = tmp_path / "reports"
    out.mkdir()
    result = run_with_reports(run_cli, write_pipeline(FAILING), out)
    assert result.code == 1, result.output
    xml = junitparser.JUnitXml.fromfile(str(out / "junit.xml"))
    suites = list(xml)
    assert [s.name for s in suites] == ["failing"]
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.skipped) == (3, 1, 1)
    outcome = {case.name: [type(r).__name__ for r in case.result] for case in suite}
    assert outcome == {"fine": [], "broken": ["Failure"], "after": ["Skipped"]}
