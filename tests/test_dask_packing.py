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
    # First a few quick steps, whose run times tell the executor that steps here are short
    # (it packs only those), then everything else at once.
    steps = [f"\n  - {{id: w{i}, uses: noop}}" for i in range(4)]
    steps += [
        f"""
          - id: n{i:02d}
            needs: w0
            uses: python
            with: {{call: "packmod:touch", args: ["{done}", "n{i:02d}"]}}"""
        for i in range(WIDE)
    ]
    needed = ", ".join(f"n{i:02d}" for i in range(WIDE))
    steps.append(
        f"""
          - id: slow
            needs: w0
            uses: python
            timeout: 1s
            with: {{call: "packmod:sleepy", args: [60]}}
          - id: flaky
            needs: w0
            uses: python
            retries: {{max: 2, delay: 10ms}}
            with: {{call: "packmod:flaky", args: ["{folder}"]}}
          - id: c1
            needs: w0
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
            needs: w0
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
        **{f"w{i}": "succeeded" for i in range(4)},
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


def test_only_short_attempts_are_packed_and_follow_ups_ride_along() -> None:
    """The packing rule itself (dask_packing.py), on the Task values the scheduler hands over."""
    from pipeline_runner.executors.dask_packing import BATCH_MAX, RunTimes, groups
    from pipeline_runner.messages import Completion, Task

    def task(aid: int, after: int = 0, resources: dict[str, float] | None = None) -> Task:
        return Task(
            aid, f"s{aid}", "noop", {}, {}, None, "log", "r", 1, None, None, ".", ".",
            resources, after=after,
        )  # fmt: skip

    def done(aid: int, seconds: float) -> Completion:
        return Completion(aid, True, None, None, "", "", 0, 100.0, 100.0 + seconds, "w")

    times = RunTimes()
    assert times.batch_size() == 1  # nothing measured yet: nothing packed
    for aid in range(10):
        times.add(done(aid, 0.002))
    assert times.batch_size() == BATCH_MAX
    slow = RunTimes()
    for aid in range(10):
        slow.add(done(aid, 0.25))
    assert slow.batch_size() == 1  # long steps go one per Dask task

    ready = [task(i) for i in range(1, 41)]
    packed = groups(ready, 2, BATCH_MAX)
    assert [len(g) for g in packed] == [20, 20]
    assert [t.attempt_id for g in packed for t in g] == list(range(1, 41))  # the runner's order
    assert [len(g) for g in groups(ready[:2], 2, BATCH_MAX)] == [1, 1]  # a thread each
    assert all(len(g) == 1 for g in groups(ready, 2, 1))  # the plain form

    chain = [task(1), task(2, after=1), task(3, after=2), task(4, resources={"gpu": 1})]
    assert [[t.attempt_id for t in g] for g in groups(chain, 2, 1)] == [[1, 2, 3], [4]]
    assert [[t.attempt_id for t in g] for g in groups([task(9, after=5)], 2, 8)] == [[9]]
