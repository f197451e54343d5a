"""What a run's status, `--only` and `runner resume` mean: a run's status over all its steps,
an `--only` that selects nothing, fan-outs (static and mapped) kept on resume, `finally` run
again with the new status, the recorded parameters, a retried step's error, and the state of a
fan-out whose instances all failed with `continue_on_error`.

Each test drives the real `runner` command with real worker processes and a real run store."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Result, RunCli, no_traceback

WritePipeline = Callable[..., Path]

# Steps append to journal.txt (in the pipeline's folder) each time they run; a step named in
# FLAKY fails until the file `<name>.ok` exists.
LIB = """
import os

def work(name):
    with open("journal.txt", "a") as f:
        f.write(f"{name}\\n")
    if not os.path.exists(f"{name}.ok"):
        raise RuntimeError(f"{name} is not ready")
    return name

def fine(name):
    with open("journal.txt", "a") as f:
        f.write(f"{name}\\n")
    return name

def items():
    return ["a", "b", "c"]

def echo(value):
    return value

def once(name):
    if not os.path.exists(f"{name}.tried"):
        open(f"{name}.tried", "w").close()
        raise RuntimeError(f"{name}: first attempt fails")
    return name
"""


def start(run_cli: RunCli, path: Path, *args: str) -> tuple[Result, str]:
    """`runner run`; the result and the run id (from the --json summary)."""
    summary = path.parent / "first.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(summary), *args)
    return result, str(json.loads(summary.read_text())["run_id"])


def shown(run_cli: RunCli, run_id: str) -> dict[str, Any]:
    result = run_cli("show", run_id, "--json")
    assert result.code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def journal(tmp_path: Path) -> list[str]:
    return (tmp_path / "journal.txt").read_text().split()


# -- (5) a run's status is computed over all its steps ---------------------------------------


TWO = """
version: 1
name: two
steps:
  - id: a
    uses: python
    with: {call: "lib:work", args: [a]}
  - id: b
    uses: python
    with: {call: "lib:work", args: [b]}
"""


def test_resume_only_one_fixed_step_leaves_the_run_failed(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TWO, files={"lib.py": LIB})
    first, run_id = start(run_cli, path)
    assert first.code == 1, first.output
    (tmp_path / "a.ok").touch()
    again = run_cli("resume", run_id, "--only", "a", "--progress", "plain")
    assert again.code == 1, again.output
    data = shown(run_cli, run_id)
    assert data["run"]["status"] == "failed"
    assert data["run"]["exit_code"] == 1
    states = {s["step_id"]: s["state"] for s in data["steps"]}
    assert states == {"a": "succeeded", "b": "failed"}
    (tmp_path / "b.ok").touch()
    last = run_cli("resume", run_id, "--progress", "plain")
    assert last.code == 0, last.output
    assert shown(run_cli, run_id)["run"]["status"] == "succeeded"


def test_resume_only_the_instances_of_a_fan_out_counts_steps_not_the_group(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: fan
        steps:
          - id: fan
            for_each: [x, y]
            uses: python
            with: {call: "lib:work", args: ["{{ item }}"]}
        """,
        files={"lib.py": LIB},
    )
    (tmp_path / "y.ok").touch()
    first, run_id = start(run_cli, path)
    assert first.code == 1, first.output
    (tmp_path / "x.ok").touch()
    # The group `fan` is not selected by 'fan.*'; its recorded upstream_failed is stale.
    again = run_cli("resume", run_id, "--only", "fan.*", "--progress", "plain")
    assert again.code == 0, again.output
    assert shown(run_cli, run_id)["run"]["status"] == "succeeded"


# -- (7) an --only that selects nothing -----------------------------------------------------


def test_only_that_selects_nothing_is_an_error_with_a_suggestion(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TWO, files={"lib.py": LIB})
    result = run_cli("run", str(path), "--only", "A")
    assert result.code == 2, result.output
    assert "--only 'A' selects no step (did you mean 'a'?)" in result.stderr
    assert no_traceback(result.output)
    assert not (tmp_path / "journal.txt").exists()
    glob = run_cli("run", str(path), "--only", "x*")
    assert glob.code == 2, glob.output
    assert "--only 'x*' selects no step" in glob.stderr
    assert not (tmp_path / "journal.txt").exists()


def test_resume_with_an_only_that_selects_nothing_is_an_error(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TWO, files={"lib.py": LIB})
    first, run_id = start(run_cli, path)
    assert first.code == 1, first.output
    again = run_cli("resume", run_id, "--only", "bb")
    assert again.code == 2, again.output
    assert "--only 'bb' selects no step (did you mean 'b'?)" in again.stderr
    assert no_traceback(again.output)
    assert sorted(journal(tmp_path)) == ["a", "b"]


# -- (8) resume keeps the succeeded instances of static and mapped fan-outs -------------------


FANOUT = """
version: 1
name: fanout
steps:
  - id: split
    uses: python
    with: {call: "lib:items"}
  - id: mapped
    needs: split
    for_each: "{{ steps.split.output }}"
    uses: python
    with: {call: "lib:work", args: ["m{{ item }}"]}
  - id: static
    for_each: [x, y, z]
    uses: python
    with: {call: "lib:work", args: ["s{{ item }}"]}
  - id: total
    needs: [mapped, static]
    uses: python
    with: {call: "lib:echo", args: ["{{ steps.mapped.outputs }}"]}
"""


def test_resume_keeps_succeeded_instances_of_static_and_mapped_fan_outs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(FANOUT, files={"lib.py": LIB})
    for name in ("ma", "mc", "sx", "sy"):
        (tmp_path / f"{name}.ok").touch()
    first, run_id = start(run_cli, path)
    assert first.code == 1, first.output
    assert sorted(journal(tmp_path)) == ["ma", "mb", "mc", "sx", "sy", "sz"]
    (tmp_path / "mb.ok").touch()
    (tmp_path / "sz.ok").touch()
    again = run_cli("resume", run_id, "--progress", "plain")
    assert again.code == 0, again.output
    # Only the two instances that had failed ran again.
    assert sorted(journal(tmp_path)) == ["ma", "mb", "mb", "mc", "sx", "sy", "sz", "sz"]
    steps = {s["step_id"]: s for s in shown(run_cli, run_id)["steps"]}
    assert steps["total"]["output"] == {"a": "ma", "b": "mb", "c": "mc"}
    assert steps["mapped.a"]["state"] == "succeeded"
    assert steps["mapped.a"]["attempts"] == 1
    assert steps["mapped.b"]["attempts"] == 2


# -- (9) finally steps run again on resume --------------------------------------------------


FINALLY = """
version: 1
name: notify
steps:
  - id: a
    uses: python
    with: {call: "lib:work", args: [a]}
finally:
  - id: notify
    uses: python
    with: {call: "lib:fine", args: ["status-{{ run.status }}"]}
"""


def test_finally_runs_again_on_resume_with_the_new_status(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(FINALLY, files={"lib.py": LIB})
    first, run_id = start(run_cli, path)
    assert first.code == 1, first.output
    assert journal(tmp_path) == ["a", "status-failed"]
    (tmp_path / "a.ok").touch()
    again = run_cli("resume", run_id, "--progress", "plain")
    assert again.code == 0, again.output
    assert journal(tmp_path) == ["a", "status-failed", "a", "status-succeeded"]
    steps = {s["step_id"]: s for s in shown(run_cli, run_id)["steps"]}
    assert steps["notify"]["output"] == "status-succeeded"
    assert steps["notify"]["attempts"] == 2


def test_a_changed_finally_step_does_not_stop_a_resume(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(FINALLY, files={"lib.py": LIB})
    first, run_id = start(run_cli, path)
    assert first.code == 1, first.output
    path.write_text(FINALLY.replace("status-", "now-"))
    (tmp_path / "a.ok").touch()
    again = run_cli("resume", run_id, "--progress", "plain")
    assert again.code == 0, again.output
    assert journal(tmp_path)[-1] == "now-succeeded"


def test_finally_on_a_partial_resume_sees_the_steps_still_failed(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        TWO + FINALLY[FINALLY.index("finally:") :].replace("notify", "note"),
        files={"lib.py": LIB},
    )
    first, run_id = start(run_cli, path)
    assert first.code == 1, first.output
    (tmp_path / "a.ok").touch()
    again = run_cli("resume", run_id, "--only", "a", "--only", "note", "--progress", "plain")
    assert again.code == 1, again.output
    assert journal(tmp_path)[-3:] == ["status-failed", "a", "status-failed"]


# -- (13) resume uses the recorded parameters -----------------------------------------------


PARAMS = """
version: 1
name: params
params:
  who: nobody
steps:
  - id: a
    uses: python
    with: {call: "lib:work", args: ["{{ params.who }}"]}
"""


def test_resume_uses_the_recorded_params_file_values(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(PARAMS, files={"lib.py": LIB, "params.yaml": "who: one\n"})
    first, run_id = start(run_cli, path, "--params-file", "params.yaml")
    assert first.code == 1, first.output
    (tmp_path / "params.yaml").write_text("who: two\n")
    (tmp_path / "one.ok").touch()
    (tmp_path / "two.ok").touch()
    again = run_cli("resume", run_id, "--progress", "plain")
    assert again.code == 0, again.output
    assert journal(tmp_path) == ["one", "one"]


def test_resume_with_a_params_file_given_again_reads_it(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(PARAMS, files={"lib.py": LIB, "params.yaml": "who: one\n"})
    first, run_id = start(run_cli, path, "--params-file", "params.yaml")
    assert first.code == 1, first.output
    (tmp_path / "other.yaml").write_text("who: two\n")
    (tmp_path / "two.ok").touch()
    again = run_cli("resume", run_id, "--params-file", "other.yaml", "--progress", "plain")
    assert again.code == 0, again.output
    assert journal(tmp_path) == ["one", "two"]


# -- (14) a step that succeeded on a retry has no error -------------------------------------


def test_a_step_that_succeeded_on_a_retry_has_no_error(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: retried
        steps:
          - id: flaky
            retries: {max: 1, delay: 10ms, jitter: false}
            uses: python
            with: {call: "lib:once", args: [flaky]}
        """,
        files={"lib.py": LIB},
    )
    result, run_id = start(run_cli, path)
    assert result.code == 0, result.output
    (step,) = json.loads((tmp_path / "first.json").read_text())["steps"]
    assert step["state"] == "succeeded"
    assert step["attempts"] == 2
    assert step["error"] is None
    assert step["error_kind"] is None
    (row,) = shown(run_cli, run_id)["steps"]
    assert row["error"] is None
    assert row["error_kind"] is None


# -- (12) a fan-out whose instances all failed with continue_on_error ------------------------


ALLOWED = """
version: 1
name: allowed
steps:
  - id: split
    uses: python
    with: {call: "lib:items"}
  - id: mapped
    needs: split
    for_each: "{{ steps.split.output }}"
    continue_on_error: true
    uses: python
    with: {call: "lib:work", args: ["m{{ item }}"]}
  - id: static
    for_each: [x, y]
    continue_on_error: true
    uses: python
    with: {call: "lib:work", args: ["s{{ item }}"]}
  - id: partly
    for_each: [p, q]
    continue_on_error: true
    uses: python
    with: {call: "lib:work", args: ["{{ item }}"]}
  - id: report
    needs: [mapped, static, partly]
    uses: python
    with:
      call: lib:echo
      args:
        - ["{{ steps.mapped.state }}", "{{ steps.static.state }}", "{{ steps.partly.state }}"]
"""


def test_a_fan_out_whose_instances_all_failed_allowed_is_failed_allowed(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(ALLOWED, files={"lib.py": LIB})
    (tmp_path / "p.ok").touch()
    result, run_id = start(run_cli, path)
    assert result.code == 0, result.output
    steps = {s["step_id"]: s for s in shown(run_cli, run_id)["steps"]}
    assert steps["report"]["output"] == ["failed_allowed", "failed_allowed", "succeeded"]
    db = sqlite3.connect(tmp_path / "state" / "runs.db")
    try:
        rows = dict(db.execute("SELECT step_id, state FROM steps WHERE run_id = ?", (run_id,)))
    finally:
        db.close()
    assert rows["mapped"] == "failed_allowed"
    assert rows["static"] == "failed_allowed"
    assert rows["partly"] == "succeeded"


# -- what read a step that runs again runs again after it ------------------------------------


DOWNSTREAM = """
version: 1
name: downstream
steps:
  - id: source
    continue_on_error: true
    uses: python
    with: {call: "lib:work", args: [source]}
  - id: middle
    needs: source
    uses: python
    with: {call: "lib:fine", args: [middle]}
  - id: reader
    needs: middle
    if: "{{ steps.source.output is not none }}"
    uses: python
    with: {call: "lib:echo", args: ["{{ steps.source.output }}"]}
  - id: apart
    uses: python
    with: {call: "lib:fine", args: [apart]}
"""


def test_resume_runs_again_what_follows_a_step_that_runs_again(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """`source` was failed_allowed, so `reader` (which reads it through `middle`) was skipped.
    Once `source` succeeds on resume, `middle` and `reader` run after it, never before it with
    its old output; `apart` reads nothing that changed and is kept."""
    path = write_pipeline(DOWNSTREAM, files={"lib.py": LIB})
    first, run_id = start(run_cli, path)
    assert first.code == 0, first.output
    assert sorted(journal(tmp_path)) == ["apart", "middle", "source"]
    (tmp_path / "journal.txt").write_text("")
    (tmp_path / "source.ok").touch()
    again = run_cli("resume", run_id, "--progress", "plain")
    assert again.code == 0, again.output
    assert journal(tmp_path) == ["source", "middle"]
    steps = {s["step_id"]: s for s in shown(run_cli, run_id)["steps"]}
    assert steps["reader"]["state"] == "succeeded"
    assert steps["reader"]["output"] == "source"
    assert steps["apart"]["attempts"] == 1


RERUN_FAILS = """
version: 1
name: rerun-fails
steps:
  - id: z
    continue_on_error: true
    uses: python
    with: {call: "lib:work", args: [z]}
  - id: a
    needs: z
    uses: python
    with: {call: "lib:work", args: [a]}
"""


def test_a_step_that_runs_again_and_fails_keeps_no_old_output(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(RERUN_FAILS, files={"lib.py": LIB, "a.ok": ""})
    first, run_id = start(run_cli, path)
    assert first.code == 0, first.output
    (tmp_path / "z.ok").touch()
    (tmp_path / "a.ok").unlink()
    again = run_cli("resume", run_id, "--progress", "plain")
    assert again.code == 1, again.output
    steps = {s["step_id"]: s for s in shown(run_cli, run_id)["steps"]}
    assert (steps["z"]["state"], steps["z"]["output"]) == ("succeeded", "z")
    assert (steps["a"]["state"], steps["a"]["output"]) == ("failed", None)
