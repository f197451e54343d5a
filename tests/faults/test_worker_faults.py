"""Second-round scenarios (numbered on from FAULTS.md's 35) in the worker and executor layer: a
step that kills its worker takes nothing else with it, each pipeline file's steps import from
its own folder, one step's changes to its process do not reach the next step on a long-lived
worker, and a dead run is seen as dead even when its pid was reused."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli

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
