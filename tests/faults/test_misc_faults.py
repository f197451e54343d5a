"""Second-round scenarios (numbered on from FAULTS.md's 35) of several kinds: two resumes of one
run at once (39), values in quotes a user wrote around `{{ }}` in a shell command (43), the cache
across project folders (51), and careless input (53): duplicate keys in params and secrets
files, an empty run id, numbers that are not finite, far more workers than steps, a `logging.py`
beside the pipeline, a pipeline including itself through a linked folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]

ONE_PARAM = """
version: 1
name: misc
params:
  x: 1
secrets: [TOKEN]
steps:
  - id: a
    uses: shell
    with: {cmd: "echo {{ params.x }}"}
"""


def _run_id(run_cli: RunCli) -> str:
    result = run_cli("runs", "--json")
    assert result.code == 0, result.output
    return str(json.loads(result.stdout)[0]["id"])


# -- 51: the cache across project folders ------------------------------------------------------


CACHED = """
version: 1
name: cached
steps:
  - id: where
    uses: shell
    cache: true
    with: {cmd: "cat name.txt"}
"""


@pytest.mark.fault(51)
def test_the_cache_never_serves_one_folders_result_to_another(
    run_cli: RunCli, tmp_path: Path
) -> None:
    state = tmp_path / "shared-state"
    outputs = {}
    for name in ("one", "two", "one"):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        (folder / "name.txt").write_text(name)
        (folder / "p.yaml").write_text(CACHED)
        json_path = tmp_path / f"{name}.json"
        result = run_cli(
            "run",
            "p.yaml",
            "--json",
            str(json_path),
            cwd=folder,
            env={"RUNNER_STATE_DIR": str(state)},
        )
        assert result.code == 0, result.output
        step = json.loads(json_path.read_text())["steps"]
        outputs.setdefault(name, []).append(step)
    one_first, one_again = outputs["one"]
    (two,) = outputs["two"]
    assert _state_and_output(two) == ("succeeded", "two"), two
    assert _state_and_output(one_again) == ("cached", "one"), one_again
    assert _state_and_output(one_first) == ("succeeded", "one"), one_first


def _state_and_output(steps: list[dict[str, object]]) -> tuple[object, object]:
    (step,) = steps
    return step["state"], step["output"]


# -- 53: careless input --------------------------------------------------------------------------


@pytest.mark.fault(53)
@pytest.mark.parametrize("option", ["--params-file", "--secrets-file"])
def test_a_duplicate_key_in_a_params_or_secrets_file_is_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, option: str
) -> None:
    path = write_pipeline(ONE_PARAM)
    values = tmp_path / "values.yaml"
    key = "x" if option == "--params-file" else "TOKEN"
    values.write_text(f"{key}: first-value\n{key}: second-value\n")
    commands = [("run", str(path))] + ([("validate", str(path))] if key == "x" else [])
    for command in commands:
        result = run_cli(*command, option, str(values), env={"TOKEN": "from-the-env"})
        assert result.code == 2, result.output
        assert no_traceback(result.stderr)
        assert f"{values}:2:1: error: {key}: duplicate key '{key}' (first defined on line 1)" in (
            result.stderr
        ), result.stderr
    assert "second-value" not in result.output


@pytest.mark.fault(53)
@pytest.mark.parametrize("given", ["", " "])
def test_an_empty_run_id_selects_no_run(
    run_cli: RunCli, write_pipeline: WritePipeline, given: str
) -> None:
    path = write_pipeline(ONE_PARAM)
    assert run_cli("run", str(path), env={"TOKEN": "from-the-env"}).code == 0
    for command in ("show", "logs", "resume"):
        result = run_cli(command, given)
        assert result.code == 2, (command, result.output)
        assert no_traceback(result.stderr)
        assert "a run id cannot be empty" in result.stderr, result.stderr


@pytest.mark.fault(53)
@pytest.mark.parametrize("value", [".inf", "-.Inf", ".nan", "[1, .inf]", "{a: .NaN}"])
def test_a_number_that_is_not_finite_is_refused_as_a_parameter(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, value: str
) -> None:
    path = write_pipeline(ONE_PARAM)
    report = tmp_path / "report.json"
    env = {"TOKEN": "from-the-env"}
    result = run_cli("run", str(path), "--param", f"x={value}", "--json", str(report), env=env)
    assert result.code == 2, result.output
    assert no_traceback(result.stderr)
    assert f"--param 'x={value}': x" in result.stderr, result.stderr
    assert "a number must be finite" in result.stderr, result.stderr
    assert not report.exists()
    values = tmp_path / "values.yaml"
    values.write_text(f"x: {value}\n")
    result = run_cli("run", str(path), "--params-file", str(values), "--json", str(report), env=env)
    assert result.code == 2, result.output
    assert f"{values}:1:" in result.stderr and ": a number must be finite" in result.stderr
    assert not report.exists()
    # Quoted, it is the text it looks like.
    result = run_cli("run", str(path), "--param", f"x='{value}'", "--json", str(report), env=env)
    assert result.code == 0, result.output
    assert json.loads(report.read_text())["steps"][0]["output"] == value


@pytest.mark.fault(53)
def test_workers_are_capped_at_the_steps_that_can_run_at_once(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(ONE_PARAM)
    result = run_cli(
        "run", str(path), "--workers", "400", "--progress", "plain", env={"TOKEN": "from-the-env"}
    )
    assert result.code == 0, result.output
    assert ": misc, 1 step, process executor, 1 worker\n" in result.stdout, result.stdout
    assert "400" not in result.output


@pytest.mark.fault(53)
@pytest.mark.parametrize("executor", ["process", "inline"])
def test_a_logging_py_beside_the_pipeline_leaves_ctx_log_working(
    run_cli: RunCli, write_pipeline: WritePipeline, executor: str
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: shadow
        steps:
          - id: a
            uses: python
            with: {call: "mod:f"}
        """,
        files={
            "mod.py": """
                import logging

                def f(ctx):
                    ctx.log.info("through ctx.log")
                    return logging.MINE
                """,
            "logging.py": "MINE = 'the folder logging.py'\n",
        },
    )
    report = path.with_name("report.json")
    result = run_cli("run", str(path), "--executor", executor, "--json", str(report))
    assert result.code == 0, result.output
    # The step's own `import logging` still finds its folder's module.
    assert json.loads(report.read_text())["steps"][0]["output"] == "the folder logging.py"
    logs = run_cli("logs", _run_id(run_cli), "a")
    assert "INFO through ctx.log" in logs.stdout, logs.output


@pytest.mark.fault(53)
def test_a_pipeline_including_itself_through_a_linked_folder_is_a_cycle(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    (tmp_path / "loop").symlink_to(".")
    path = write_pipeline(
        """
        version: 1
        name: self
        steps:
          - id: a
            uses: pipeline
            with: {file: loop/p.yaml}
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    assert no_traceback(result.stderr)
    assert result.stderr.startswith(f"{path}:6:"), result.stderr
    assert "pipeline includes itself" in result.stderr, result.stderr
    assert "loop/loop" not in result.stderr
