"""`runner resume` of a templated run killed with SIGKILL half way (the shape of the 100,000-step
bench row W8, small): the resumed run ends as a run that was never killed, whether the speed
shortcuts are on or off (PIPELINE_RUNNER_NO_SHORTCUTS=1), and what had succeeded is kept.

Real runners, real signals, a real SQLite store; nothing waits a fixed time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli, no_traceback, wait_for
from test_engine import popen, start_runner  # noqa: F401
from test_store import run_id_of

WritePipeline = Callable[..., Path]
TENANTS, CHAIN = 8, 8

# Each tenant: its first step prints the tenant, the middle ones only pass time, the last one
# reads the first one's output (so a kept step's output must be there after the resume).
TEMPLATED = "\n".join(
    [
        "version: 1",
        "name: tenants",
        "params:",
        "  tenants: [" + ", ".join(f"t{t}" for t in range(TENANTS)) + "]",
        "templates:",
        "  etl:",
        "    params:",
        "      tenant: {}",
        "    steps:",
        "      - id: s0",
        "        uses: shell",
        "        with: {cmd: 'sleep 0.05; echo {{ tenant }}'}",
        *[
            line
            for s in range(1, CHAIN - 1)
            for line in (
                f"      - id: s{s}",
                "        uses: shell",
                "        with: {cmd: 'sleep 0.05'}",
                f"        needs: s{s - 1}",
            )
        ],
        f"      - id: s{CHAIN - 1}",
        "        uses: shell",
        "        with: {cmd: 'echo {{ steps.s0.output }}-{{ tenant }}'}",
        f"        needs: s{CHAIN - 2}",
        "    outputs:",
        f"      last: '{{{{ steps.s{CHAIN - 1}.output }}}}'",
        "steps:",
        "  - id: etl",
        "    template: etl",
        '    for_each: "{{ params.tenants }}"',
        '    with: {tenant: "{{ item }}"}',
        "outputs:",
        "  first: '{{ steps.etl.outputs.t0.last }}'",
    ]
)
STEPS = TENANTS * CHAIN


def succeeded(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        check = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = check.execute("SELECT COUNT(*) FROM steps WHERE state = 'succeeded'").fetchone()
        finally:
            check.close()
    except sqlite3.Error:
        return 0
    return int(row[0])


def results(run_cli: RunCli, run_id: str, state: Path, env: dict[str, str]) -> dict[str, Any]:
    shown = run_cli("show", run_id, "--json", env={"PIPELINE_RUNNER_STATE_DIR": str(state), **env})
    assert shown.code == 0, shown.output
    data = json.loads(shown.stdout)
    return {
        "status": data["run"]["status"],
        "outputs": data["run"]["outputs"],
        "steps": {s["step_id"]: (s["state"], s["attempts"], s["output"]) for s in data["steps"]},
    }


@pytest.fixture
def killed_half_way(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    popen: list[subprocess.Popen[str]],  # noqa: F811
) -> tuple[str, Path, dict[str, tuple[str, int, Any]]]:
    """A run SIGKILLed (its whole process group) once about half its steps succeeded: its id,
    its state folder, and its steps as the store holds them then."""
    path = write_pipeline(TEMPLATED)
    proc = start_runner(tmp_path, path, "--workers", "2")
    popen.append(proc)
    db = tmp_path / "state" / "runs.db"
    assert wait_for(lambda: succeeded(db) >= STEPS // 2, timeout=60), succeeded(db)
    os.killpg(proc.pid, signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    check = sqlite3.connect(db)
    try:
        rows = check.execute(
            "SELECT step_id, state, attempts, output_json FROM steps WHERE kind = 'step'"
        ).fetchall()
    finally:
        check.close()
    at_kill = {sid: (state, attempts, output) for sid, state, attempts, output in rows}
    assert STEPS // 2 <= sum(1 for s in at_kill.values() if s[0] == "succeeded") < STEPS
    return run_id_of(stdout), tmp_path / "state", at_kill


def test_a_resume_after_sigkill_ends_as_a_run_never_killed_shortcuts_on_and_off(
    killed_half_way: tuple[str, Path, dict[str, tuple[str, int, Any]]],
    run_cli: RunCli,
    tmp_path: Path,
) -> None:
    run_id, state, at_kill = killed_half_way
    ended = {}
    for name, env in (
        ("on", {"PIPELINE_RUNNER_NO_SHORTCUTS": "0"}),
        ("off", {"PIPELINE_RUNNER_NO_SHORTCUTS": "1"}),
    ):
        copy = tmp_path / f"state-{name}"
        shutil.copytree(state, copy)  # each resume starts from the same killed store
        env = {**env, "PIPELINE_RUNNER_STATE_DIR": str(copy)}
        resumed = run_cli("resume", run_id, "--progress", "plain", "--workers", "2", env=env)
        assert resumed.code == 0, resumed.output
        assert no_traceback(resumed.output)
        ended[name] = results(run_cli, run_id, copy, env)
    assert ended["on"] == ended["off"]

    # As a run never killed: every step succeeded, each output from its own tenant.
    fresh = run_cli(
        "run",
        str(tmp_path / "p.yaml"),
        "--progress",
        "plain",
        "--workers",
        "2",
        env={"PIPELINE_RUNNER_STATE_DIR": str(tmp_path / "state-fresh")},
    )
    assert fresh.code == 0, fresh.output
    never_killed = results(run_cli, run_id_of(fresh.stdout), tmp_path / "state-fresh", {})
    done = ended["on"]
    assert done["status"] == never_killed["status"] == "succeeded"
    assert done["outputs"] == never_killed["outputs"] == {"first": "t0-t0"}
    assert {sid: (s, out) for sid, (s, _, out) in done["steps"].items()} == {
        sid: (s, out) for sid, (s, _, out) in never_killed["steps"].items()
    }
    # What had succeeded was kept: not run again (one attempt, its output as recorded).
    for sid, (state_at_kill, attempts, output) in at_kill.items():
        if state_at_kill == "succeeded":
            assert done["steps"][sid][1] == attempts == 1, sid
            assert json.dumps(done["steps"][sid][2]) == output, sid
