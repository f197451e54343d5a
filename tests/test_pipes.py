"""The pipes between the runner and its workers carry large values both ways at once without
either side waiting on the other forever."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import RunCli
from test_engine import WritePipeline

LIB = """
def echo(value):
    return value
"""


def test_large_tasks_and_large_outputs_at_once_do_not_hang(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    # Cheap steps first make the worker batches long; then every task carries ~0.9 MB and
    # returns it.  The runner writes the next batch while a worker, busy with the previous one,
    # writes large outputs back: a blocking write on both sides was a deadlock.
    big = "x" * 900_000
    cheap = "".join(f"  - {{id: n{i:03}, uses: noop, priority: 10}}\n" for i in range(300))
    echo = "".join(
        f"  - {{id: b{i:03}, uses: python, with: {{call: 'lib:echo', "
        "args: ['{{ params.big }}']}}\n"
        for i in range(60)
    )
    path = write_pipeline(
        f"version: 1\nname: pipes\nparams:\n  big: {big}\nsteps:\n{cheap}{echo}",
        files={"lib.py": LIB},
    )
    try:
        result = run_cli("run", str(path), "--workers", "2", timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError("the run hung with large values in both directions") from None
    assert result.code == 0, result.output[-2000:]
    runs = json.loads(run_cli("runs", "--json").stdout)
    shown = json.loads(run_cli("show", runs[0]["id"], "--json").stdout)
    outputs = {s["step_id"]: s["output"] for s in shown["steps"] if s["step_id"].startswith("b")}
    assert len(outputs) == 60
    assert all(output == big for output in outputs.values())
