"""Chains of steps: a step's sole dependent is queued on the same worker to run right after it
(a follow-up; a chain's next links, up to eight, each behind the one before), and skipped there
when the step before it does not succeed.  These tests check that the shortcut never changes
what runs: order, exactly-once, failures, retries, timeouts, Ctrl-C and a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from conftest import RunCli, no_traceback, wait_for
from test_engine import WritePipeline, popen, start_runner  # noqa: F401

LIB = """
import os
import time


def record(journal, name, fail_until=0):
    # Append `name` to the journal; fail while fewer than `fail_until` attempts were made.
    with open(journal, "a") as f:
        f.write(name + "\\n")
    with open(journal) as f:
        made = sum(1 for line in f if line.strip() == name)
    if made <= fail_until:
        raise RuntimeError(f"{name} fails on attempt {made}")
    return name


def die_once(journal, name, pid_file):
    # The first attempt records its worker's pid and waits to be killed with it.
    with open(journal, "a") as f:
        f.write(name + "\\n")
    if not os.path.exists(pid_file):
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(300)
    return name


def hang(journal, name):
    with open(journal, "a") as f:
        f.write(name + "\\n")
    time.sleep(300)
"""


def chain(
    n: int, extra: dict[int, str] | None = None, retries: dict[int, str] | None = None
) -> str:
    """A pipeline of `n` python steps, each needing the one before."""
    lines = ["version: 1", "name: chain", "params: {journal: journal.txt}", "steps:"]
    for i in range(n):
        lines.append(f"  - id: s{i:02}")
        if i:
            lines.append(f"    needs: s{i - 1:02}")
        if retries and i in retries:
            lines.append(f"    retries: {retries[i]}")
        lines.append("    uses: python")
        call = (extra or {}).get(
            i, f'{{call: "lib:record", args: ["{{{{ params.journal }}}}", "s{i:02}"]}}'
        )
        lines.append(f"    with: {call}")
    return "\n".join(lines) + "\n"


def journal(tmp_path: Path) -> list[str]:
    path = tmp_path / "journal.txt"
    return path.read_text().split() if path.exists() else []


def show(run_cli: RunCli) -> dict[str, Any]:
    runs = run_cli("runs", "--json")
    assert runs.code == 0, runs.output
    run_id = json.loads(runs.stdout)[0]["id"]
    shown = run_cli("show", run_id, "--json")
    assert shown.code == 0, shown.output
    return dict(json.loads(shown.stdout))


def test_a_chain_runs_every_step_once_in_order(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    # A step that reads its predecessor's output is rendered by the runner (no follow-up);
    # the chain goes on around it.
    text = chain(40, extra={20: '{call: "builtins:str", args: ["{{ steps.s19.output }}"]}'})
    path = write_pipeline(text, files={"lib.py": LIB})
    result = run_cli("run", str(path), "--workers", "2", "--progress", "plain")
    assert result.code == 0, result.output
    assert no_traceback(result.output)
    expected = [f"s{i:02}" for i in range(40) if i != 20]
    assert journal(tmp_path) == expected
    data = show(run_cli)
    steps = {s["step_id"]: s for s in data["steps"]}
    assert steps["s20"]["output"] == "s19"
    for step in steps.values():
        assert step["state"] == "succeeded", step
        assert step["attempts"] == 1, step
        assert step["started"] <= step["finished"], step
    # Each step started after the one it needs had finished.
    for i in range(1, 40):
        assert steps[f"s{i:02}"]["started"] >= steps[f"s{i - 1:02}"]["finished"] - 0.001


def test_a_failed_step_in_a_chain_stops_what_follows_it(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    text = chain(
        8,
        extra={3: '{call: "lib:record", args: ["{{ params.journal }}", "s03", 99]}'},
    )
    path = write_pipeline(text, files={"lib.py": LIB})
    result = run_cli("run", str(path), "--workers", "2", "--progress", "plain")
    assert result.code == 1, result.output
    # The worker held s04 queued behind s03: it must not have run it.
    assert journal(tmp_path) == ["s00", "s01", "s02", "s03"]
    steps = {s["step_id"]: s["state"] for s in show(run_cli)["steps"]}
    assert steps["s03"] == "failed"
    assert all(steps[f"s{i:02}"] == "upstream_failed" for i in range(4, 8)), steps


def test_a_retried_step_in_a_chain_is_followed_once_it_succeeds(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    text = chain(
        6,
        extra={2: '{call: "lib:record", args: ["{{ params.journal }}", "s02", 2]}'},
        retries={2: "{max: 2, delay: 50ms}"},
    )
    path = write_pipeline(text, files={"lib.py": LIB})
    result = run_cli("run", str(path), "--workers", "2", "--progress", "plain")
    assert result.code == 0, result.output
    assert journal(tmp_path) == ["s00", "s01", "s02", "s02", "s02", "s03", "s04", "s05"]
    steps = {s["step_id"]: s for s in show(run_cli)["steps"]}
    assert steps["s02"]["attempts"] == 3
    assert all(s["state"] == "succeeded" for s in steps.values())


def test_a_step_that_times_out_in_a_chain_stops_what_follows_it(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    text = chain(5, extra={1: '{call: "lib:hang", args: ["{{ params.journal }}", "s01"]}'})
    text = text.replace("  - id: s01\n", "  - id: s01\n    timeout: 1s\n")
    path = write_pipeline(text, files={"lib.py": LIB})
    result = run_cli("run", str(path), "--workers", "1", "--grace", "0.5", "--progress", "plain")
    assert result.code == 1, result.output
    assert journal(tmp_path) == ["s00", "s01"]
    steps = {s["step_id"]: s for s in show(run_cli)["steps"]}
    assert steps["s01"]["state"] == "failed"
    assert steps["s01"]["error_kind"] == "timeout"
    assert all(steps[f"s{i:02}"]["state"] == "upstream_failed" for i in range(2, 5))


def test_a_chain_queued_behind_a_killed_worker_comes_back_and_runs_once(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    popen: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    """The links queued behind a step whose worker is SIGKILLed return to the runner; the
    step is retried and the rest of the chain runs after it, each link once."""
    pid_file = tmp_path / "worker.pid"
    call = f'{{call: "lib:die_once", args: ["{{{{ params.journal }}}}", "s02", "{pid_file}"]}}'
    text = chain(12, extra={2: call}, retries={2: "{max: 1, delay: 50ms}"})
    path = write_pipeline(text, files={"lib.py": LIB})
    proc = start_runner(tmp_path, path, "--workers", "1")
    popen.append(proc)
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=60)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout + stderr
    assert journal(tmp_path) == ["s00", "s01", "s02", "s02"] + [f"s{i:02}" for i in range(3, 12)]
    steps = {s["step_id"]: s for s in show(run_cli)["steps"]}
    assert steps["s02"]["attempts"] == 2
    assert all(s["state"] == "succeeded" and s["started"] for s in steps.values()), steps


def test_ctrl_c_in_a_chain_never_starts_the_queued_follow_up(
    run_cli: RunCli,
    write_pipeline: WritePipeline,
    tmp_path: Path,
    popen: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    text = chain(4, extra={1: '{call: "lib:hang", args: ["{{ params.journal }}", "s01"]}'})
    path = write_pipeline(text, files={"lib.py": LIB})
    proc = start_runner(tmp_path, path, "--workers", "1", "--grace", "1")
    popen.append(proc)
    assert wait_for(lambda: "s01" in journal(tmp_path), timeout=60), "s01 never started"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert journal(tmp_path) == ["s00", "s01"]
    steps = {s["step_id"]: s["state"] for s in show(run_cli)["steps"]}
    assert steps == {"s00": "succeeded", "s01": "cancelled", "s02": "cancelled", "s03": "cancelled"}


def test_a_short_step_batched_before_a_long_one_is_reported_without_waiting_for_it(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """Cheap steps go to a worker in batches, and their completions come back in batches; a
    long step later in the same batch must not hold back the news that `marker` succeeded
    (and so its dependents) until it ends."""
    # Many cheap steps first (by priority), so that the worker's batches grow long.
    quick = "".join(f"  - {{id: q{i}, needs: root, uses: noop, priority: 20}}\n" for i in range(40))
    path = write_pipeline(
        "version: 1\n"
        "name: batch\n"
        "steps:\n"
        "  - {id: root, uses: noop}\n"
        "  - {id: marker, needs: root, uses: noop, priority: 10}\n"
        "  - id: slow\n"
        "    needs: root\n"
        "    priority: 5\n"
        "    uses: shell\n"
        "    with: {cmd: [sleep, '3']}\n" + quick
    )
    events = tmp_path / "events.jsonl"
    result = run_cli("run", str(path), "--workers", "1", "--events", str(events))
    assert result.code == 0, result.output
    times = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event.get("state") == "succeeded" and event.get("step"):
            times[event["step"]] = event["time"]
    assert times["slow"] - times["marker"] > 2.0, times


def test_a_chain_runs_the_same_with_the_shortcuts_off(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    # PIPELINE_RUNNER_NO_SHORTCUTS=1: no follow-ups, each attempt handed out by the runner's loop.
    path = write_pipeline(chain(10), files={"lib.py": LIB})
    states = []
    for env in ({}, {"PIPELINE_RUNNER_NO_SHORTCUTS": "1"}):
        (tmp_path / "journal.txt").unlink(missing_ok=True)
        result = run_cli("run", str(path), "--workers", "2", "--progress", "plain", env=env)
        assert result.code == 0, result.output
        assert journal(tmp_path) == [f"s{i:02}" for i in range(10)]
        steps = show(run_cli)["steps"]
        states.append({s["step_id"]: (s["state"], s["attempts"]) for s in steps})
    assert states[0] == states[1] == {f"s{i:02}": ("succeeded", 1) for i in range(10)}
