"""The speed shortcuts of a run's end and of `runner resume`, against their plain versions
(PIPELINE_RUNNER_NO_SHORTCUTS=1): the end's records made when read (records.py) give the same
JSON and JUnit reports, the recorded plan not read when the run recorded the plan's hash
(keeping.recorded_plan) still refuses a pipeline that changed and keeps what succeeded when it
did not, the set-up of a resume gives the same end as a run never stopped, and a limit that
only the run learns still holds when the run keeps no slot counts for a plan with no limit.

Each test drives the real `runner` command with real worker processes and a real run store.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]
WAYS = {"on": {"PIPELINE_RUNNER_NO_SHORTCUTS": "0"}, "off": {"PIPELINE_RUNNER_NO_SHORTCUTS": "1"}}

# Steps append their name to journal.txt each time they run; `gate` fails until gate.ok exists.
LIB = """
import os

def work(name):
    with open("journal.txt", "a") as f:
        f.write(f"{name}\\n")
    return name

def gate(name):
    with open("journal.txt", "a") as f:
        f.write(f"{name}\\n")
    if not os.path.exists("gate.ok"):
        raise RuntimeError("gate is closed")
    return name
"""

# A template instance per tenant, a static fan-out, a step allowed to fail, a skipped one and
# one that fails until a file exists (so a run stops failed and its resume ends it).
PIPELINE = """
version: 1
name: shapes
params:
  tenants: [t0, t1, t2]
templates:
  etl:
    params:
      tenant: {}
    steps:
      - id: extract
        uses: python
        with: {call: "lib:work", args: ["{{ tenant }}-extract"]}
      - id: load
        uses: python
        with: {call: "lib:work", args: ["{{ tenant }}-load"]}
        needs: extract
    outputs:
      loaded: "{{ steps.load.output }}"
steps:
  - id: etl
    template: etl
    for_each: "{{ params.tenants }}"
    with: {tenant: "{{ item }}"}
  - id: fan
    uses: python
    for_each: [x, y]
    with: {call: "lib:work", args: ["fan-{{ item }}"]}
  - id: allowed
    uses: shell
    with: {cmd: "exit 4"}
    continue_on_error: true
  - id: never
    uses: noop
    if: "{{ false }}"
  - id: gate
    uses: python
    with: {call: "lib:gate", args: [gate]}
    needs: [etl, fan]
  - id: after
    uses: python
    with: {call: "lib:work", args: [after]}
    needs: gate
outputs:
  first: "{{ steps.etl.outputs.t0.loaded }}"
"""


def report(path: Path) -> dict[str, Any]:
    """A --json report without what differs from run to run (ids, times, the worker)."""
    data = json.loads(path.read_text())
    steps = [
        {k: v for k, v in step.items() if k not in ("started", "finished", "duration", "worker")}
        for step in data["steps"]
    ]
    return {
        "status": data["status"],
        "exit_code": data["exit_code"],
        "counts": data["counts"],
        "outputs": data["outputs"],
        "steps": steps,
    }


def junit(path: Path) -> str:
    """A JUnit report without times, timestamps and run ids."""
    text = path.read_text()
    text = re.sub(r'(time|timestamp)="[^"]*"', r'\1=""', text)
    return re.sub(r"\d{8}T\d{6}-[0-9a-f]+", "RUN", text)


def one_way(
    run_cli: RunCli, path: Path, folder: Path, env: dict[str, str]
) -> tuple[dict[str, Any], ...]:
    """Run the pipeline (it stops failed at `gate`), then open the gate and resume it: both
    invocations' reports (JSON, JUnit) and the run as `runner show --json` gives it."""
    env = {**env, "PIPELINE_RUNNER_STATE_DIR": str(folder / "state")}
    (path.parent / "gate.ok").unlink(missing_ok=True)
    first = run_cli(
        "run",
        str(path),
        "--progress",
        "plain",
        "--json",
        str(folder / "first.json"),
        "--junit",
        str(folder / "first.xml"),
        env=env,
    )
    assert first.code == 1, first.output
    run_id = json.loads((folder / "first.json").read_text())["run_id"]
    (path.parent / "gate.ok").write_text("")
    again = run_cli(
        "resume",
        run_id,
        "--progress",
        "plain",
        "--json",
        str(folder / "again.json"),
        "--junit",
        str(folder / "again.xml"),
        env=env,
    )
    assert again.code == 0, again.output
    assert no_traceback(again.output)  # (the first shows the failed step's own traceback)
    shown = run_cli("show", run_id, "--json", env=env)
    assert shown.code == 0, shown.output
    steps = {
        s["step_id"]: (s["state"], s["attempts"], s["output"])
        for s in json.loads(shown.stdout)["steps"]
    }
    return (
        report(folder / "first.json"),
        {"junit": junit(folder / "first.xml")},
        report(folder / "again.json"),
        {"junit": junit(folder / "again.xml")},
        steps,
    )


def test_a_run_and_its_resume_report_the_same_with_shortcuts_on_and_off(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(PIPELINE, files={"lib.py": LIB})
    ended = {}
    for name, env in WAYS.items():
        folder = tmp_path / name
        folder.mkdir()
        ended[name] = one_way(run_cli, path, folder, env)
    assert ended["on"] == ended["off"]
    first, _, again, _, steps = ended["on"]
    assert first["status"] == "failed" and again["status"] == "succeeded"
    assert again["outputs"] == {"first": "t0-load"}
    by_id = {step["id"]: step for step in again["steps"]}
    assert by_id["allowed"]["state"] == "failed_allowed"
    assert by_id["never"]["state"] == "skipped"
    assert by_id["etl.t1.load"]["output"] == "t1-load"
    # What succeeded in the first invocation was kept by the resume (one attempt each).
    assert steps["etl.t2.load"] == ("succeeded", 1, "t2-load")
    assert steps["gate"][0] == steps["after"][0] == "succeeded"


CHANGING = """
version: 1
name: changing
steps:
  - id: a
    uses: python
    with: {call: "lib:work", args: [A]}
  - id: gate
    uses: python
    with: {call: "lib:gate", args: [gate]}
    needs: a
"""


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_resume_keeps_an_unchanged_plan_and_refuses_a_changed_one(
    way: str, write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(CHANGING, files={"lib.py": LIB})
    env = WAYS[way]
    summary = tmp_path / "first.json"
    first = run_cli("run", str(path), "--progress", "plain", "--json", str(summary), env=env)
    assert first.code == 1, first.output
    run_id = json.loads(summary.read_text())["run_id"]
    state = tmp_path / "state"
    shutil.copytree(state, tmp_path / "state-kept")

    # The same file: the resume keeps `a` (it does not run again) and runs the gate again.
    (tmp_path / "gate.ok").write_text("")
    kept_env = {**env, "PIPELINE_RUNNER_STATE_DIR": str(tmp_path / "state-kept")}
    kept = run_cli("resume", run_id, "--progress", "plain", env=kept_env)
    assert kept.code == 0, kept.output
    assert (tmp_path / "journal.txt").read_text().split() == ["A", "gate", "gate"]

    # `a` planned differently now: refused (its old output would be mixed with the new plan),
    # whichever way the plans are compared; --force runs it again.
    path.write_text(CHANGING.replace("args: [A]", "args: [B]"))
    refused = run_cli("resume", run_id, "--progress", "plain", env=env)
    assert refused.code == 2, refused.output
    assert "the pipeline changed since run" in refused.output and "(a)" in refused.output
    assert no_traceback(refused.output)
    forced = run_cli("resume", run_id, "--force", "--progress", "plain", env=env)
    assert forced.code == 0, forced.output
    assert (tmp_path / "journal.txt").read_text().split() == ["A", "gate", "gate", "B", "gate"]


# A fan-out whose items, and its `max_parallel` with them, are only known at run time: the run
# cannot know before it starts that nothing will hold a step back (limits.unlimited).
RUN_TIME_LIMIT = """
version: 1
name: limited
steps:
  - id: axes
    uses: python
    with: {call: "lib:axes"}
  - id: legs
    uses: shell
    needs: axes
    for_each: "{{ steps.axes.output }}"
    with: {cmd: "echo start >> legs.log; sleep 0.2; echo end >> legs.log"}
"""

AXES = """
def axes():
    return {"matrix": {"n": [1, 2, 3]}, "max_parallel": 1}
"""


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_limit_known_only_at_run_time_holds_with_shortcuts_on_and_off(
    way: str, write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(RUN_TIME_LIMIT, files={"lib.py": AXES})
    done = run_cli("run", str(path), "--progress", "plain", "--workers", "3", env=WAYS[way])
    assert done.code == 0, done.output
    busy, most = 0, 0
    lines = (tmp_path / "legs.log").read_text().splitlines()
    for line in lines:
        busy += 1 if line == "start" else -1
        most = max(most, busy)
    assert len(lines) == 6 and most == 1, lines
