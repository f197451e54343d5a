"""Storage that fails (FAULTS.md 18, 19, 21): the disk filling while a step writes its log, the run
store itself becoming unwritable mid-run, and several runs sharing one store at once.

A full disk is simulated with RLIMIT_FSIZE, set on the runner with `preexec_fn` and inherited by
its forkserver, workers and steps: a write past the limit fails with EFBIG (Python ignores
SIGXFSZ, and so do workers), for the step logs and for the SQLite files alike.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback, processes_with, wait_for
from faults_support import (  # noqa: F401
    Spawner,
    file_size_limit,
    printed_states,
    quick_check,
    rows,
    run_id_of,
    runner_text,
    show_json,
    spawn,
    stored_states,
)

WritePipeline = Callable[..., Path]

# -- 18: the disk fills while a step writes its log -------------------------------------------

FILLS = """
version: 1
name: fills
env:
  MARK: "{marker}"
steps:
  - id: big
    uses: shell
    priority: 10
    with:
      cmd: "head -c 10000000 /dev/zero | tr '\\\\0' x >&2; echo written"
  - id: next1
    uses: shell
    with: {{cmd: "touch NEXT1"}}
  - id: next2
    uses: shell
    with: {{cmd: "touch NEXT2"}}
  - id: after
    needs: big
    uses: shell
    with: {{cmd: "touch AFTER"}}
"""
LOG_LIMIT = 4 * 1024 * 1024


@pytest.mark.fault(18)
def test_a_full_disk_while_a_step_writes_its_log_stops_the_run_with_exit_3_and_resume_works(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    spawn: Spawner,  # noqa: F811
) -> None:
    marker = f"fills-{tmp_path.name}"
    path = write_pipeline(FILLS.format(marker=marker))
    run = spawn(
        "run", str(path), "--progress", "plain", "--workers", "1",
        preexec=file_size_limit(LOG_LIMIT),
    )  # fmt: skip
    stdout, stderr = run.proc.communicate(timeout=60)
    assert run.proc.returncode == 3, stdout + stderr
    assert no_traceback(runner_text(stdout + stderr)), stdout + stderr
    run_id = run_id_of(stdout)
    log = tmp_path / "state" / "runs" / run_id / "logs" / "big.log"
    # The attempt fails naming the file and the reason; no new step starts.
    assert f"cannot write the log {log}: [Errno 27] File too large" in stdout, stdout
    assert printed_states(stdout) == {
        "big": "failed",
        "next1": "cancelled",
        "next2": "cancelled",
        "after": "upstream_failed",
    }
    assert "running         next" not in stdout
    assert not any((tmp_path / n).exists() for n in ("NEXT1", "NEXT2", "AFTER"))
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)

    # The store stays readable and says what happened.
    db = tmp_path / "state" / "runs.db"
    assert quick_check(db) == "ok"
    shown = show_json(run_cli, run_id)
    assert shown["run"]["status"] == "failed" and shown["run"]["exit_code"] == 3
    errors = {s["step_id"]: (s["state"], s["error_kind"]) for s in shown["steps"]}
    assert errors["big"] == ("failed", "storage")

    # With space again, resume finishes the run.
    resumed = run_cli("resume", run_id, "--progress", "plain", "--workers", "1")
    assert resumed.code == 0, resumed.output
    assert all((tmp_path / n).exists() for n in ("NEXT1", "NEXT2", "AFTER"))
    assert set(stored_states(db, run_id).values()) == {"succeeded"}
    assert log.stat().st_size > 10_000_000  # the second attempt's log was written whole


# -- 19: the store cannot be written mid-run ------------------------------------------------------


def chain(n: int, marker: str) -> str:
    lines = ["version: 1", "name: chain", "env:", f'  MARK: "{marker}"', "steps:"]
    for i in range(n):
        # A command each: its process group is committed as soon as it starts (a later resume
        # may have to stop it), so the store commits every step, with group commit or without.
        lines += [f"  - id: s{i:03d}", "    uses: shell", '    with: {cmd: ["true"]}']
        if i:
            lines.append(f"    needs: s{i - 1:03d}")
    return "\n".join(lines) + "\n"


STORE_LIMIT = 256 * 1024
STEPS = 150


@pytest.mark.fault(19)
def test_a_store_that_cannot_be_written_mid_run_exits_3_naming_it_with_nothing_half_written(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    spawn: Spawner,  # noqa: F811
) -> None:
    """Each turn (or group of turns) commits a transaction; the write-ahead log grows with them
    until it reaches the file size limit, well before the steps are done."""
    marker = f"store-{tmp_path.name}"
    path = write_pipeline(chain(STEPS, marker))
    run = spawn(
        "run", str(path), "--progress", "plain", "--workers", "1",
        preexec=file_size_limit(STORE_LIMIT),
    )  # fmt: skip
    stdout, stderr = run.proc.communicate(timeout=60)
    assert run.proc.returncode == 3, stdout + stderr
    assert no_traceback(stdout + stderr), stdout + stderr
    db = tmp_path / "state" / "runs.db"
    assert f"run store {db} cannot be written: " in stderr, stderr
    assert f"file size limit, ulimit -f, of {STORE_LIMIT:,} bytes" in stderr, stderr
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)

    assert quick_check(db) == "ok"
    run_id = run_id_of(stdout)
    stored = stored_states(db, run_id)
    done = sorted(step for step, state in stored.items() if state == "succeeded")
    assert 0 < len(done) < STEPS, stored  # it failed mid-run
    assert done == [f"s{i:03d}" for i in range(len(done))]
    assert set(stored.values()) <= {"succeeded", "running", "pending"}
    # Every transition is whole: a step recorded as succeeded has its attempt and its event, and
    # nothing else has either.  What the terminal showed had been committed.
    attempts = {r[0] for r in rows(db, "SELECT step_id FROM attempts WHERE state = 'succeeded'")}
    events = {r[0] for r in rows(db, "SELECT step_id FROM events WHERE state = 'succeeded'")}
    assert attempts == events == set(done)
    shown = {step for step, state in printed_states(stdout).items() if state == "succeeded"}
    assert shown <= set(done)

    resumed = run_cli("resume", run_id, "--progress", "plain", "--workers", "1")
    assert resumed.code == 0, resumed.output
    assert set(stored_states(db, run_id).values()) == {"succeeded"}


# -- 21: several runs at once ----------------------------------------------------------------------

FAN = """
version: 1
name: {name}
steps:
  - id: fan
    for_each: "{{{{ range(150) | list }}}}"
    uses: noop
  - id: chain0
    needs: fan
    uses: shell
    with: {{cmd: "echo {name}"}}
  - id: chain1
    needs: chain0
    uses: shell
    with: {{cmd: "echo {{{{ steps.chain0.output }}}}-1"}}
outputs:
  last: "{{{{ steps.chain1.output }}}}"
"""
NAMES = ("alpha", "beta", "gamma", "delta")


@pytest.mark.slow
@pytest.mark.fault(21)
def test_four_runs_and_a_reader_at_once_share_a_store_and_all_are_recorded(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    spawn: Spawner,  # noqa: F811
) -> None:
    paths = [write_pipeline(FAN.format(name=n), name=f"{n}.yaml") for n in NAMES]
    procs = [spawn("run", str(p), "--progress", "plain", "--workers", "1") for p in paths]
    # Meanwhile a reader lists the runs again and again, as a dashboard would.
    read_errors: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            listed = run_cli("runs", "--json")
            if listed.code != 0:
                read_errors.append(listed.output)

    reader = threading.Thread(target=read, daemon=True)
    assert wait_for((tmp_path / "state" / "runs.db").exists, timeout=60)
    reader.start()
    try:
        results = [p.proc.communicate(timeout=120) for p in procs]
    finally:
        stop.set()
        reader.join(timeout=60)
    for proc, (stdout, stderr) in zip(procs, results, strict=True):
        assert proc.proc.returncode == 0, stdout + stderr
        assert "locked" not in (stdout + stderr).lower(), stdout + stderr
        assert no_traceback(stdout + stderr)
    assert not read_errors, read_errors

    listed = json.loads(run_cli("runs", "--json").stdout)
    assert sorted(r["pipeline"] for r in listed) == sorted(NAMES)
    for name, (stdout, _) in zip(NAMES, results, strict=True):
        data = show_json(run_cli, run_id_of(stdout))
        assert data["run"]["status"] == "succeeded"
        assert data["run"]["outputs"] == {"last": f"{name}-1"}
        assert len(data["steps"]) == 152
        assert {s["state"] for s in data["steps"]} == {"succeeded"}
