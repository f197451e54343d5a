"""One deadline rule for every executor: an attempt is stopped from outside at its timeout, or,
for a plugin that stops its own processes at the timeout (`shell`), a grace period and a second
later.  A `python` step is stopped at its limit by the `inline` executor too (TimeoutError in
its code), and reported at its limit by the `thread` executor."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli

from pipeline_runner.procs import attempt_deadline

WritePipeline = Callable[..., Path]


def test_the_rule() -> None:
    assert attempt_deadline(10.0, None, 3.0, True) is None
    assert attempt_deadline(10.0, 2.0, 3.0, False) == 12.0
    assert attempt_deadline(10.0, 2.0, 3.0, True) == 16.0


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_a_python_step_is_stopped_at_its_timeout_by_every_executor(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, executor: str
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: slow
        steps:
          - {id: slow, uses: python, timeout: 1s, with: {call: 'time:sleep', args: [20]}}
        """
    )
    report = tmp_path / "out.json"
    began = time.monotonic()
    result = run_cli("run", str(path), "--executor", executor, "--json", str(report))
    took = time.monotonic() - began
    assert result.code == 1, result.output
    (step,) = json.loads(report.read_text())["steps"]
    assert step["state"] == "failed" and step["error_kind"] == "timeout", step
    assert took < 15, took
