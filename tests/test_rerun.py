"""`runner resume RUN --rerun GLOB` (Airflow's "clear task and downstream") and `runner run
--force GLOB` (Snakemake's `--forcerun`), through the real `runner` command: which steps run
again (qualified instance ids, run-time instances, downstream through templates and
fan-outs), that a cached step selected really runs, what `runner show` and `--dry-run` say,
and a glob that selects nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import RunCli, no_traceback
from test_resume_semantics import shown, start

WritePipeline = Callable[..., Path]

# Every step appends its name to journal.txt (in the pipeline's folder) when it runs.
LIB = """
import os

def work(name, *inputs):
    with open("journal.txt", "a") as f:
        f.write(f"{name}\\n")
    if os.path.exists(f"{name}.broken"):
        raise RuntimeError(f"{name} is broken")
    return name

def items():
    with open("journal.txt", "a") as f:
        f.write("items\\n")
    return ["a", "b", "c"]
"""

TENANTS = """
version: 1
name: tenants
templates:
  tenant:
    params: {name: {}}
    steps:
      - id: extract
        uses: python
        with: {call: "lib:work", args: ["extract-{{ name }}"]}
      - id: load
        needs: extract
        uses: python
        with: {call: "lib:work", args: ["load-{{ name }}", "{{ steps.extract.output }}"]}
steps:
  - id: prepare
    uses: python
    with: {call: "lib:work", args: [prepare]}
  - id: etl
    needs: prepare
    for_each: [acme, globex]
    template: tenant
    with: {name: "{{ item }}"}
  - id: report
    needs: etl
    uses: python
    with: {call: "lib:work", args: [report]}
finally:
  - id: notify
    uses: python
    with: {call: "lib:work", args: [notify]}
"""


def steps(run_cli: RunCli, run_id: str) -> dict[str, dict[str, Any]]:
    return {s["step_id"]: s for s in shown(run_cli, run_id)["steps"]}


def journal(tmp_path: Path) -> list[str]:
    path = tmp_path / "journal.txt"
    return path.read_text().split() if path.exists() else []


def fresh_journal(tmp_path: Path) -> None:
    (tmp_path / "journal.txt").unlink(missing_ok=True)


def succeeded_run(run_cli: RunCli, path: Path) -> str:
    """A first run of `path` that succeeds; its id (the journal emptied after it)."""
    first, run_id = start(run_cli, path)
    assert first.code == 0, first.output
    fresh_journal(path.parent)
    return run_id


def test_rerun_an_instance_runs_it_and_its_downstream_of_a_succeeded_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TENANTS, files={"lib.py": LIB})
    run_id = succeeded_run(run_cli, path)
    # Without --rerun, resuming a succeeded run runs only its `finally` steps again.
    again = run_cli("resume", run_id, "--progress", "plain")
    assert again.code == 0, again.output
    assert journal(tmp_path) == ["notify"]
    fresh_journal(tmp_path)
    again = run_cli("resume", run_id, "--rerun", "etl.acme.*", "--progress", "plain")
    assert again.code == 0, again.output
    assert journal(tmp_path) == ["extract-acme", "load-acme", "report", "notify"]
    rows = steps(run_cli, run_id)
    assert rows["etl.acme.extract"]["attempts"] == 2
    assert rows["etl.acme.extract"]["rerun"] == "--rerun etl.acme.*"
    assert rows["report"]["rerun"] == "downstream of --rerun etl.acme.*"
    assert rows["etl.globex.extract"]["attempts"] == 1
    assert rows["etl.globex.extract"]["rerun"] is None
    assert shown(run_cli, run_id)["run"]["status"] == "succeeded"
    text = run_cli("show", run_id)
    assert "(re-run: --rerun etl.acme.*)" in text.stdout, text.stdout
    assert "(re-run: downstream of --rerun etl.acme.*)" in text.stdout


def test_rerun_globs_repeat_and_match_inner_ids_of_every_instance(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TENANTS, files={"lib.py": LIB})
    run_id = succeeded_run(run_cli, path)
    again = run_cli(
        "resume", run_id, "--rerun", "etl.*.load", "--rerun", "prepare", "--progress", "plain"
    )
    assert again.code == 0, again.output
    # `prepare` is upstream of every extract: everything runs again, once.
    everything = ["prepare", "extract-acme", "extract-globex", "load-acme", "load-globex"]
    assert sorted(journal(tmp_path)) == sorted([*everything, "report", "notify"])


def test_rerun_that_selects_nothing_is_an_error_before_anything_runs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TENANTS, files={"lib.py": LIB})
    run_id = succeeded_run(run_cli, path)
    result = run_cli("resume", run_id, "--rerun", "etl.acme.lod", "--progress", "plain")
    assert result.code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "runner: error: --rerun 'etl.acme.lod' selects no step of the run "
        "(did you mean 'etl.acme.load'?)"
    ]
    assert no_traceback(result.output)
    assert journal(tmp_path) == []
    assert steps(run_cli, run_id)["report"]["attempts"] == 1


def test_rerun_of_a_cached_step_runs_it(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: cached
        steps:
          - id: source
            uses: python
            cache: {inputs: [data.txt]}
            with: {call: "lib:work", args: [source]}
          - id: sink
            needs: source
            uses: python
            cache: true
            with: {call: "lib:work", args: [sink, "{{ steps.source.output }}"]}
        """,
        files={"lib.py": LIB, "data.txt": "v1\n"},
    )
    first, _ = start(run_cli, path)
    assert first.code == 0, first.output
    second, run_id = start(run_cli, path)
    assert second.code == 0, second.output
    assert {s["state"] for s in steps(run_cli, run_id).values()} == {"cached"}
    fresh_journal(tmp_path)
    again = run_cli("resume", run_id, "--rerun", "source", "--progress", "plain")
    assert again.code == 0, again.output
    # Both run: cleared steps never answer from the cache (Airflow's clear runs them).
    assert journal(tmp_path) == ["source", "sink"]
    assert {s["state"] for s in steps(run_cli, run_id).values()} == {"succeeded"}


def test_force_runs_a_cached_step_and_its_downstream_only_if_its_key_changed(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: forced
        steps:
          - id: source
            uses: python
            cache: true
            with: {call: "lib:work", args: [source]}
          - id: sink
            needs: source
            uses: python
            cache: true
            with: {call: "lib:work", args: [sink, "{{ steps.source.output }}"]}
        """,
        files={"lib.py": LIB},
    )
    first, _ = start(run_cli, path)
    assert first.code == 0, first.output
    dry = run_cli("run", str(path), "--dry-run", "--force", "source")
    assert dry.code == 0, dry.output
    assert "- source [python]: run (--force: the cache is not looked up" in dry.stdout, dry.stdout
    # `sink` reads source's output, which --force does not know yet: looked up at run time.
    assert "- sink [python]: run (cache: a need runs first)" in dry.stdout, dry.stdout
    fresh_journal(tmp_path)
    forced, run_id = start(run_cli, path, "--force", "source")
    assert forced.code == 0, forced.output
    assert journal(tmp_path) == ["source"]  # same output: sink's key is unchanged
    states = {k: v["state"] for k, v in steps(run_cli, run_id).items()}
    assert states == {"source": "succeeded", "sink": "cached"}
    missing = run_cli("run", str(path), "--force", "sorce")
    assert missing.code == 2, missing.output
    assert "--force 'sorce' selects no step (did you mean 'source'?)" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    outside = run_cli("run", str(path), "--only", "source", "--force", "sink")
    assert outside.code == 2, outside.output
    assert "--force 'sink' selects no step in the --only selection" in outside.stderr


RUNTIME = """
version: 1
name: runtime
steps:
  - id: list
    uses: python
    with: {call: "lib:items"}
  - id: fan
    needs: list
    for_each: "{{ steps.list.output }}"
    uses: python
    with: {call: "lib:work", args: ["fan-{{ item }}"]}
  - id: total
    needs: fan
    uses: python
    with: {call: "lib:work", args: [total, "{{ steps.fan.output }}"]}
"""


def test_rerun_one_run_time_instance_and_a_source_of_a_run_time_fan_out(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(RUNTIME, files={"lib.py": LIB})
    run_id = succeeded_run(run_cli, path)
    one = run_cli("resume", run_id, "--rerun", "fan.b", "--progress", "plain")
    assert one.code == 0, one.output
    assert journal(tmp_path) == ["fan-b", "total"]
    fresh_journal(tmp_path)
    source = run_cli("resume", run_id, "--rerun", "list", "--progress", "plain")
    assert source.code == 0, source.output
    assert sorted(journal(tmp_path)) == sorted(["items", "fan-a", "fan-b", "fan-c", "total"])
    rows = steps(run_cli, run_id)
    assert rows["fan.b"]["attempts"] == 3
    assert rows["fan.a"]["rerun"] == "downstream of --rerun list"


SAGA = """
version: 1
name: saga
steps:
  - id: book
    uses: python
    with: {call: "lib:work", args: [book]}
    compensate: {uses: python, with: {call: "lib:work", args: [unbook]}}
  - id: pay
    needs: book
    uses: python
    with: {call: "lib:work", args: [pay]}
"""


def test_a_step_undone_then_run_again_is_not_undone_for_later_resumes(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(SAGA, files={"lib.py": LIB, "pay.broken": ""})
    first, run_id = start(run_cli, path)
    assert first.code == 1, first.output
    assert journal(tmp_path) == ["book", "pay", "unbook"]
    (tmp_path / "pay.broken").unlink()
    fresh_journal(tmp_path)
    fixed = run_cli("resume", run_id, "--progress", "plain")
    assert fixed.code == 0, fixed.output
    assert journal(tmp_path) == ["book", "pay"]  # book was undone: it runs again
    fresh_journal(tmp_path)
    again = run_cli("resume", run_id, "--rerun", "pay", "--progress", "plain")
    assert again.code == 0, again.output
    # The compensation of the first run is older than book's last success: book is kept.
    assert journal(tmp_path) == ["pay"]
    rows = steps(run_cli, run_id)
    assert rows["pay"]["attempts"] == 3
    assert rows["book"]["rerun"] is None
