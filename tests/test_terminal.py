"""What `runner run` shows on a terminal, read from a real one: tmux runs the command in a pane
of a fixed size and `capture-pane` reads the screen while the run goes on and after it ends.

The live view (a terminal that can redraw) shows the run id, an overall bar with elapsed time and
ETA, and stays on screen above the summary; plain lines when the terminal cannot redraw
(`TERM=dumb`, a CI job); no escape sequence at all with `NO_COLOR`; and `--progress none` still
tells failures and the run's last line.  Without tmux these tests skip and say so.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RunCli, runner_executable, user_env, wait_for

WritePipeline = Callable[..., Path]

# `wait` runs until the test creates the file `go`: the test decides when the run can end.
PIPELINE = """
version: 1
name: live
steps:
  - id: wait
    uses: shell
    with: {cmd: "while [ ! -f go ]; do sleep 0.05; done"}
  - id: quick
    uses: shell
    with: {cmd: "echo hi"}
  - id: broken
    uses: shell
    with: {cmd: "echo oops; exit 3"}
  - id: after
    needs: [wait]
    uses: shell
    with: {cmd: "echo done"}
"""
HEADER = re.compile(r"run (\d{8}T\d{6}-\w+): live")
BAR = re.compile(r"all steps +[━╸╺]+ +(\d+)/4 +\d+:\d\d:\d\d +ETA")  # ╸╺: a bar part-way
PLAIN_LINE = re.compile(r"^\d\d:\d\d:\d\d ▶ running +wait$", re.M)
ENDED = "runner exited with"


class Pane:
    """One tmux pane on a private tmux server (its own socket: no user's session is touched)."""

    def __init__(self, tmux: str, folder: Path) -> None:
        self.tmux = tmux
        self.socket = f"runner-test-{uuid.uuid4().hex[:8]}"
        self.folder = folder

    def cmd(self, *args: str) -> str:
        argv = [self.tmux, "-L", self.socket, "-f", os.devnull, *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def start(self, args: list[str], env: dict[str, str], width: int = 100) -> None:
        full = user_env()
        full.pop("GITHUB_ACTIONS", None)
        full.pop("CI", None)
        full.pop("NO_COLOR", None)
        full["PIPELINE_RUNNER_STATE_DIR"] = str(self.folder / "state")
        full.update(env)
        assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in full.items() if "\n" not in v)
        # After the run the pane keeps its screen: the shell waits on `cat` until the test ends.
        line = (
            f"cd {shlex.quote(str(self.folder))} && env -i {assigns} "
            f"{shlex.quote(runner_executable())} {shlex.join(args)}; "
            f'echo "{ENDED} $?"; exec cat'
        )
        self.cmd("new-session", "-d", "-x", str(width), "-y", "40", "sh", "-c", line)

    def screen(self, escapes: bool = False) -> str:
        return self.cmd("capture-pane", "-p", *(["-e"] if escapes else []))

    def wait_for_text(self, pattern: re.Pattern[str] | str, timeout: float = 60) -> str:
        seen = [""]

        def found() -> bool:
            seen[0] = self.screen()
            if isinstance(pattern, str):
                return pattern in seen[0]
            return pattern.search(seen[0]) is not None

        assert wait_for(found, timeout=timeout, interval=0.1), f"never shown:\n{seen[0]}"
        return seen[0]

    def close(self) -> None:
        subprocess.run(
            [self.tmux, "-L", self.socket, "kill-server"], capture_output=True, check=False
        )


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed: the terminal tests read the screen through it")
    found = Pane(tmux, tmp_path)
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def pipeline(write_pipeline: WritePipeline) -> Path:
    return write_pipeline(PIPELINE)


def test_the_live_view_shows_the_run_id_and_bars_and_stays_on_screen(
    pane: Pane, pipeline: Path, tmp_path: Path
) -> None:
    pane.start(["run", pipeline.name, "--workers", "3"], {})
    running = pane.wait_for_text(re.compile(r"▶ wait +\d+\.\ds"))
    header = HEADER.search(running)
    assert header is not None, running
    run_id = header.group(1)
    bar = BAR.search(running)
    assert bar is not None and int(bar.group(1)) < 4, running  # `wait` cannot end yet
    (tmp_path / "go").touch()
    final = pane.wait_for_text(ENDED)
    assert f"{ENDED} 1" in final
    # The last view is kept above the summary: the run id, the full bar, the failure.
    assert HEADER.search(final) is not None and f"run {run_id}: live" in final, final
    last_bar = BAR.search(final)
    assert last_bar is not None and last_bar.group(1) == "4", final
    assert "✗ broken: command exited with code 3" in final
    assert f"run {run_id} failed in" in final
    assert final.index("all steps") < final.index(f"run {run_id} failed in")


def test_no_color_means_no_escape_sequence(pane: Pane, pipeline: Path, tmp_path: Path) -> None:
    pane.start(["run", pipeline.name, "--workers", "3"], {"NO_COLOR": "1"})
    pane.wait_for_text(BAR)
    assert "\x1b" not in pane.screen(escapes=True)
    (tmp_path / "go").touch()
    pane.wait_for_text(ENDED)
    final = pane.screen(escapes=True)
    assert "✗ failed" in final and "\x1b" not in final, repr(final)


def test_colour_without_no_color(pane: Pane, pipeline: Path, tmp_path: Path) -> None:
    """The check above can fail: the same run without NO_COLOR has colours."""
    (tmp_path / "go").touch()
    pane.start(["run", pipeline.name], {})
    pane.wait_for_text(ENDED)
    assert "\x1b[" in pane.screen(escapes=True)


@pytest.mark.parametrize("env", [{"TERM": "dumb"}, {"CI": "true"}], ids=["dumb", "ci"])
def test_plain_lines_where_the_terminal_cannot_redraw(
    pane: Pane, pipeline: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    pane.start(["run", pipeline.name, "--workers", "3"], env)
    # Lines appear while the run goes on (`wait` cannot end before `go` exists).
    running = pane.wait_for_text(PLAIN_LINE)
    assert "all steps" not in running and ENDED not in running
    assert re.search(r"^\d\d:\d\d:\d\d run \d{8}T\d{6}-\w+: live, 4 steps", running, re.M)
    (tmp_path / "go").touch()
    final = pane.wait_for_text(ENDED)
    assert "all steps" not in final
    assert re.search(r"^\d\d:\d\d:\d\d ✓ succeeded +after", final, re.M), final


def test_progress_none_still_tells_failures_and_the_last_line(
    run_cli: RunCli, pipeline: Path, tmp_path: Path
) -> None:
    (tmp_path / "go").touch()
    result = run_cli("run", pipeline.name, "--progress", "none", "--json", "-")
    assert result.code == 1, result.output
    assert result.stdout.startswith("{"), result.stdout  # stdout holds the report alone
    assert re.search(r"✗ failed +broken \([\d.]+s\): command exited with code 3", result.stderr)
    assert re.search(r"^run \S+ failed in \d+\.\d\ds$", result.stderr, re.M), result.stderr
    assert "✓" not in result.stderr  # no progress: a step that succeeded is not told


def test_a_report_on_stdout_moves_the_progress_to_stderr(
    run_cli: RunCli, pipeline: Path, tmp_path: Path
) -> None:
    import json

    (tmp_path / "go").touch()
    result = run_cli("run", pipeline.name, "--progress", "plain", "--json", "-")
    assert json.loads(result.stdout)["status"] == "failed"
    assert "✓ succeeded" in result.stderr and "resume with: runner resume" in result.stderr
