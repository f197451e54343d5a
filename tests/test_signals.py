"""Signals, end to end: Ctrl-C and SIGTERM sent to a real `runner run`, steps that ignore SIGTERM.

The runner runs in a session of its own (`start_new_session=True`), so a signal goes only where
the test sends it.  Every process of a run carries a unique marker in its environment (the
runner's, its forkserver's and workers', and the steps' through the pipeline `env`), so after
the run `processes_with(marker)` finds any orphan.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import test_engine
from conftest import processes_with, wait_for
from test_engine import LIB, runner_text, start_runner, states

marker = test_engine.marker  # the fixtures, shared with the engine tests
popen = test_engine.popen

WritePipeline = Callable[..., Path]

TWO_SLEEPERS = """
version: 1
name: sleepers
params:
  dir: .
env:
  MARK: {marker}
steps:
  - id: sh
    uses: shell
    with:
      cmd: "{trap}touch started.sh; sleep 300"
  - id: py
    uses: python
    with:
      call: lib:{python}
      args: ["{{{{ params.dir }}}}/started.py"]
  - id: after
    needs: [sh, py]
    uses: shell
    with:
      cmd: touch AFTER
"""


def sleepers(marker: str, stubborn: bool = False) -> str:
    return TWO_SLEEPERS.format(
        marker=marker,
        trap="trap '' TERM INT; " if stubborn else "",
        python="stubborn" if stubborn else "touch_and_sleep",
    )


def start_and_wait(
    tmp_path: Path, path: Path, marker: str, popen: list[subprocess.Popen[str]], *args: str
) -> subprocess.Popen[str]:
    proc = start_runner(
        tmp_path, path, "--workers", "2", "--param", f"dir={tmp_path}", *args, env={"MARK": marker}
    )
    popen.append(proc)
    started = [tmp_path / "started.sh", tmp_path / "started.py"]
    assert wait_for(lambda: all(p.exists() for p in started), timeout=60), "steps never started"
    assert len(processes_with(marker)) >= 4  # runner, forkserver, workers, sh, sleep
    return proc


@pytest.mark.fault(11)
@pytest.mark.fault(13)
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, None)]
)
def test_interrupt_stops_running_steps_and_says_how_to_resume(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    marker: str,
    popen: list[subprocess.Popen[str]],
    sig: signal.Signals,
    code: int | None,
) -> None:
    path = write_pipeline(sleepers(marker), files={"lib.py": LIB})
    proc = start_and_wait(tmp_path, path, marker, popen)
    sent = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    if code is None:  # SIGHUP: handled like a Ctrl-C; the code is not in the contract
        assert proc.returncode in (129, 130), stdout + stderr
    else:
        assert proc.returncode == code, stdout + stderr
    assert "Traceback" not in runner_text(stdout + stderr)
    assert took < 3 + 3, took  # the default grace period, and some
    assert "runner resume " in stdout + stderr
    assert states(stdout) == {"sh": "cancelled", "py": "cancelled", "after": "cancelled"}
    assert not (tmp_path / "AFTER").exists()
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)


@pytest.mark.fault(12)
def test_a_second_ctrl_c_stops_at_once_even_when_steps_ignore_sigterm(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    marker: str,
    popen: list[subprocess.Popen[str]],
) -> None:
    path = write_pipeline(sleepers(marker, stubborn=True), files={"lib.py": LIB})
    proc = start_and_wait(tmp_path, path, marker, popen, "--grace", "30")
    proc.send_signal(signal.SIGINT)
    # The first Ctrl-C is being handled once the python step has been sent SIGTERM (which it
    # notes and ignores); with a 30 s grace period only the second Ctrl-C can end the run soon.
    assert wait_for((tmp_path / "started.py.term").exists, timeout=30)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, stdout + stderr
    assert took < 2.5, took
    assert "runner resume " in stdout + stderr
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)


@pytest.mark.fault(2)
@pytest.mark.slow
def test_a_step_ignoring_sigterm_is_killed_after_the_grace_period(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    marker: str,
    popen: list[subprocess.Popen[str]],
) -> None:
    path = write_pipeline(
        f"""
        version: 1
        name: stubborn
        env:
          MARK: {marker}
        steps:
          - id: stubborn
            uses: shell
            timeout: 1s
            with:
              cmd: "trap '' TERM; sleep 100"
        """
    )
    proc = start_runner(tmp_path, path, "--grace", "1", env={"MARK": marker})
    popen.append(proc)
    assert proc.stdout is not None
    began = None
    for line in proc.stdout:  # time from the step's start, not the runner's
        if "running" in line and "stubborn" in line:
            began = time.monotonic()
            break
    assert began is not None, "the step never started"
    rest, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - began
    assert proc.returncode == 1, rest + stderr
    assert "timed out after 1s" in rest
    assert took <= 1 + 1 + 1, took  # timeout + grace + 1 s
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)


@pytest.mark.fault(14)
def test_a_runner_killed_with_sigkill_leaves_no_orphans(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    marker: str,
    popen: list[subprocess.Popen[str]],
) -> None:
    path = write_pipeline(sleepers(marker), files={"lib.py": LIB})
    proc = start_and_wait(tmp_path, path, marker, popen)
    proc.kill()  # the runner only: its workers and steps must notice by themselves
    proc.communicate(timeout=30)
    assert wait_for(lambda: not processes_with(marker), timeout=5), processes_with(marker)


CLEANUP = """
version: 1
name: cleanup
env:
  MARK: {marker}
steps:
  - id: sh
    uses: shell
    with:
      cmd: "{trap}; touch started; while :; do sleep 300 & wait; done"
  - id: after
    needs: sh
    uses: shell
    with:
      cmd: touch AFTER
"""


@pytest.mark.fault(11)
@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_ctrl_c_gives_a_command_its_grace_period_to_clean_up(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    marker: str,
    popen: list[subprocess.Popen[str]],
    executor: str,
) -> None:
    trap = "trap 'sleep 0.3; echo cleaned > cleaned; exit 0' TERM"
    path = write_pipeline(CLEANUP.format(marker=marker, trap=trap))
    proc = start_runner(tmp_path, path, "--executor", executor, env={"MARK": marker})
    popen.append(proc)
    assert wait_for((tmp_path / "started").exists, timeout=60), "the step never started"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert (tmp_path / "cleaned").read_text() == "cleaned\n"  # SIGTERM first, time to clean up
    assert states(stdout) == {"sh": "cancelled", "after": "cancelled"}
    assert not (tmp_path / "AFTER").exists()
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)


@pytest.mark.fault(12)
@pytest.mark.parametrize("executor", ["thread", "inline"])
def test_a_second_ctrl_c_kills_a_stubborn_command_in_the_runner_process(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    marker: str,
    popen: list[subprocess.Popen[str]],
    executor: str,
) -> None:
    path = write_pipeline(CLEANUP.format(marker=marker, trap="trap 'touch got_term' TERM"))
    proc = start_runner(
        tmp_path, path, "--executor", executor, "--grace", "30", env={"MARK": marker}
    )
    popen.append(proc)
    assert wait_for((tmp_path / "started").exists, timeout=60), "the step never started"
    proc.send_signal(signal.SIGINT)
    assert wait_for((tmp_path / "got_term").exists, timeout=30)  # noted, and ignored
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, stdout + stderr
    assert took < 2.5, took
    assert states(stdout)["sh"] == "cancelled"
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)
