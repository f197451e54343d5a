"""A pool worker's per-attempt shortcuts (worker.py): after a `noop` attempt it does not ask the
kernel for its working folder nor look for a named-outputs file.  Whatever an attempt changed
(its folder, its outputs) must still be put right for the next one, shortcuts on and off."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

PIPELINE = """
version: 1
name: shortcuts
steps:
  - id: wander
    uses: python
    with: {call: "mod:wander"}
  - id: rest1
    needs: wander
    uses: noop
  - id: rest2
    needs: rest1
    uses: noop
  - id: where
    needs: rest2
    uses: python
    with: {call: "mod:where"}
  - id: rest3
    needs: where
    uses: noop
  - id: after
    needs: rest3
    uses: python
    with: {call: "mod:where"}
"""

MOD = """
import os


def wander():
    os.makedirs("elsewhere", exist_ok=True)
    os.chdir("elsewhere")  # left there: the next attempt must not start here
    with open(os.environ["RUNNER_OUTPUT"], "w") as f:
        f.write("went=yes\\n")


def where():
    with open(os.environ["RUNNER_OUTPUT"], "w") as f:
        f.write("seen=" + os.path.basename(os.environ["RUNNER_OUTPUT"]) + "\\n")
    return os.getcwd()
"""


@pytest.mark.parametrize("plain", ["", "1"], ids=["shortcuts", "plain"])
def test_noop_attempts_between_steps_keep_the_folder_and_the_outputs_right(
    run_cli: RunCli,
    write_pipeline: Callable[..., Path],
    tmp_path: Path,
    plain: str,
) -> None:
    path = write_pipeline(PIPELINE, files={"mod.py": MOD})
    summary = tmp_path / "s.json"
    result = run_cli(
        "run",
        str(path),
        "--workers",
        "1",
        "--json",
        str(summary),
        env={"PIPELINE_RUNNER_NO_SHORTCUTS": plain},
    )
    assert result.code == 0 and no_traceback(result.output), result.output
    steps = {s["id"]: s for s in json.loads(summary.read_text())["steps"]}
    assert steps["wander"]["outputs"] == {"went": "yes"}
    for sid in ("where", "after"):
        assert steps[sid]["output"] == str(tmp_path), steps[sid]
        assert steps[sid]["outputs"] == {"seen": f"{sid}.1"}
    for sid in ("rest1", "rest2", "rest3"):
        assert steps[sid]["state"] == "succeeded" and not steps[sid]["outputs"], steps[sid]
