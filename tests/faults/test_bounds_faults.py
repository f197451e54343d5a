"""Second-round scenarios (numbered on from FAULTS.md's 35): values at and past the bounds of
what the runner can wait for.  A duration the operating system cannot wait for, a timeout of 0
and a grace that is not a number are refused before anything runs; the longest duration allowed
is waited for without an internal error."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback, runner_executable, user_env, wait_for

WritePipeline = Callable[..., Path]

STEP = """
version: 1
name: bounds
steps:
  - id: a
    uses: shell
    {spec}
    with: {{cmd: "exit 1"}}
"""


@pytest.mark.fault(46)
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("timeout: 600h", "steps[0].timeout: invalid duration '600h': over the limit of 24 days"),
        ("timeout: 0", "steps[0].timeout: invalid duration 0: must be more than 0"),
        ("timeout: 0s", "steps[0].timeout: invalid duration '0s': must be more than 0"),
        (
            "retries: {max: 1, delay: 1000h}",
            "steps[0].retries.delay: invalid duration '1000h': over the limit of 24 days",
        ),
        (
            "retries: {max: 1, max_delay: 99999999}",
            "steps[0].retries.max_delay: invalid duration 99999999: over the limit of 24 days",
        ),
    ],
)
def test_durations_past_the_bounds_are_located_errors(
    run_cli: RunCli, write_pipeline: WritePipeline, spec: str, message: str
) -> None:
    path = write_pipeline(STEP.format(spec=spec))
    for command in ("validate", "run"):
        result = run_cli(command, str(path))
        assert result.code == 2, result.output
        assert no_traceback(result.stderr)
        assert f"{path}:6:" in result.stderr and message in result.stderr, result.stderr


@pytest.mark.fault(46)
@pytest.mark.parametrize("grace", ["nan", "inf", "-5", "1e9"])
def test_a_grace_that_is_not_a_bounded_number_is_refused(
    run_cli: RunCli, write_pipeline: WritePipeline, grace: str
) -> None:
    path = write_pipeline(STEP.format(spec="timeout: 1s"))
    for argv in (("run", str(path)), ("resume", "no-such-run")):
        result = run_cli(*argv, f"--grace={grace}")
        assert result.code == 2, result.output
        assert no_traceback(result.stderr)
        assert "Invalid value for '--grace'" in result.stderr, result.stderr


@pytest.mark.fault(46)
def test_the_longest_timeout_and_retry_delay_are_waited_for(
    write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """A retry 24 days away (and jitter past that) used to overflow the loop's wait: the run now
    waits, and Ctrl-C ends it as usual."""
    path = write_pipeline(
        STEP.format(spec="timeout: 576h\n    retries: {max: 1, delay: 576h, max_delay: 576h}")
    )
    out = tmp_path / "out.txt"
    env = user_env()
    env["PIPELINE_RUNNER_STATE_DIR"] = str(tmp_path / "state")
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [runner_executable(), "run", str(path), "--progress", "plain", "--grace", "3600"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert wait_for(lambda: b"retrying" in out.read_bytes(), timeout=60), out.read_text()
            assert wait_for(lambda: proc.poll() is not None, timeout=1) is False, out.read_text()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130, out.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = out.read_text()
    assert "internal error" not in text and no_traceback(text), text
    assert "cancelled" in text
