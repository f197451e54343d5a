"""The command line's vocabulary, through the real `runner` command: the short flags users know
from make, pytest and their CI tools (`-p`, `-j`, `-n`, `-q`), one spelling for JSON (`--json`)
and `-` for stdout wherever a command writes a file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from conftest import PIPELINES, RunCli

from pipeline_runner.cli import main

WritePipeline = Callable[..., Path]

GREET = """
version: 1
name: greet
params:
  who: world
steps:
  - id: hello
    uses: shell
    with: {cmd: "echo hello {{ params.who }}"}
  - id: broken
    uses: shell
    with: {cmd: "exit 4"}
"""


def test_short_flags_for_param_workers_and_dry_run(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(GREET)
    long = run_cli("run", str(path), "--param", "who=Ada", "--workers", "2", "--dry-run")
    short = run_cli("run", str(path), "-p", "who=Ada", "-j", "2", "-n")
    assert short.code == long.code == 0, short.output
    assert "echo hello Ada" in short.stdout
    assert short.stdout == long.stdout
    assert not (path.parent / "state").exists()  # a dry run runs and records nothing


def test_short_workers_is_checked_as_the_long_one(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(GREET)
    result = run_cli("run", str(path), "-j", "0")
    assert result.code == 2 and "--workers must be at least 1" in result.stderr


def test_quiet_shows_failures_and_the_last_line_only(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(GREET)
    result = run_cli("run", str(path), "-q")
    assert result.code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert re.match(r"\d\d:\d\d:\d\d ✗ failed +broken", lines[0])
    assert re.match(r"run (\S+) failed in \d+\.\d\ds$", lines[1])
    run_id = lines[1].split()[1]
    assert lines[2] == f"resume with: runner resume {run_id}"
    again = run_cli("resume", run_id, "-q")
    assert again.code == 1 and again.stdout == "" and "resume with" in again.stderr


def test_param_short_flag_on_validate_and_graph(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(GREET.replace("who: world", "who: {type: string, enum: [a, b]}"))
    assert run_cli("validate", str(path), "-p", "who=a").code == 0
    assert run_cli("validate", str(path), "-p", "who=c").code == 2
    assert "hello a" in run_cli("graph", str(path), "-p", "who=a", "--json").stdout


def test_json_is_spelt_json_everywhere(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(GREET)
    valid = run_cli("validate", str(path), "--json")
    assert valid.code == 0
    assert valid.stdout == run_cli("validate", str(path), "--format", "json").stdout
    assert json.loads(valid.stdout)[0]["valid"] is True
    assert json.loads(run_cli("graph", str(path), "--json").stdout)
    assert isinstance(json.loads(run_cli("plugins", "--json").stdout), list)
    run = run_cli("run", str(path), "--json", "-", "-q")
    run_id = json.loads(run.stdout)["run_id"]
    for args in (("runs", "--json"), ("show", run_id, "--json"), ("logs", run_id, "--json")):
        assert json.loads(run_cli(*args).stdout), args


def test_a_dash_is_stdout_for_every_file_a_command_writes(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(GREET)
    graph = run_cli("graph", str(path), "--mermaid", "-o", "-")
    assert graph.code == 0 and graph.stdout.startswith("flowchart")
    dry = run_cli("run", str(path), "-n", "--json", "-")
    assert json.loads(dry.stdout)["name"] == "greet"  # the plan alone on stdout
    assert "plan of greet" in dry.stderr
    for option in ("--json", "--junit", "--events", "--trace", "--metrics"):
        result = run_cli("run", str(path), option, "-")
        assert result.stdout.strip(), option
        assert "✓ succeeded" in result.stderr and "✓ succeeded" not in result.stdout, option
    assert not (tmp_path / "-").exists()


def test_a_graph_file_is_written_whole(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "g.mmd"
    result = run_cli("graph", str(PIPELINES / "hello.yaml"), "--mermaid", "-o", str(out))
    assert result.code == 0, result.output
    assert out.read_text() == run_cli("graph", str(PIPELINES / "hello.yaml"), "--mermaid").stdout


def _commands(group: click.Group, prefix: str = "runner") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")


def test_every_option_has_help_and_no_summary_is_cut() -> None:
    """Click cuts a command's summary at 45 characters with `...`: each is short enough, and
    every option (of every command, as the other commands grow) says what it does."""
    missing = []
    for where, command in [("runner", main), *_commands(main)]:
        if command is not main:
            assert not command.get_short_help_str(limit=45).endswith("..."), where
        missing += [
            f"{where} {'/'.join(p.opts)}"
            for p in command.params
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
        ]
    assert missing == []


def test_the_help_screens_cut_nothing(run_cli: RunCli) -> None:
    for args in [(), *((name,) for name in main.commands)]:
        for columns in ("80", "60"):
            result = run_cli(*args, "--help", env={"COLUMNS": columns})
            assert result.code == 0, args
            cut = [
                line
                for line in result.stdout.splitlines()
                if line.rstrip().endswith("...") and not line.startswith("Usage:")
            ]
            assert cut == [], (args, columns)


def test_a_report_on_stdout_stays_whole_under_github_actions(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(GREET)
    result = run_cli("run", str(path), "--json", "-", env={"GITHUB_ACTIONS": "true"})
    assert json.loads(result.stdout)["status"] == "failed"
    assert "::error " in result.stderr
