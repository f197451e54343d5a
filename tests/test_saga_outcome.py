"""How a saga ends, through `runner run`, `runner show`, `runner runs` and the report files:
a failed run whose compensations all succeeded is `compensated` (exit 1), one whose
compensation failed is `compensation_failed` (exit 77); each step a compensation undid reads
`compensated`, and a `finally` step sees the outcome in `run.status`."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli, no_traceback

from pipeline_runner.errors import EXIT_COMPENSATION_FAILED, EXIT_FAILED

WritePipeline = Callable[..., Path]
RUN_ID = re.compile(r"\brun (\d{8}T\d{6}-[0-9a-f]{6})\b")

# `refund` fails when the parameter says so; every action appends to journal.txt.
SAGA = """
version: 1
name: shop
params:
  refund_ok: "yes"
  ship_ok: "no"
steps:
  - id: reserve
    uses: shell
    with: {cmd: "echo reserve >> journal.txt; echo R-1"}
    compensate:
      uses: shell
      with: {cmd: "echo release {{ steps.reserve.output }} >> journal.txt"}
  - id: charge
    needs: reserve
    uses: shell
    cache: true
    with: {cmd: "echo charge >> journal.txt; echo P-1"}
    compensate:
      uses: shell
      with: {cmd: "echo refund >> journal.txt; test {{ params.refund_ok }} = yes"}
  - id: ship
    needs: charge
    uses: shell
    with: {cmd: "echo ship >> journal.txt; test {{ params.ship_ok }} = yes"}
finally:
  - id: history
    uses: shell
    with: {cmd: "echo finally {{ run.status }} >> journal.txt"}
  - id: alert
    if: failure()
    uses: shell
    with: {cmd: "echo alert >> journal.txt"}
"""


def journal(folder: Path) -> list[str]:
    path = folder / "journal.txt"
    return path.read_text().splitlines() if path.exists() else []


def run_saga(run_cli: RunCli, path: Path, *args: str) -> tuple[Any, str, dict[str, Any]]:
    """Run it with a JSON summary and a JUnit report; the result, its run id and the summary."""
    folder = path.parent
    result = run_cli(
        "run",
        str(path),
        "--progress",
        "plain",
        "--json",
        str(folder / "summary.json"),
        "--junit",
        str(folder / "junit.xml"),
        *args,
    )
    assert no_traceback(result.output), result.output
    found = RUN_ID.search(result.stdout)
    assert found, result.output
    return result, found.group(1), json.loads((folder / "summary.json").read_text())


def show(run_cli: RunCli, run_id: str) -> dict[str, Any]:
    result = run_cli("show", run_id, "--json")
    assert result.code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def states(data: dict[str, Any]) -> dict[str, str]:
    return {s["step_id"]: s["state"] for s in data["steps"]}


def junit_status(folder: Path) -> dict[str, str]:
    root = ET.parse(folder / "junit.xml").getroot()
    return {case.get("name", ""): case.get("status", "") for case in root.iter("testcase")}


def test_every_compensation_succeeding_ends_the_run_compensated(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    result, run_id, summary = run_saga(run_cli, write_pipeline(SAGA))
    assert result.code == EXIT_FAILED == 1, result.output  # still a failed run
    assert journal(tmp_path)[:5] == ["reserve", "charge", "ship", "refund", "release R-1"]
    # the `finally` steps, in either order: failure() holds for a compensated run
    assert sorted(journal(tmp_path)[5:]) == ["alert", "finally compensated"]
    assert f"run {run_id} compensated in" in result.stdout
    assert f"resume with: runner resume {run_id}" in result.stdout
    assert "↶ compensated     charge" in result.stdout

    data = show(run_cli, run_id)
    assert data["run"]["status"] == "compensated" and data["run"]["exit_code"] == 1
    assert states(data) == {
        "reserve": "compensated",
        "charge": "compensated",
        "ship": "failed",
        "history": "succeeded",
        "alert": "succeeded",
        "charge:compensate": "succeeded",
        "reserve:compensate": "succeeded",
    }
    # an undone step keeps the output it had (the compensation read it)
    assert next(s for s in data["steps"] if s["step_id"] == "reserve")["output"] == "R-1"
    text = run_cli("show", run_id)
    assert f"run {run_id}: shop compensated" in text.stdout
    assert re.search(r"^  reserve +compensated ", text.stdout, re.M), text.stdout

    assert summary["status"] == "compensated" and summary["exit_code"] == 1
    by_id = {s["id"]: s for s in summary["steps"]}
    assert by_id["charge"]["state"] == "compensated" and by_id["charge"]["output"] == "P-1"
    assert summary["counts"]["compensated"] == 2
    cases = junit_status(tmp_path)
    assert cases["reserve"] == "compensated" and cases["ship"] == "failed"
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.get("failures") == "1"  # an undone step passed; the failure is ship's

    listed = run_cli("runs", "--status", "compensated", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]


def test_a_failed_compensation_ends_the_run_compensation_failed(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    result, run_id, summary = run_saga(run_cli, write_pipeline(SAGA), "-p", "refund_ok=no")
    assert result.code == EXIT_COMPENSATION_FAILED == 77, result.output
    # the other compensations still run: undo as much as can be undone
    assert journal(tmp_path)[:5] == ["reserve", "charge", "ship", "refund", "release R-1"]
    assert sorted(journal(tmp_path)[5:]) == ["alert", "finally compensation_failed"]
    assert f"run {run_id} compensation_failed in" in result.stdout
    data = show(run_cli, run_id)
    assert data["run"]["status"] == "compensation_failed" and data["run"]["exit_code"] == 77
    found = states(data)
    # charge's effect remains: it reads succeeded, beside its failed compensation
    assert found["charge"] == "succeeded" and found["charge:compensate"] == "failed"
    assert found["reserve"] == "compensated" and found["reserve:compensate"] == "succeeded"
    assert summary["status"] == "compensation_failed" and summary["exit_code"] == 77
    listed = run_cli("runs", "--status", "compensation_failed")
    assert listed.code == 0 and run_id in listed.stdout, listed.output


@pytest.mark.parametrize(
    ("args", "status", "code"),
    [
        (("-p", "ship_ok=yes"), "succeeded", 0),  # nothing failed: nothing undone
        (("--no-compensate",), "failed", 1),  # nothing undone: a plain failure
    ],
)
def test_a_run_without_compensations_keeps_its_status(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    args: tuple[str, ...],
    status: str,
    code: int,
) -> None:
    result, run_id, _ = run_saga(run_cli, write_pipeline(SAGA), *args)
    assert result.code == code, result.output
    data = show(run_cli, run_id)
    assert data["run"]["status"] == status
    assert "compensated" not in states(data).values()
    alert = [] if status == "succeeded" else ["alert"]
    assert sorted(journal(tmp_path)[-len(alert) - 1 :]) == sorted([f"finally {status}", *alert])


def test_resume_runs_the_undone_steps_again_and_the_cache_forgets_them(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(SAGA)
    first, run_id, _ = run_saga(run_cli, path)
    assert first.code == 1, first.output
    (tmp_path / "journal.txt").unlink()

    # `charge` has `cache: true`, but its result was undone: a new run does not take it
    second, second_id, summary = run_saga(run_cli, path, "-p", "ship_ok=yes")
    assert second.code == 0, second.output
    assert {s["id"]: s["state"] for s in summary["steps"]}["charge"] == "succeeded"
    assert journal(tmp_path)[:3] == ["reserve", "charge", "ship"]
    (tmp_path / "journal.txt").unlink()

    resumed = run_cli("resume", run_id, "--progress", "plain", "-p", "ship_ok=yes")
    assert resumed.code == 0, resumed.output
    # the undone steps run again (charge now from the second run's cache entry)
    data = show(run_cli, run_id)
    assert data["run"]["status"] == "succeeded"
    assert states(data)["reserve"] == "succeeded" and states(data)["charge"] == "cached"
    assert journal(tmp_path)[:2] == ["reserve", "ship"]
    assert second_id != run_id
