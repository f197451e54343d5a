"""The command line's shared pieces: the options `run` and `resume` both take are defined once
(same names, types, defaults and help), and their defaults are those of `defaults.py`."""

from __future__ import annotations

from typing import Any

import click

from pipeline_runner import defaults
from pipeline_runner.cli import main

SHARED = (
    "workers",
    "executor",
    "dask_scheduler",
    "progress",
    "quiet",
    "junit",
    "json_path",
    "events",
    "trace",
    "grace",
    "state_dir",
)


def _options(name: str) -> dict[str, Any]:
    command = main.commands[name]
    assert isinstance(command, click.Command)
    with click.Context(command) as ctx:
        return {
            str(p.name): p.to_info_dict() | {"help": p.get_help_record(ctx)}
            for p in command.params
            if isinstance(p, click.Option)
        }


def test_run_and_resume_take_the_shared_options_alike() -> None:
    run, resume = _options("run"), _options("resume")
    for name in SHARED:
        assert run[name] == resume[name], name
        assert run[name]["help"] is not None and run[name]["help"][1], f"--{name} has no help"


def test_the_shared_defaults_come_from_one_place() -> None:
    run = _options("run")
    assert run["executor"]["default"] == defaults.EXECUTOR
    assert run["progress"]["default"] == defaults.PROGRESS
    assert run["grace"]["default"] == defaults.GRACE
    assert run["state_dir"]["default"] == defaults.STATE_DIR
    assert run["state_dir"]["envvar"] == [defaults.STATE_DIR_ENV, defaults.STATE_DIR_ENV_OLD]
    assert run["max_file_size"]["default"] == defaults.MAX_FILE_SIZE
    assert _options("runs")["limit"]["default"] == defaults.RUNS_LIMIT
