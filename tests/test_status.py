"""`runner status FILE` through the real command: each step cached, run or skipped and why (the
dry run's reasons, read from the store and its cache), and what changed since the file's last
run; the store is only read."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import RunCli

WritePipeline = Callable[..., Path]

PIPELINE = """
version: 1
name: st
params: {n: 1}
steps:
  - id: a
    uses: shell
    with: {cmd: "echo {{ params.n }}"}
    cache: true
  - id: b
    needs: a
    uses: shell
    with: {cmd: "echo b"}
    cache: true
  - id: c
    if: "params.n > 5"
    uses: noop
  - id: d
    uses: shell
    with: {cmd: "echo always"}
"""


def status(run_cli: RunCli, path: Path, *args: str) -> dict[str, dict[str, object]]:
    result = run_cli("status", str(path), "--json", *args)
    assert result.code == 0, result.output
    data = json.loads(result.stdout)
    return {"": data, **{s["id"]: s for s in data["steps"]}}


def test_before_any_run_everything_would_run_and_nothing_is_written(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(PIPELINE)
    found = status(run_cli, path)
    assert found[""]["last_run"] is None
    assert found["a"]["why"] == "run (cache: no stored result with this key)"
    assert found["b"]["why"] == "run (cache: a need runs first)"
    assert (found["c"]["action"], found["c"]["why"]) == ("skip", "skip (if: params.n > 5)")
    assert not (tmp_path / "state").exists()
    text = run_cli("status", str(path))
    assert text.stdout.splitlines()[0] == (
        "status of st: 0 cached, 3 would run, 1 skipped; never run here"
    )


def test_after_a_run_cached_steps_are_up_to_date_and_a_change_is_shown(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(PIPELINE)
    first = run_cli("run", str(path), "--json", "-", "-q")
    run_id = json.loads(first.stdout)["run_id"]
    found = status(run_cli, path)
    assert found[""]["last_run"]["id"] == run_id  # type: ignore[index]
    assert [found[s]["action"] for s in "abcd"] == ["cached", "cached", "skip", "run"]
    assert all(found[s]["change"] is None for s in "abcd")
    # The dry run says the same, from the same reasons.
    dry = run_cli("run", str(path), "-n").stdout
    assert "- a [shell]: cached (a stored result has the same key)" in dry
    changed = status(run_cli, path, "-p", "n=2")
    assert changed["a"]["action"] == "run" and changed["a"]["change"] == "changed"
    assert changed["b"]["why"] == "run (cache: a need runs first)"
    assert changed["d"]["change"] is None
    text = run_cli("status", str(path), "-p", "n=2").stdout
    assert "run (cache: no stored result with this key)  [changed since the last run]" in text
    assert status(run_cli, path, "--no-cache")["a"]["why"] == "run (--no-cache)"


def test_a_step_added_since_the_last_run_is_new(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(PIPELINE)
    assert run_cli("run", str(path), "-q").code == 0
    path.write_text(path.read_text() + "  - {id: e, uses: noop}\n")
    assert status(run_cli, path)["e"]["change"] == "new"


def test_status_of_an_invalid_file_is_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline("version: 1\nname: x\nsteps:\n  - {id: a, uses: nope}\n")
    result = run_cli("status", str(path))
    assert result.code == 2 and "p.yaml:4:" in result.stderr
