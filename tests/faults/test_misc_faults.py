"""Second-round scenarios (numbered on from FAULTS.md's 35) of several kinds: two resumes of one
run at once (39), values in quotes a user wrote around `{{ }}` in a shell command (43), the cache
across project folders (51), and careless input (53): duplicate keys in params and secrets
files, an empty run id, numbers that are not finite, far more workers than steps, a `logging.py`
beside the pipeline, a pipeline including itself through a linked folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback, runner_executable, wait_for

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


# -- 39: one runner per run at a time ------------------------------------------------------------

# Fails until the file `ok` exists; then notes each run of it and lasts until `stop` exists (or
# 60 s), so two runners of it would overlap.
RESUMABLE = """
version: 1
name: once
steps:
  - id: slow
    uses: shell
    with:
      cmd: |
        [ -e ok ] || exit 1
        echo ran >> count
        i=0; while [ ! -e stop ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
"""

BUSY = re.compile(
    r"runner: error: run (\S+) is being (resumed|run) by another runner "
    r"\(pid (\d+), started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)"
)


def _runner(args: list[str], folder: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.pop("GITHUB_ACTIONS", None)
    env["PIPELINE_RUNNER_STATE_DIR"] = str(folder / "state")
    with out.open("wb") as sink:
        return subprocess.Popen(
            [runner_executable(), *args, "--progress", "plain"],
            cwd=folder,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _failed_run(run_cli: RunCli, folder: Path) -> str:
    folder.mkdir(exist_ok=True)
    (folder / "p.yaml").write_text(RESUMABLE)
    env = {"PIPELINE_RUNNER_STATE_DIR": str(folder / "state")}
    assert run_cli("run", "p.yaml", cwd=folder, env=env).code == 1
    (folder / "ok").touch()
    runs = run_cli("runs", "--json", env=env)
    return str(json.loads(runs.stdout)[0]["id"])


def _finish(*procs: subprocess.Popen[bytes]) -> list[int]:
    try:
        return [proc.wait(timeout=90) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.fault(39)
def test_a_second_resume_is_refused_naming_the_first_and_a_killed_one_blocks_nothing(
    run_cli: RunCli, tmp_path: Path
) -> None:
    run_id = _failed_run(run_cli, tmp_path)
    first = _runner(["resume", run_id], tmp_path, tmp_path / "first.out")
    try:
        assert wait_for(lambda: (tmp_path / "count").exists(), timeout=60)
        env = {"PIPELINE_RUNNER_STATE_DIR": str(tmp_path / "state")}
        second = run_cli("resume", run_id, cwd=tmp_path, env=env)
        assert second.code == 2, second.output
        assert no_traceback(second.stderr)
        busy = BUSY.search(second.stderr)
        assert busy is not None, second.stderr
        assert busy.groups() == (run_id, "resumed", str(first.pid)), second.stderr
        # A resume killed with SIGKILL leaves its lock to the kernel, which lets it go.
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        _finish(first)
    (tmp_path / "stop").touch()
    third = run_cli("resume", run_id, cwd=tmp_path, env=env)
    assert third.code == 0, third.output


@pytest.mark.fault(39)
def test_two_resumes_started_at_once_run_the_steps_once(run_cli: RunCli, tmp_path: Path) -> None:
    for round_ in range(3):
        folder = tmp_path / f"round{round_}"
        run_id = _failed_run(run_cli, folder)
        outs = [folder / "a.out", folder / "b.out"]
        procs = [_runner(["resume", run_id], folder, out) for out in outs]
        assert wait_for(lambda: (folder / "count").exists(), timeout=60)  # noqa: B023
        assert wait_for(lambda: any(p.poll() is not None for p in procs), timeout=60)  # noqa: B023
        (folder / "stop").touch()
        codes = _finish(*procs)
        assert sorted(codes) == [0, 2], [o.read_text() for o in outs]
        refused = outs[codes.index(2)].read_text()
        busy = BUSY.search(refused)
        assert busy is not None and busy.group(3) == str(procs[codes.index(0)].pid), refused
        assert (folder / "count").read_text() == "ran\n"


@pytest.mark.fault(39)
def test_resuming_a_run_that_is_still_running_is_refused_naming_it(
    run_cli: RunCli, tmp_path: Path
) -> None:
    (tmp_path / "ok").touch()
    (tmp_path / "p.yaml").write_text(RESUMABLE)
    running = _runner(["run", "p.yaml"], tmp_path, tmp_path / "run.out")
    try:
        assert wait_for(lambda: (tmp_path / "count").exists(), timeout=60)
        env = {"PIPELINE_RUNNER_STATE_DIR": str(tmp_path / "state")}
        run_id = str(json.loads(run_cli("runs", "--json", env=env).stdout)[0]["id"])
        result = run_cli("resume", run_id, cwd=tmp_path, env=env)
        assert result.code == 2, result.output
        busy = BUSY.search(result.stderr)
        assert busy is not None, result.stderr
        assert busy.groups() == (run_id, "run", str(running.pid)), result.stderr
    finally:
        (tmp_path / "stop").touch()
        assert _finish(running) == [0]
    assert (tmp_path / "count").read_text() == "ran\n"


# -- 43: values inside the user's own quotes in a shell command ---------------------------------

QUOTED = r"""
version: 1
name: quoted
params:
  p: plain
steps:
  - id: up
    uses: shell
    with:
      cmd: printf '%s' "$V"
      env: {V: "{{ params.p }}"}
  - id: single
    uses: shell
    with:
      cmd: |-
        printf '%s' '{{ params.p }}'
  - id: double
    uses: shell
    with:
      cmd: |-
        printf "%s" "x={{ params.p }}"
  - id: mixed
    uses: shell
    with:
      cmd: |-
        printf '%s|' '<{{ params.p }}>' "<{{ params.p }}>" {{ params.p }}
  - id: single_up
    uses: shell
    needs: [up]
    with:
      cmd: |-
        printf '%s' 'up={{ steps.up.output }}'
  - id: double_up
    uses: shell
    needs: [up]
    with:
      cmd: |-
        printf "%s" "$(printf %s '{{ steps.up.output }}')"
  - id: comment
    uses: shell
    needs: [up]
    with:
      cmd: |-
        printf '%s' ok # {{ steps.up.output }}
"""

HOSTILE = [
    "it's",
    'say "hi"',
    "$(touch pwned)",
    "`touch pwned`",
    "'; touch pwned; '",
    '"; touch pwned; "',
    "a\\'b",
    "x\\",
    "line one\n$(touch pwned)\nline 3",
    "\\$(touch pwned)",
    "'\\''",
    "a b  c",
]


@pytest.mark.fault(43)
@pytest.mark.parametrize("value", HOSTILE)
def test_a_value_inside_the_users_quotes_stays_text(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, value: str
) -> None:
    path = write_pipeline(QUOTED)
    values = tmp_path / "values.json"
    values.write_text(json.dumps({"p": value}))
    report = tmp_path / "report.json"
    result = run_cli("run", str(path), "--params-file", str(values), "--json", str(report))
    assert result.code == 0, result.output
    assert not (tmp_path / "pwned").exists(), "a value ran as shell code"
    outputs = {step["id"]: step["output"] for step in json.loads(report.read_text())["steps"]}
    assert outputs == {
        "up": value,
        "single": value,
        "double": f"x={value}",
        "mixed": f"<{value}>|<{value}>|{value}|",
        "single_up": f"up={value}",
        "double_up": value.rstrip("\n"),
        "comment": "ok",
    }


@pytest.mark.fault(43)
def test_a_secret_inside_the_users_quotes_is_expanded_once_as_text(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        r"""
        version: 1
        name: secret
        secrets: [TOKEN]
        steps:
          - id: a
            uses: shell
            with:
              cmd: |-
                printf '%s|' "d={{ secrets.TOKEN }}" 's={{ secrets.TOKEN }}' \
                  {{ secrets.TOKEN }} > out.txt
        """
    )
    token = "$(touch pwned) 'it''s' \"x\""
    result = run_cli("run", str(path), env={"TOKEN": token})
    assert result.code == 0, result.output
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / "out.txt").read_text() == f"d={token}|s={token}|{token}|"


@pytest.mark.fault(43)
@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        ("cat <<EOF\n{{ params.p }}\nEOF", "a value inside a here-document cannot be quoted"),
        ("echo `echo {{ params.p }}`", "a value inside backticks cannot be quoted"),
        ("echo ${X:-{{ params.p }}}", "a value inside ${...} cannot be quoted"),
    ],
)
def test_a_value_where_no_quoting_is_exact_is_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline, cmd: str, message: str
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: refused
        params:
          p: plain
        steps:
          - id: a
            uses: shell
            with:
              cmd: CMD
        """.replace("CMD", json.dumps(cmd))
    )
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    assert no_traceback(result.stderr)
    assert f"{path}:9:" in result.stderr, result.stderr
    assert f"steps[0].with.cmd: in a shell command: {message}" in result.stderr, result.stderr


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
            env={"PIPELINE_RUNNER_STATE_DIR": str(state)},
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
    assert "400 workers" not in result.output and "warning" not in result.output.lower()


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
