"""`--executor dask` with more ready attempts than the cluster has threads: the attempts are
packed several to a Dask task, and a chain's next links ride behind the link they follow (see
pipeline_runner/executors/dask_packing.py).  Each attempt must still behave as it does alone:
its own timeout, its own retries, its own log; a link that fails stops what follows it.  The
same file runs with the shortcuts on and off (PIPELINE_RUNNER_NO_SHORTCUTS=1, one Dask task per
attempt) and must give the same steps, states and attempts.

A local cluster is started by the runner for each run (no `--scheduler`).
"""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback, processes_with, wait_for

pytest.importorskip(
    "distributed", reason="dask[distributed] is not installed (pip install -e '.[dev]')"
)

pytestmark = [pytest.mark.dask, pytest.mark.slow, pytest.mark.xdist_group("dask")]

MODULE = """
import os
import time


def touch(folder, name):
    with open(os.path.join(folder, name), "w") as f:
        f.write(str(os.getpid()))
    print("touched", name, flush=True)


def sleepy(seconds):
    print("sleeping", flush=True)
    time.sleep(seconds)


def flaky(folder):
    marker = os.path.join(folder, "flaky-failed-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return "second time lucky"


def boom():
    raise RuntimeError("link two fails")
"""

WIDE = 12  # independent steps: six times the cluster's two threads, so they are packed


def packed_pipeline(folder: Path) -> Path:
    done = folder / "done"
    done.mkdir()
    steps = [
        f"""
          - id: n{i:02d}
            uses: python
            with: {{call: "packmod:touch", args: ["{done}", "n{i:02d}"]}}"""
        for i in range(WIDE)
    ]
    needed = ", ".join(f"n{i:02d}" for i in range(WIDE))
    steps.append(
        f"""
          - id: slow
            uses: python
            timeout: 1s
            with: {{call: "packmod:sleepy", args: [60]}}
          - id: flaky
            uses: python
            retries: {{max: 2, delay: 10ms}}
            with: {{call: "packmod:flaky", args: ["{folder}"]}}
          - id: c1
            uses: noop
          - id: c2
            needs: c1
            uses: python
            with: {{call: "packmod:boom"}}
          - id: c3
            needs: c2
            uses: noop
          - id: c4
            needs: c3
            uses: noop
          - id: d1
            uses: noop
          - id: d2
            needs: d1
            uses: noop
          - id: d3
            needs: d2
            uses: noop
          - id: join
            needs: [{needed}]
            uses: noop"""
    )
    path = folder / "packed.yaml"
    path.write_text("version: 1\nname: packed\nsteps:" + "".join(textwrap.dedent(s) for s in steps))
    (folder / "packmod.py").write_text(textwrap.dedent(MODULE).lstrip())
    return path


def shown_steps(run_cli: RunCli, run_id: str) -> dict[str, dict[str, object]]:
    shown = run_cli("show", run_id, "--json")
    assert shown.code == 0, shown.output
    return {s["step_id"]: s for s in json.loads(shown.stdout)["steps"] if s["kind"] == "step"}


@pytest.mark.parametrize("plain", ["0", "1"], ids=["packed", "plain"])
def test_packed_attempts_keep_their_timeouts_retries_and_chains(
    run_cli: RunCli, tmp_path: Path, plain: str
) -> None:
    path = packed_pipeline(tmp_path)
    out = tmp_path / "out.json"
    marker = f"dask-packing-{uuid.uuid4().hex}"
    result = run_cli(
        "run", str(path), "--executor", "dask", "--workers", "2", "--json", str(out),
        "--progress", "plain",
        env={"PIPELINE_RUNNER_NO_SHORTCUTS": plain, "DASK_PACKING_TEST": marker},
        timeout=180,
    )  # fmt: skip
    assert result.code == 1, result.output  # slow timed out, c2 failed
    steps = shown_steps(run_cli, json.loads(out.read_text())["run_id"])
    states = {sid: s["state"] for sid, s in steps.items()}
    wide = {f"n{i:02d}": "succeeded" for i in range(WIDE)}
    assert states == {
        **wide,
        "slow": "failed",
        "flaky": "succeeded",
        "c1": "succeeded",
        "c2": "failed",
        "c3": states["c3"],
        "c4": states["c4"],
        "d1": "succeeded",
        "d2": "succeeded",
        "d3": "succeeded",
        "join": "succeeded",
    }, states
    assert states["c3"] == states["c4"] != "succeeded"  # never ran: their need failed
    assert steps["c3"]["attempts"] == steps["c4"]["attempts"] == 0
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == sorted(wide)
    # Each attempt its own timeout (the others around it were not held up to it) and retries.
    assert steps["slow"]["attempts"] == 1 and "timed out after 1s" in str(steps["slow"]["error"])
    assert steps["flaky"]["attempts"] == 2
    assert steps["c2"]["attempts"] == 1
    # Every attempt's log came back on its own.
    logs = run_cli("logs", json.loads(out.read_text())["run_id"], "n07")
    assert logs.code == 0 and "touched n07" in logs.stdout, logs.output
    # The runner's cluster, its workers and their hosts are gone with it.
    assert wait_for(lambda: not processes_with(marker), timeout=30), processes_with(marker)


def test_a_file_that_does_not_plan_stops_the_cluster_started_meanwhile(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """The cluster starts while the file is planned; a file that fails to plan stops it."""
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nname: bad\nsteps:\n  - {id: a, uses: noop, needs: nowhere}\n")
    marker = f"dask-early-{uuid.uuid4().hex}"
    result = run_cli(
        "run", str(path), "--executor", "dask", "--workers", "2",
        env={"DASK_PACKING_TEST": marker}, timeout=120,
    )  # fmt: skip
    assert result.code == 2, result.output
    assert "bad.yaml:" in result.stderr and no_traceback(result.output)
    assert wait_for(lambda: not processes_with(marker), timeout=30), processes_with(marker)
