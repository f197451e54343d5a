"""The runner's process collects cycles less often (gcpolicy.py); a worker gives the user's
steps the collector as Python sets it up."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

from pipeline_runner import defaults

PIPELINE = """
version: 1
name: gc
steps:
  - id: seen
    uses: python
    with: {call: "mod:threshold"}
"""

MOD = """
import gc


def threshold():
    return list(gc.get_threshold())
"""


def python_default() -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", "import gc, json; print(json.dumps(gc.get_threshold()))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(out.stdout))


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_step_sees_the_collector_of_its_process(
    run_cli: RunCli,
    write_pipeline: Callable[..., Path],
    tmp_path: Path,
    executor: str,
) -> None:
    path = write_pipeline(PIPELINE, files={"mod.py": MOD})
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--executor", executor, "--json", str(summary))
    assert result.code == 0 and no_traceback(result.output), result.output
    seen = json.loads(summary.read_text())["steps"][0]["output"]
    default = python_default()
    if executor == "process":  # a worker: Python's own thresholds for the user's code
        assert seen == default
    else:  # a thread of the runner's process: the command's policy
        assert seen == [defaults.GC_YOUNG_OBJECTS, *default[1:]]
