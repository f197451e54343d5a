"""Shell completion through the real `runner` command and click's completion protocol (what the
shell scripts of `_RUNNER_COMPLETE=bash_source runner` call): run ids from the store, step ids
from the file on the command line or from the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import RunCli

WritePipeline = Callable[..., Path]

PIPELINE = """
version: 1
name: comp
steps:
  - id: build
    uses: noop
  - id: test_unit
    needs: build
    uses: noop
  - id: test_e2e
    needs: build
    uses: noop
"""


def complete(run_cli: RunCli, line: str, shell: str = "bash", cwd: Path | None = None) -> list[str]:
    """The values completed for the last word of `line` (a trailing space: a new word)."""
    words = line.split(" ")
    env = {
        "_RUNNER_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": line,
        "COMP_CWORD": str(len(words) - 1),
    }
    result = run_cli(env=env, cwd=cwd)
    assert result.code == 0 and result.stderr == "", result.output
    if shell == "bash":
        return [item.split(",", 1)[1] for item in result.stdout.splitlines() if "," in item]
    lines = result.stdout.splitlines()  # zsh: type, value, help, for each item
    return lines[1::3]


def test_run_ids_complete_from_the_store(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(PIPELINE)
    assert complete(run_cli, "runner resume ") == []  # no store yet: nothing, and no error
    ids = [
        json.loads(run_cli("run", str(path), "-q", "--json", "-").stdout)["run_id"] for _ in "ab"
    ]
    for command in ("resume", "show", "logs"):
        assert sorted(complete(run_cli, f"runner {command} ")) == sorted(ids), command
    assert complete(run_cli, f"runner show {ids[1][:-2]}") == [ids[1]]
    assert complete(run_cli, "runner show zzz") == []


def test_step_ids_complete_from_the_file_and_from_the_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(PIPELINE)
    want = ["build", "test_unit", "test_e2e"]
    assert complete(run_cli, "runner run p.yaml --only ") == want
    assert complete(run_cli, "runner run p.yaml --force test_") == ["test_unit", "test_e2e"]
    assert complete(run_cli, "runner run missing.yaml --only ") == []
    run_id = json.loads(run_cli("run", str(path), "-q", "--json", "-").stdout)["run_id"]
    assert complete(run_cli, f"runner resume {run_id} --rerun ") == want
    assert complete(run_cli, f"runner resume {run_id[:10]} --only test_u") == ["test_unit"]
    assert complete(run_cli, f"runner logs {run_id} ") == want
    assert complete(run_cli, f"runner logs {run_id} b", shell="zsh") == ["build"]
