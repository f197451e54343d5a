"""runner's own environment variables under `PIPELINE_RUNNER_` (GitHub Actions owns `RUNNER_*`),
through the real command: the new names work, the old ones still do for this release with one
note on stderr, the new name wins, GitHub's own `RUNNER_*` variables change nothing, and a step
finds its outputs file under both names."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, runner_executable, user_env

from pipeline_runner import shortcuts

WritePipeline = Callable[..., Path]

PIPELINE = """
version: 1
name: env
params: {who: file}
steps:
  - id: hello
    uses: shell
    with: {cmd: "echo {{ params.who }}"}
"""
NOTE = "the RUNNER_* names are deprecated"


def runner(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`runner` with exactly these runner variables (no state dir set for it)."""
    return subprocess.run(
        [runner_executable(), *args],
        cwd=tmp_path,
        env={**user_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def output_of(result: subprocess.CompletedProcess[str]) -> object:
    return json.loads(result.stdout)["steps"][0]["output"]


def test_new_names_set_the_state_dir_and_params_without_a_note(
    write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    write_pipeline(PIPELINE)
    env = {"PIPELINE_RUNNER_STATE_DIR": "new-state", "PIPELINE_RUNNER_PARAM_WHO": "new"}
    result = runner(tmp_path, "run", "p.yaml", "-q", "--json", "-", **env)
    assert result.returncode == 0, result.stderr
    assert output_of(result) == "new"
    assert (tmp_path / "new-state").is_dir() and not (tmp_path / ".runner").exists()
    assert NOTE not in result.stderr


def test_old_names_still_work_with_one_note(write_pipeline: WritePipeline, tmp_path: Path) -> None:
    write_pipeline(PIPELINE)
    env = {"RUNNER_STATE_DIR": "old-state", "RUNNER_PARAM_WHO": "old"}
    result = runner(tmp_path, "run", "p.yaml", "-q", "--json", "-", **env)
    assert result.returncode == 0, result.stderr
    assert output_of(result) == "old"
    assert (tmp_path / "old-state").is_dir()
    notes = [line for line in result.stderr.splitlines() if NOTE in line]
    assert len(notes) == 1, result.stderr
    assert "RUNNER_PARAM_WHO, RUNNER_STATE_DIR" in notes[0]
    assert "use PIPELINE_RUNNER_PARAM_WHO, PIPELINE_RUNNER_STATE_DIR" in notes[0]
    listed = runner(tmp_path, "runs", "--json", RUNNER_STATE_DIR="old-state")
    assert len(json.loads(listed.stdout)) == 1


def test_the_new_name_wins(write_pipeline: WritePipeline, tmp_path: Path) -> None:
    write_pipeline(PIPELINE)
    env = {
        "RUNNER_STATE_DIR": "old-state",
        "PIPELINE_RUNNER_STATE_DIR": "new-state",
        "RUNNER_PARAM_WHO": "old",
        "PIPELINE_RUNNER_PARAM_WHO": "new",
    }
    result = runner(tmp_path, "run", "p.yaml", "-q", "--json", "-", **env)
    assert output_of(result) == "new"
    assert (tmp_path / "new-state").is_dir() and not (tmp_path / "old-state").exists()


def test_github_runner_variables_change_nothing(
    write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    write_pipeline(PIPELINE)
    github = {
        "RUNNER_OS": "Linux",
        "RUNNER_TEMP": str(tmp_path / "tmp"),
        "RUNNER_DEBUG": "1",
        "RUNNER_ARCH": "X64",
        "RUNNER_NAME": "GitHub Actions 2",
        "RUNNER_TOOL_CACHE": "/opt/hostedtoolcache",
        "PIPELINE_RUNNER_STATE_DIR": "state",
    }
    result = runner(tmp_path, "run", "p.yaml", "-q", "--json", "-", **github)
    assert result.returncode == 0 and output_of(result) == "file"
    assert result.stderr.strip().startswith("run ") and NOTE not in result.stderr


def test_a_step_finds_its_outputs_file_under_both_names(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    write_pipeline(
        """
        version: 1
        name: outs
        steps:
          - id: both
            uses: shell
            with:
              cmd: >-
                test "$PIPELINE_RUNNER_OUTPUT" = "$RUNNER_OUTPUT" &&
                echo "a=1" >> "$PIPELINE_RUNNER_OUTPUT" && echo "b=2" >> "$RUNNER_OUTPUT"
        """
    )
    result = run_cli("run", "p.yaml", "-q", "--json", "-")
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["steps"][0]["outputs"] == {"a": "1", "b": "2"}


@pytest.mark.parametrize("name", ["PIPELINE_RUNNER_NO_SHORTCUTS", "RUNNER_NO_SHORTCUTS"])
def test_the_shortcut_switch_under_either_name(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delenv("PIPELINE_RUNNER_NO_SHORTCUTS", raising=False)
    monkeypatch.delenv("RUNNER_NO_SHORTCUTS", raising=False)
    assert shortcuts.enabled()
    monkeypatch.setenv(name, "1")
    assert not shortcuts.enabled()
