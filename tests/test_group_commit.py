"""The store's group commit (storesink.StoreSink, a speed shortcut): the changes of several turns
are committed together, but never later than COMMIT_INTERVAL after they are made, even while
every running step runs long, and the lines a reporter prints were committed first."""

from __future__ import annotations

import re
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import no_traceback, runner_executable, user_env, wait_for

PIPELINE = """
version: 1
name: group
steps:
  - id: quick
    uses: noop
  - id: slow
    uses: python
    with: {call: "mod:wait"}
  - id: after
    needs: [quick, slow]
    uses: noop
"""

MOD = """
import os
import time


def wait():
    # runs until the test saw `quick` committed (or a minute passes)
    deadline = time.time() + 60
    while not os.path.exists("go") and time.time() < deadline:
        time.sleep(0.01)
"""


def state_of(db: Path, step: str) -> str | None:
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT state FROM steps WHERE step_id = ?", (step,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


@pytest.mark.parametrize("plain", ["", "1"], ids=["shortcuts", "plain"])
def test_a_change_is_committed_and_shown_while_another_step_runs_long(
    write_pipeline: Callable[..., Path], tmp_path: Path, plain: str
) -> None:
    path = write_pipeline(PIPELINE, files={"mod.py": MOD})
    state = tmp_path / "state"
    env = {**user_env(), "PIPELINE_RUNNER_NO_SHORTCUTS": plain}
    proc = subprocess.Popen(
        [runner_executable(), "run", str(path), "--workers", "2", "--progress", "plain",
         "--state-dir", str(state)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # `slow` holds its worker until `go` exists: `quick`'s success must reach the store
        # (and then the terminal) meanwhile, not at the end of the run.
        assert wait_for(lambda: state_of(state / "runs.db", "quick") == "succeeded", 30)
        assert state_of(state / "runs.db", "slow") == "running"
    finally:
        (tmp_path / "go").write_text("")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and no_traceback(out + err), out + err
    lines = out.splitlines()
    quick = next(i for i, line in enumerate(lines) if re.search(r"succeeded\s+quick", line))
    slow = next(i for i, line in enumerate(lines) if re.search(r"succeeded\s+slow", line))
    assert quick < slow, out  # printed while `slow` still ran
