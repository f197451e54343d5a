"""Second-round scenarios (numbered on from FAULTS.md's 35) in the worker and executor layer: a
step that kills its worker takes nothing else with it, each pipeline file's steps import from
its own folder, one step's changes to its process do not reach the next step on a long-lived
worker, and a dead run is seen as dead even when its pid was reused."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, runner_executable, wait_for
from faults_support import runner_env

WritePipeline = Callable[..., Path]

LEDGER_LIB = """
import os, signal

def step(ledger, name):
    with open(ledger, "a") as f:
        f.write(name + "\\n")
    return name

def boom(ledger, name, how):
    with open(ledger, "a") as f:
        f.write(name + "\\n")
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _ledger_pipeline(how: str) -> str:
    """Cheap steps around one that kills its worker, and a chain with a killer in the middle:
    with one worker they are all queued on it, and the cheap ones return just before the kill."""
    lines = ["version: 1", "name: siblings", "steps:"]

    def step(sid: str, call: str = "step", needs: str = "warm", extra: str = "") -> None:
        lines.append(
            f"  - id: {sid}\n    uses: python\n    needs: {needs}\n"
            f"    with: {{call: 'lib:{call}', args: [ledger.txt, {sid}{extra}]}}"
        )

    lines.append(
        "  - id: warm\n    uses: python\n    with: {call: 'lib:step', args: [ledger.txt, warm]}"
    )
    for i in range(30):
        step(f"s{i}")
    step("boom", "boom", extra=f", {how}")
    for i in range(30, 60):
        step(f"s{i}")
    step("c1")
    step("c2", needs="c1")
    step("c3", "boom", needs="c2", extra=f", {how}")
    step("c4", needs="c3")
    return "\n".join(lines) + "\n"


@pytest.mark.fault(36)
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_step_killing_its_worker_takes_no_sibling_with_it(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, how: str
) -> None:
    path = write_pipeline(_ledger_pipeline(how), files={"lib.py": LEDGER_LIB})
    for round_ in range(3):
        ledger = tmp_path / "ledger.txt"
        ledger.unlink(missing_ok=True)
        report = tmp_path / f"out{round_}.json"
        result = run_cli("run", str(path), "--workers", "1", "--json", str(report))
        assert result.code == 1, result.output
        steps = {s["id"]: s for s in json.loads(report.read_text())["steps"]}
        failed = {sid: s["error"] for sid, s in steps.items() if s["state"] == "failed"}
        assert failed.keys() == {"boom", "c3"}, failed
        assert all(s["error_kind"] == "crash" for s in steps.values() if s["state"] == "failed")
        assert steps["c4"]["state"] != "succeeded"
        ran = Counter(ledger.read_text().split())
        twice = {sid: n for sid, n in ran.items() if n != 1}
        assert not twice, f"steps ran more than once without retries: {twice}"
        succeeded = {sid for sid, s in steps.items() if s["state"] == "succeeded"}
        assert succeeded == set(ran) - {"boom", "c3"}
        assert all(steps[sid]["attempts"] == 1 for sid in ran)


def _outputs(report: Path) -> dict[str, object]:
    return {s["id"]: s["output"] for s in json.loads(report.read_text())["steps"]}


@pytest.mark.fault(50)
@pytest.mark.parametrize("order", ["root-first", "sub-first"])
def test_a_nested_pipeline_file_imports_from_its_own_folder(
    run_cli: RunCli, tmp_path: Path, order: str
) -> None:
    """Two `lib` modules, one per folder, on one long-lived worker, in either order: each
    file's steps get their own, and run in their own folder."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "lib.py").write_text("def who():\n    return 'root'\n")
    (tmp_path / "sub" / "lib.py").write_text("def who():\n    return 'sub'\n")
    (tmp_path / "sub" / "inner.yaml").write_text(
        "version: 1\nname: inner\nsteps:\n"
        "  - {id: who, uses: python, with: {call: 'lib:who'}}\n"
        "  - {id: cwd, uses: shell, needs: who, with: {cmd: pwd}}\n"
        "  - {id: pycwd, uses: python, needs: cwd, with: {call: 'os:getcwd'}}\n"
    )
    root = "  - {id: who, uses: python, %s with: {call: 'lib:who'}}\n"
    inner = "  - {id: inner, uses: pipeline, %s with: {file: sub/inner.yaml}}\n"
    if order == "root-first":
        steps = root % "" + inner % "needs: who,"
    else:
        steps = inner % "" + root % "needs: inner,"
    steps += "  - {id: again, uses: python, needs: [who, inner], with: {call: 'lib:who'}}\n"
    (tmp_path / "p.yaml").write_text("version: 1\nname: outer\nsteps:\n" + steps)
    report = tmp_path / "out.json"
    result = run_cli("run", "p.yaml", "--workers", "1", "--json", str(report), cwd=tmp_path)
    assert result.code == 0, result.output
    outputs = _outputs(report)
    assert outputs["who"] == "root" and outputs["again"] == "root", outputs
    assert outputs["inner.who"] == "sub", outputs
    assert outputs["inner.cwd"] == str(tmp_path / "sub"), outputs
    assert outputs["inner.pycwd"] == str(tmp_path / "sub"), outputs


LEAKY_LIB = """
import os, signal, sys, threading, time

def set_env():
    os.environ["LEAKED"] = "yes"
    os.environ.pop("KEPT", None)

def get_env():
    return [os.environ.get("LEAKED"), os.environ.get("KEPT")]

def set_alarm():
    signal.alarm(1)
    signal.setitimer(signal.ITIMER_VIRTUAL, 1.0)

def set_handler():
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])

def get_handler():
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return [signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL, signal.SIGUSR2 in blocked]

def chatter(daemon):
    def loop():
        for _ in range(100):
            print("LEAK from an earlier step", flush=True)
            time.sleep(0.02)
    threading.Thread(target=loop, daemon=daemon).start()

def quiet(seconds):
    time.sleep(seconds)
    print("quiet")
    return os.getpid()
"""

LEAKY = """
version: 1
name: leaky
steps:
  - {id: set_env, uses: python, with: {call: 'lib:set_env'}}
  - {id: get_env, uses: python, needs: set_env, with: {call: 'lib:get_env'}}
  - {id: set_alarm, uses: python, needs: get_env, with: {call: 'lib:set_alarm'}}
  - {id: after_alarm, uses: python, needs: set_alarm, with: {call: 'lib:quiet', args: [1.5]}}
  - {id: set_handler, uses: python, needs: after_alarm, with: {call: 'lib:set_handler'}}
  - {id: get_handler, uses: python, needs: set_handler, with: {call: 'lib:get_handler'}}
  - {id: chatter, uses: python, needs: get_handler, with: {call: 'lib:chatter', args: [%s]}}
  - {id: quiet, uses: python, needs: chatter, with: {call: 'lib:quiet', args: [0.5]}}
"""


@pytest.mark.fault(52)
@pytest.mark.parametrize("daemon", ["true", "false"])
def test_a_step_leaves_nothing_behind_for_the_next_step_on_its_worker(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, daemon: str
) -> None:
    path = write_pipeline(LEAKY % daemon, files={"lib.py": LEAKY_LIB})
    report = tmp_path / "out.json"
    result = run_cli(
        "run", str(path), "--workers", "1", "--json", str(report), env={"KEPT": "here"}
    )
    assert result.code == 0, result.output
    steps = {s["id"]: s for s in json.loads(report.read_text())["steps"]}
    assert steps["get_env"]["output"] == [None, "here"]
    assert steps["get_handler"]["output"] == [True, False]
    assert all(s["attempts"] == 1 for s in steps.values())
    # The step that left a thread running had its worker replaced (after it reported).
    assert steps["quiet"]["worker"] != steps["chatter"]["worker"], steps
    logs = run_cli("logs", json.loads(report.read_text())["run_id"], "quiet")
    assert logs.code == 0 and "quiet" in logs.stdout, logs.output
    assert "LEAK" not in logs.stdout, logs.stdout


@pytest.mark.fault(45)
def test_a_dead_run_whose_pid_was_reused_is_seen_as_stopped(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """A runner killed with SIGKILL leaves its run `running`; its pid then goes to another
    process (here: a `sleep` the test starts, written into the record as the kernel would
    have reused it).  `runner runs` says stopped and `runner logs -f` returns."""
    path = write_pipeline(
        "version: 1\nname: dead\nsteps:\n"
        "  - {id: a, uses: shell, with: {cmd: 'echo hi; sleep 60'}}\n"
    )
    state = tmp_path / "state"
    env = runner_env(state)
    runner = subprocess.Popen(
        [runner_executable(), "run", str(path), "--progress", "none"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    other: subprocess.Popen[bytes] | None = None
    try:
        db = state / "runs.db"

        def running_step() -> bool:
            try:
                with sqlite3.connect(db) as con:
                    rows = con.execute("SELECT state FROM steps WHERE step_id = 'a'").fetchall()
            except sqlite3.Error:
                return False
            logs = list(state.glob("runs/*/logs/a.log"))
            return rows == [("running",)] and bool(logs) and "hi" in logs[0].read_text()

        assert wait_for(running_step)
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
        other = subprocess.Popen(["sleep", "120"])  # started later, as a process reusing a pid is
        with sqlite3.connect(db) as con:
            con.execute("UPDATE runs SET pid = ?", (other.pid,))
        run_id = sqlite3.connect(db).execute("SELECT id FROM runs").fetchone()[0]
        listed = run_cli("runs")
        assert listed.code == 0 and run_id in listed.stdout, listed.output
        assert "running" not in listed.stdout and "stopped" in listed.stdout, listed.stdout
        followed = run_cli("logs", "-f", run_id, timeout=20)
        assert followed.code == 0 and "hi" in followed.stdout, followed.output
    finally:
        if other is not None:
            other.kill()
            other.wait()
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
