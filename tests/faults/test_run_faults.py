"""A run interrupted from outside, and what `runner resume` makes of it (FAULTS.md 13, 15, 16, 17):
CI cancellation, a step process outliving its runner and worker, a pipeline edited between
the run and the resume, and the runner killed at random moments of a busy run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback, processes_with, runner_executable, wait_for
from faults_support import (  # noqa: F401
    Spawner,
    alive,
    printed_states,
    quick_check,
    rows,
    run_id_of,
    runner_env,
    runner_text,
    show_json,
    spawn,
    start_time,
    stored_states,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WritePipeline = Callable[..., Path]

STUBBORN_LIB = r'''
import os
import signal
import time
from pathlib import Path


def stubborn(path):
    """Ignore SIGTERM and SIGINT, say so, and sleep."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    Path(path).write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)
'''

# -- 13: CI cancellation ---------------------------------------------------------------------------

CANCELLED = """
version: 1
name: ci-cancel
env:
  MARK: "{marker}"
params:
  dir: .
steps:
  - id: stubborn_sh
    uses: shell
    with:
      cmd: "trap '' TERM INT; touch sh.started; while :; do sleep 0.05; done"
  - id: stubborn_py
    uses: python
    with: {{call: "lib:stubborn", args: ["{{{{ params.dir }}}}/py.started"]}}
  - id: polite
    uses: shell
    with: {{cmd: "touch polite.started; sleep 300"}}
  - id: after
    needs: [stubborn_sh, stubborn_py, polite]
    uses: shell
    with: {{cmd: "touch AFTER"}}
"""


@pytest.mark.fault(13)
@pytest.mark.parametrize("grace", [None, "30"], ids=["default-grace", "grace-30s"])
def test_ci_cancellation_is_recorded_before_the_kill(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    spawn: Spawner,  # noqa: F811
    grace: str | None,
) -> None:
    """GitHub Actions cancels a job with SIGINT, SIGTERM 7.5 s later, and SIGKILL for the tree
    2.5 s after that.  Compressed here: SIGTERM 1 s after the SIGINT, then the 2.5 s to the
    kill, with steps that ignore SIGTERM so that only the runner can end them.  Whatever the
    grace period, the runner has stopped them and recorded everything before the kill."""
    marker = f"ci-{tmp_path.name}"
    path = write_pipeline(CANCELLED.format(marker=marker), files={"lib.py": STUBBORN_LIB})
    args = ["--grace", grace] if grace else []
    run = spawn(
        "run", str(path), "--progress", "plain", "--workers", "3", "--param", f"dir={tmp_path}",
        *args,
    )  # fmt: skip
    started = [tmp_path / f"{n}.started" for n in ("sh", "py", "polite")]
    assert wait_for(lambda: all(p.exists() for p in started), timeout=60), "steps never started"

    run.proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = run.proc.communicate(timeout=2.5)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)  # as CI would
        stdout, stderr = run.proc.communicate(timeout=10)
        pytest.fail(f"the runner was still running 2.5 s after SIGTERM:\n{stdout}{stderr}")
    assert run.proc.returncode in (130, 143), stdout + stderr
    assert no_traceback(runner_text(stdout + stderr)), stdout + stderr
    assert "runner resume " in stdout

    db = tmp_path / "state" / "runs.db"
    run_id = run_id_of(stdout)
    assert rows(db, "SELECT status FROM runs WHERE id = ?", (run_id,))[0][0] == "cancelled"
    assert set(stored_states(db, run_id).values()) == {"cancelled"}
    running = "SELECT * FROM attempts WHERE run_id = ? AND state = 'running'"
    unfinished = rows(db, running, (run_id,))
    assert not unfinished, [dict(r) for r in unfinished]
    assert not (tmp_path / "AFTER").exists()
    assert wait_for(lambda: not processes_with(marker), timeout=5), processes_with(marker)


# -- 15: a step process of the killed run still alive at resume ----------------------------------

SURVIVOR = """
version: 1
name: survivor
steps:
  - id: long
    uses: shell
    with:
      cmd: >-
        echo $$ >> pids; echo $PPID > worker.pid;
        while [ ! -e release ]; do sleep 0.02; done; echo done
  - id: after
    needs: long
    uses: shell
    with: {cmd: "echo after"}
outputs:
  long: "{{ steps.long.output }}"
"""


def _kill_runner_and_worker(tmp_path: Path, spawn: Spawner) -> tuple[str, int]:  # noqa: F811
    """Start the run; once its step's process is recorded, SIGKILL the runner and the worker
    running the step (not the step: it is in a session of its own, and lives on).  Returns the
    run id and the step's pid."""
    run = spawn("run", "p.yaml", "--progress", "plain", "--workers", "1")
    db = tmp_path / "state" / "runs.db"

    def recorded() -> bool:
        if not db.exists():
            return False
        try:
            return bool(rows(db, "SELECT 1 FROM attempts WHERE pgid IS NOT NULL"))
        except Exception:
            return False

    assert wait_for(recorded, timeout=60), "the step's process group was never recorded"
    (step_pid,) = (int(p) for p in (tmp_path / "pids").read_text().split())
    worker = int((tmp_path / "worker.pid").read_text())
    ((pgid, pgid_start),) = rows(db, "SELECT pgid, pgid_start FROM attempts")
    assert (pgid, pgid_start) == (step_pid, start_time(step_pid))
    os.kill(run.pid, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    stdout, _ = run.proc.communicate(timeout=30)
    assert wait_for(lambda: not alive(worker), timeout=10)
    time.sleep(0.3)  # a step that were going to die with them would be dead by now
    assert alive(step_pid), "the step died with its worker: nothing left for resume to find"
    return run_id_of(stdout), step_pid


@pytest.mark.fault(15)
def test_resume_kills_a_step_process_the_killed_run_left_before_running_it_again(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    spawn: Spawner,  # noqa: F811
) -> None:
    write_pipeline(SURVIVOR)
    run_id, old = _kill_runner_and_worker(tmp_path, spawn)

    resume = spawn("resume", run_id, "--progress", "plain", "--workers", "1")
    pids = tmp_path / "pids"
    assert wait_for(lambda: len(pids.read_text().split()) == 2, timeout=60), pids.read_text()
    # The new copy has started: the old one was identified and killed before, so at no moment
    # were two copies of the step alive.
    assert not alive(old), f"two live copies of step `long`: {pids.read_text().split()}"
    (tmp_path / "release").write_text("")
    stdout, stderr = resume.proc.communicate(timeout=60)
    assert resume.proc.returncode == 0, stdout + stderr
    assert f"stopped process group {old} of step long" in stderr, stderr
    assert printed_states(stdout) == {"long": "succeeded", "after": "succeeded"}
    db = tmp_path / "state" / "runs.db"
    attempts = rows(db, "SELECT attempt, state FROM attempts WHERE step_id = 'long'")
    assert sorted(tuple(r) for r in attempts) == [(1, "lost"), (2, "succeeded")]


@pytest.mark.fault(15)
def test_resume_never_kills_a_process_that_only_has_the_recorded_pid(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    spawn: Spawner,  # noqa: F811
) -> None:
    """A pid can be reused once its process is gone: the process start time recorded with it
    tells the step's process from a stranger that got its number."""
    write_pipeline(SURVIVOR)
    run_id, old = _kill_runner_and_worker(tmp_path, spawn)
    os.kill(old, signal.SIGKILL)  # the step's process is gone...
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        # ... and a stranger has its number: same pid and process group as recorded, another
        # start time.
        db = tmp_path / "state" / "runs.db"
        conn = __import__("sqlite3").connect(db)
        with conn:
            conn.execute("UPDATE attempts SET pgid = ?", (stranger.pid,))
        conn.close()
        (tmp_path / "release").write_text("")
        resume = spawn("resume", run_id, "--progress", "plain", "--workers", "1")
        stdout, stderr = resume.proc.communicate(timeout=60)
        assert resume.proc.returncode == 0, stdout + stderr
        assert "stopped process group" not in stderr, stderr
        assert stranger.poll() is None, "resume killed a process that was not the step's"
    finally:
        stranger.kill()
        stranger.wait(timeout=10)


# -- 16: the pipeline changed between the run and the resume ---------------------------------------

CHANGING = """
version: 1
name: changing
params:
  greeting: hello
steps:
  - id: prep
    uses: shell
    with: {cmd: "echo {{ params.greeting }} >> calls.txt; echo prepared"}
  - id: other
    uses: shell
    with: {cmd: "echo other >> calls.txt"}
  - id: spare
    uses: shell
    with: {cmd: "echo spare >> calls.txt"}
  - id: gate
    needs: [prep, other]
    uses: shell
    with: {cmd: "echo gate >> calls.txt; test -e ok"}
"""
# edit -> (text before, text after, the succeeded step that is now planned differently)
SPARE = '  - id: spare\n    uses: shell\n    with: {cmd: "echo spare >> calls.txt"}\n'
EDITS = {
    "a-param-a-succeeded-step-reads": ("greeting: hello", "greeting: hi", "prep"),
    "a-succeeded-step-removed": (SPARE, "", "spare"),
    "a-succeeded-steps-command": ("echo other >>", "echo other; echo other >>", "other"),
}


@pytest.mark.fault(16)
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_resume_refuses_a_changed_pipeline_naming_what_changed_unless_forced(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path, edit: str
) -> None:
    path = write_pipeline(CHANGING)
    first = run_cli("run", str(path), "--progress", "plain", "--workers", "1")
    assert first.code == 1, first.output  # `gate` fails: there is no `ok` yet
    run_id = run_id_of(first.stdout)
    before, after, changed = EDITS[edit]
    text = path.read_text()
    assert before in text
    path.write_text(text.replace(before, after))
    (tmp_path / "ok").write_text("")
    calls = (tmp_path / "calls.txt").read_text()

    refused = run_cli("resume", run_id, "--progress", "plain")
    assert refused.code == 2, refused.output
    assert no_traceback(refused.output)
    message = refused.stderr
    assert f"the pipeline changed since run {run_id}" in message, message
    assert f"({changed})" in message and "--force" in message, message
    assert (tmp_path / "calls.txt").read_text() == calls  # nothing ran
    assert show_json(run_cli, run_id)["run"]["status"] == "failed"  # nothing recorded

    forced = run_cli("resume", run_id, "--force", "--progress", "plain")
    assert forced.code == 0, forced.output
    assert show_json(run_cli, run_id)["run"]["status"] == "succeeded"


def test_resume_takes_a_change_to_a_step_that_had_not_succeeded_without_force(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    """Only a change to what would be reused is refused: a failed step runs again anyway."""
    path = write_pipeline(CHANGING)
    first = run_cli("run", str(path), "--progress", "plain", "--workers", "1")
    assert first.code == 1, first.output
    path.write_text(path.read_text().replace("test -e ok", "true"))
    resumed = run_cli("resume", run_id_of(first.stdout), "--progress", "plain")
    assert resumed.code == 0, resumed.output
    assert (tmp_path / "calls.txt").read_text().split().count("hello") == 1


# -- 17: the runner killed at random moments of a busy run -----------------------------------------

# About 1.5 s of work on two workers, committed in hundreds of transactions.
BUSY = """
version: 1
name: busy
env:
  MARK: "{marker}"
steps:
  - id: fan
    for_each: "{{{{ range(1000) | list }}}}"
    uses: noop
  - id: shells
    for_each: "{{{{ range(200) | list }}}}"
    uses: shell
    with: {{cmd: "sleep 0.01; echo {{{{ item }}}}"}}
  - id: gather
    needs: [fan, shells]
    uses: noop
  - id: tail
    needs: gather
    for_each: "{{{{ range(200) | list }}}}"
    uses: noop
"""
BUSY_STEPS = 1000 + 200 + 1 + 200


def _run_until(
    args: list[str], cwd: Path, env: dict[str, str], seconds: float
) -> subprocess.CompletedProcess[str] | None:
    """Run `runner ARGS`; SIGKILL it after `seconds` (None then), else its result."""
    proc = subprocess.Popen(
        [runner_executable(), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)  # the runner only, as the OOM killer would
        proc.communicate(timeout=30)
        return None
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.fault(17)
@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kills=st.lists(st.floats(min_value=0.1, max_value=2.0), min_size=1, max_size=2))
def test_a_runner_killed_at_random_moments_leaves_a_store_that_opens_checks_and_resumes(
    tmp_path: Path, kills: list[float]
) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    marker = f"busy-{folder.name}"
    (folder / "p.yaml").write_text(BUSY.format(marker=marker))
    env = runner_env(folder / "state")
    db = folder / "state" / "runs.db"

    def recorded() -> str | None:
        # A runner killed while creating the store leaves a file without tables yet (the next
        # runner migrates it): no run recorded.
        exists = "SELECT name FROM sqlite_master WHERE name = 'runs'"
        tables = rows(db, exists) if db.exists() else []
        found = rows(db, "SELECT id FROM runs") if tables else []
        return str(found[0][0]) if found else None

    def command() -> list[str]:
        run_id = recorded()
        start = ["resume", run_id] if run_id else ["run", "p.yaml"]
        return [*start, "--progress", "plain", "--workers", "2"]

    finished = False
    for delay in kills:  # the run, then perhaps its resume, each SIGKILLed after `delay`
        result = _run_until(command(), folder, env, delay)
        # Its workers and steps notice by themselves, as after the OOM killer.
        assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)
        if result is not None:  # it finished before the kill
            assert result.returncode == 0, result.stdout + result.stderr
            finished = True
            break
        if db.exists():
            assert quick_check(db) == "ok"
    if not finished:
        result = _run_until(command(), folder, env, 120)
        assert result is not None and result.returncode == 0, result

    assert quick_check(db) == "ok"
    ((run_id, status),) = rows(db, "SELECT id, status FROM runs")
    assert status == "succeeded"
    states = rows(
        db, "SELECT state, COUNT(*) FROM steps WHERE run_id = ? AND kind = 'step' GROUP BY state",
        (run_id,),
    )  # fmt: skip
    assert [tuple(r) for r in states] == [("succeeded", BUSY_STEPS)]
    assert rows(db, "SELECT COUNT(*) FROM attempts WHERE state = 'running'")[0][0] == 0
