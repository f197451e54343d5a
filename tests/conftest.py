"""Shared test helpers: run the real `runner` command as a user would (a subprocess of the
installed console script), and write pipeline files into a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PIPELINES = REPO / "pipelines"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules holding a `slow` test run first (each module stays in one piece, so a
    module-scoped fixture starts once): with `-n 2` the longest tests start at once and the
    short ones fill the other worker, instead of one long test finishing alone at the end."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)


def runner_executable() -> str:
    found = Path(sys.executable).with_name("runner")
    if found.exists():
        return str(found)
    which = shutil.which("runner")
    if which is None:
        raise RuntimeError("the `runner` console script is not installed (run `make test`)")
    return which


def user_env() -> dict[str, str]:
    """This process's environment as a user's shell would pass it to `runner`: the test run's own
    runner settings left out (each test sets what it needs), except the shortcut switch, so
    `PIPELINE_RUNNER_NO_SHORTCUTS=1 pytest` (or the old `RUNNER_NO_SHORTCUTS=1`) runs every
    subprocess on the plain paths, passed on under the new name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "PIPELINE_RUNNER_"))}
    switch = os.environ.get("PIPELINE_RUNNER_NO_SHORTCUTS", os.environ.get("RUNNER_NO_SHORTCUTS"))
    if switch is not None:
        env["PIPELINE_RUNNER_NO_SHORTCUTS"] = switch
    return env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


RunCli = Callable[..., Result]


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """`run_cli("run", "p.yaml", cwd=..., env={...}, timeout=...)` -> Result."""

    def run(
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        stdin: str | None = None,
    ) -> Result:
        full_env = user_env()
        full_env.pop("GITHUB_ACTIONS", None)
        full_env.setdefault("PIPELINE_RUNNER_STATE_DIR", str(tmp_path / "state"))
        full_env.update(env or {})
        proc = subprocess.run(
            [runner_executable(), *args],
            cwd=cwd or tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin if stdin is not None else "",
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def write_pipeline(tmp_path: Path) -> Callable[..., Path]:
    """`write_pipeline(yaml_text, name="p.yaml", files={"mod.py": "..."})` -> path."""

    def write(text: str, name: str = "p.yaml", files: dict[str, str] | None = None) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        for fname, content in (files or {}).items():
            (tmp_path / fname).write_text(textwrap.dedent(content).lstrip())
        return path

    return write


def no_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" not in text


def summary_with_outputs(run_cli: RunCli, path: Path, *args: str) -> tuple[int, Any, str]:
    """`runner run PATH --progress plain --json FILE ARGS`: the exit code, the JSON summary and
    the output (no traceback in it, and the summary written)."""
    out = path.parent / "summary.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(out), *args)
    assert no_traceback(result.output) and out.exists(), result.output
    return result.code, json.loads(out.read_text()), result.output


def summary_of(run_cli: RunCli, path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """As `summary_with_outputs`, with the summary's steps by id."""
    code, summary, output = summary_with_outputs(run_cli, path, *args)
    return code, {s["id"]: s for s in summary["steps"]}, output


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` passes (never a fixed sleep)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def processes_with(marker: str, exclude: Sequence[int] = ()) -> list[int]:
    """Pids of live processes whose command line or environment holds `marker`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if marker.encode() in cmd:
            pids.append(int(entry))
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids
