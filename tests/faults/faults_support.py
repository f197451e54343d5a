"""What the fault tests share: starting a real `runner` (in a session of its own, with resource
limits when a test asks), measuring a process's time and peak memory, reading the run store and
/proc, and cleaning up whatever a failed test left running.

Every process of a run started here carries a unique `TEST_RUN` marker in its environment
(the runner's, the forkserver's, the workers', the steps'), so `processes_with(marker)` finds
any of them afterwards, and the `spawned` fixture kills them at the end of a test.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import processes_with, runner_executable, user_env

RUN_ID = re.compile(r"\brun (\d{8}T\d{6}-[0-9a-f]{6})\b")
STATE_LINE = re.compile(r"^\d\d:\d\d:\d\d \S+ ([a-z_]+)\s+(\S+)", re.M)


def runner_env(state_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = user_env()
    env.pop("GITHUB_ACTIONS", None)
    env["PIPELINE_RUNNER_STATE_DIR"] = str(state_dir)
    env.update(extra or {})
    return env


def file_size_limit(limit: int) -> Callable[[], None]:
    """A `preexec_fn` giving the runner (and so its forkserver, workers and steps) a file size
    limit: a write past it fails with EFBIG, as on a full disk, but only for files that big."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@dataclass
class Spawned:
    proc: subprocess.Popen[str]
    marker: str

    @property
    def pid(self) -> int:
        return self.proc.pid


class Spawner:
    """Starts `runner` commands in the background; `cleanup()` kills what is left of them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Spawned] = []

    def __call__(
        self,
        *args: str,
        cwd: Path | None = None,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
        stdout: Any = subprocess.PIPE,
    ) -> Spawned:
        marker = f"fault-run-{uuid.uuid4().hex}"
        proc = subprocess.Popen(
            [runner_executable(), *args],
            cwd=cwd or self.tmp_path,
            env=runner_env(
                state_dir or self.tmp_path / "state", {"TEST_RUN": marker, **(env or {})}
            ),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # signals go only where the test sends them
            preexec_fn=preexec,
        )
        spawned = Spawned(proc, marker)
        self.started.append(spawned)
        return spawned

    def cleanup(self) -> None:
        for spawned in self.started:
            if spawned.proc.poll() is None:
                try:
                    os.killpg(spawned.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            kill_all(processes_with(spawned.marker))
            try:
                spawned.proc.communicate(timeout=30)
            except (subprocess.TimeoutExpired, ValueError):
                pass


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(tmp_path)
    yield spawner
    spawner.cleanup()


def kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@dataclass
class Measured:
    code: int
    stdout: str
    stderr: str
    seconds: float
    peak_kb: int  # the runner's own peak resident memory (VmHWM)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


# `runner ARGS`, reporting its peak memory as it exits.  Not wait4's ru_maxrss: Linux counts in
# it the memory of the process that forked the child (here pytest), so it never reads lower.
_MEASURE = """
import atexit, os, sys

def report():
    with open("/proc/self/status") as f:
        peak = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["FAULTS_PEAK_FILE"], "w") as f:
        f.write(peak)

atexit.register(report)
sys.argv[0] = "runner"
from pipeline_runner.cli import main
main()
"""


def measured(
    *args: str, cwd: Path, state_dir: Path | None = None, timeout: float = 120
) -> Measured:
    """Run `runner ARGS` (the same entry point as the console script) and measure its wall
    time and its own peak memory."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak"
        env = runner_env(state_dir or cwd / "state", {"FAULTS_PEAK_FILE": str(peak_file)})
        began = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
        seconds = time.monotonic() - began
        peak = int(peak_file.read_text()) if peak_file.exists() else -1
    return Measured(
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
        seconds,
        peak,
    )


# -- /proc -----------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is dead: it only waits to be collected)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def peak_rss_kb(pid: int) -> int:
    """VmHWM: the most resident memory `pid` has had so far."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def start_time(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


# -- the store ---------------------------------------------------------------------------------


def rows(db: Path, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, tuple(args)).fetchall()
    finally:
        conn.close()


def quick_check(db: Path) -> str:
    return str(rows(db, "PRAGMA quick_check")[0][0])


def run_id_of(output: str) -> str:
    found = RUN_ID.search(output)
    assert found, f"no run id in:\n{output}"
    return found.group(1)


def printed_states(stdout: str) -> dict[str, str]:
    """The last state of every step, from the plain progress lines."""
    return {step: state for state, step in STATE_LINE.findall(stdout)}


def stored_states(db: Path, run_id: str) -> dict[str, str]:
    found = rows(db, "SELECT step_id, state FROM steps WHERE run_id = ?", (run_id,))
    return {r["step_id"]: r["state"] for r in found}


def show_json(run_cli: Any, run_id: str, **kw: Any) -> dict[str, Any]:
    result = run_cli("show", run_id, "--json", **kw)
    assert result.code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def runner_text(output: str) -> str:
    """What the runner wrote itself: without the step log lines it quotes behind `| `."""
    return "\n".join(line for line in output.splitlines() if not line.lstrip().startswith("| "))


def tree(root: Path, skip: Sequence[Path] = ()) -> set[str]:
    """Every path under `root` (relative), except under the folders in `skip`."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            out.add(str((here / name).relative_to(root)))
    return out
