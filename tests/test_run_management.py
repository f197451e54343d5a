"""Run management through the `runner` command: `runner runs` filters, `runner rm`, `runner
prune`, and the cap on each run's events.  Real runs, real runner processes (one left running,
one killed), and the real SQLite store read back to see what was deleted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli, no_traceback, runner_executable, user_env, wait_for

from pipeline_runner import defaults

WritePipeline = Callable[..., Path]
DAY = 86400.0

ALPHA = """
version: 1
name: alpha
steps:
  - id: a
    uses: shell
    cache: true
    with: {cmd: "echo from a"}
  - id: b
    needs: a
    uses: shell
    with: {cmd: "echo from b {{ steps.a.output }}"}
"""

BETA = """
version: 1
name: beta
steps:
  - id: broken
    uses: shell
    with: {cmd: "echo failing; exit 3"}
"""

WAITER = """
version: 1
name: waiter
steps:
  - id: wait
    uses: shell
    with: {cmd: "echo waiting; while [ ! -f release ]; do sleep 0.05; done"}
"""


def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def query(tmp_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(state(tmp_path) / "runs.db")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def age(tmp_path: Path, run_id: str, days: float) -> None:
    """Make a recorded run `days` older (its start and end), as if it ran back then."""
    db = sqlite3.connect(state(tmp_path) / "runs.db")
    try:
        with db:
            db.execute(
                "UPDATE runs SET started = started - ?, finished = finished - ? WHERE id = ?",
                (days * DAY, days * DAY, run_id),
            )
    finally:
        db.close()


def run_id_of(run_cli: RunCli, path: Path, code: int = 0) -> str:
    result = run_cli("run", str(path), "--progress", "none")
    assert result.code == code, result.output
    listed = json.loads(run_cli("runs", "--json", "--limit", "1").stdout)
    return str(listed[0]["id"])


def ids(run_cli: RunCli, *args: str) -> list[str]:
    result = run_cli("runs", "--json", *args)
    assert result.code == 0, result.output
    return [row["id"] for row in json.loads(result.stdout)]


def rows_of(tmp_path: Path, run_id: str) -> dict[str, int]:
    """How many rows each table holds for a run."""
    found = {"runs": query(tmp_path, "SELECT COUNT(*) FROM runs WHERE id = ?", run_id)[0][0]}
    for table in ("steps", "attempts", "events"):
        sql = f"SELECT COUNT(*) FROM {table} WHERE run_id = ?"
        found[table] = query(tmp_path, sql, run_id)[0][0]
    return found


@pytest.fixture
def popen() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def start_waiter(tmp_path: Path, path: Path) -> subprocess.Popen[str]:
    env = {**user_env(), "PIPELINE_RUNNER_STATE_DIR": str(state(tmp_path))}
    return subprocess.Popen(
        [runner_executable(), "run", str(path), "--progress", "plain"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# -- runner runs ------------------------------------------------------------------------------


def test_an_empty_store_lists_no_runs_and_creates_nothing(run_cli: RunCli, tmp_path: Path) -> None:
    for args in ((), ("--status", "failed"), ("--pipeline", "x", "--since", "7d")):
        listed = run_cli("runs", "--json", *args)
        assert (listed.code, listed.stdout.strip(), listed.stderr) == (0, "[]", "")
    text = run_cli("runs")
    assert (text.code, text.stdout) == (0, "no runs yet\n")
    pruned = run_cli("prune", "--older-than", "30d")
    assert pruned.code == 0 and "nothing to prune" in pruned.stdout, pruned.output
    assert not state(tmp_path).exists()


def test_runs_are_filtered_by_status_pipeline_and_start(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    alpha = write_pipeline(ALPHA, name="alpha.yaml")
    beta = write_pipeline(BETA, name="beta.yaml")
    old = run_id_of(run_cli, alpha)
    failed = run_id_of(run_cli, beta, code=1)
    new = run_id_of(run_cli, alpha)
    age(tmp_path, old, 3 / 24)  # three hours ago

    assert ids(run_cli) == [new, failed, old]
    assert ids(run_cli, "--status", "failed") == [failed]
    assert ids(run_cli, "--status", "succeeded") == [new, old]
    assert ids(run_cli, "--pipeline", "alpha") == [new, old]
    assert ids(run_cli, "--pipeline", "al*", "--since", "2h") == [new]
    assert ids(run_cli, "--since", "2h") == [new, failed]
    assert ids(run_cli, "--since", "1d") == [new, failed, old]
    assert ids(run_cli, "--since", "2000-01-01") == [new, failed, old]
    assert ids(run_cli, "--since", "2999-01-01T00:00:00Z") == []
    assert ids(run_cli, "--status", "succeeded", "--limit", "1") == [new]
    assert ids(run_cli, "--status", "running") == []

    text = run_cli("runs", "--status", "failed")
    assert text.code == 0 and failed in text.stdout and new not in text.stdout, text.output
    assert "beta" in text.stdout and "1 failed" in text.stdout
    nothing = run_cli("runs", "--pipeline", "gamma")
    assert (nothing.code, nothing.stdout) == (0, "no runs match\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--status", "finished"), "'finished' is not one of"),
        (("--since", "yesterday"), "--since 'yesterday': expected a duration before now"),
        (("--since", "2026-13-45"), "or an ISO date"),
        (("--limit", "0"), "--limit"),
    ],
)
def test_a_bad_filter_is_a_usage_error(
    run_cli: RunCli, args: tuple[str, ...], message: str
) -> None:
    result = run_cli("runs", *args)
    assert result.code == 2, result.output
    assert message in result.stderr and no_traceback(result.output), result.stderr


# -- runner rm ----------------------------------------------------------------------------------


def test_rm_deletes_runs_their_logs_and_the_cache_entries_no_run_uses(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    alpha = write_pipeline(ALPHA, name="alpha.yaml")
    first = run_id_of(run_cli, alpha)  # writes the cache entry of `a`
    second = run_id_of(run_cli, alpha)  # takes `a` from it
    shown = json.loads(run_cli("show", second, "--json").stdout)
    assert {s["step_id"]: s["state"] for s in shown["steps"]}["a"] == "cached"
    logs = state(tmp_path) / "runs" / first / "logs"
    assert (logs / "a.log").exists() and (logs / "b.log").exists()
    entries = query(tmp_path, "SELECT run_id FROM cache")
    assert entries == [(first,)]

    removed = run_cli("rm", first[:-2])  # a unique prefix names a run
    assert removed.code == 0, removed.output
    assert removed.stdout.splitlines() == [
        f"deleted {first}  succeeded  alpha",
        "deleted 1 run and 0 cache entries",
    ]
    assert rows_of(tmp_path, first) == {"runs": 0, "steps": 0, "attempts": 0, "events": 0}
    assert not (state(tmp_path) / "runs" / first).exists()
    # the second run read its result from the entry: the entry stays while that run does
    assert query(tmp_path, "SELECT run_id FROM cache") == [(first,)]
    assert ids(run_cli) == [second]
    gone = run_cli("show", first)
    assert gone.code == 2 and "no run with id" in gone.stderr, gone.output

    removed = run_cli("rm", second)
    assert removed.code == 0, removed.output
    assert removed.stdout.splitlines()[-1] == "deleted 1 run and 1 cache entry"
    assert query(tmp_path, "SELECT COUNT(*) FROM cache") == [(0,)]
    assert not (state(tmp_path) / "runs" / second).exists()
    assert run_cli("runs", "--json").stdout.strip() == "[]"
    # the next run finds no entry: `a` runs again
    third = run_id_of(run_cli, alpha)
    shown = json.loads(run_cli("show", third, "--json").stdout)
    assert {s["step_id"]: s["state"] for s in shown["steps"]}["a"] == "succeeded"


def test_rm_of_an_unknown_run_deletes_nothing(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    known = run_id_of(run_cli, write_pipeline(BETA), code=1)
    result = run_cli("rm", known, "19990101T000000-abcdef")
    assert result.code == 2 and "no run with id '19990101T000000-abcdef'" in result.stderr
    assert ids(run_cli) == [known] and (state(tmp_path) / "runs" / known).exists()


def test_rm_and_prune_leave_a_running_run_alone(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    popen: list[subprocess.Popen[str]],
) -> None:
    done = run_id_of(run_cli, write_pipeline(BETA, name="beta.yaml"), code=1)
    proc = start_waiter(tmp_path, write_pipeline(WAITER))
    popen.append(proc)
    assert wait_for(lambda: len(ids(run_cli, "--status", "running")) == 1, timeout=60)
    running = ids(run_cli, "--status", "running")[0]

    refused = run_cli("rm", done, running)
    assert refused.code == 2, refused.output
    assert f"run {running} is running" in refused.stderr
    assert "nothing was deleted" in refused.stderr and no_traceback(refused.output)
    assert ids(run_cli) == [running, done]
    assert (state(tmp_path) / "runs" / done).exists()

    pruned = run_cli("prune", "--older-than", "0s")
    assert pruned.code == 0, pruned.output
    assert pruned.stdout.splitlines()[-1] == "deleted 1 run and 0 cache entries"
    assert ids(run_cli) == [running]

    # Killed, its runner cannot record an end: the run is `stopped`, and may go.
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    (tmp_path / "release").touch()  # a step left behind ends
    assert ids(run_cli, "--status", "running") == []
    assert ids(run_cli, "--status", "stopped") == [running]
    removed = run_cli("rm", running)
    assert removed.code == 0, removed.output
    assert f"deleted {running}  stopped" in removed.stdout
    assert ids(run_cli) == [] and not (state(tmp_path) / "runs" / running).exists()


# -- runner prune -------------------------------------------------------------------------------


def test_prune_deletes_runs_that_ended_long_ago(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    alpha = write_pipeline(ALPHA, name="alpha.yaml")
    beta = write_pipeline(BETA, name="beta.yaml")
    old_ok = run_id_of(run_cli, alpha)
    old_failed = run_id_of(run_cli, beta, code=1)
    recent = run_id_of(run_cli, alpha)
    age(tmp_path, old_ok, 40)
    age(tmp_path, old_failed, 31)

    dry = run_cli("prune", "--older-than", "30d", "--dry-run")
    assert dry.code == 0, dry.output
    assert dry.stdout.splitlines() == [
        f"would delete {old_ok}  succeeded  alpha",
        f"would delete {old_failed}  failed     beta",
        "would delete 2 runs",
    ]
    assert ids(run_cli) == [recent, old_failed, old_ok]

    failed_only = run_cli("prune", "--older-than", "30d", "--status", "failed")
    assert failed_only.code == 0, failed_only.output
    assert failed_only.stdout.splitlines()[0] == f"deleted {old_failed}  failed     beta"
    assert ids(run_cli) == [recent, old_ok]
    assert not (state(tmp_path) / "runs" / old_failed).exists()

    nothing = run_cli("prune", "--older-than", "6w")
    assert nothing.stdout == "deleted 0 runs and 0 cache entries\n", nothing.output

    rest = run_cli("prune", "--older-than", "4w")
    assert rest.code == 0, rest.output
    # the recent run took `a` from the old run's entry, so the entry stays
    assert rest.stdout.splitlines() == [
        f"deleted {old_ok}  succeeded  alpha",
        "deleted 1 run and 0 cache entries",
    ]
    assert ids(run_cli) == [recent]
    assert rows_of(tmp_path, old_ok) == {"runs": 0, "steps": 0, "attempts": 0, "events": 0}
    assert query(tmp_path, "SELECT COUNT(*) FROM cache") == [(1,)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--older-than", "30 days"), "--older-than '30 days': expected a duration"),
        (("--older-than", "30d", "--status", "running"), "'running' is not one of"),
        ((), "Missing option '--older-than'"),
    ],
)
def test_prune_refuses_a_bad_age_or_status(
    run_cli: RunCli, args: tuple[str, ...], message: str
) -> None:
    result = run_cli("prune", *args)
    assert result.code == 2 and message in result.stderr, result.output


# -- the events cap -----------------------------------------------------------------------------

MANY = """
version: 1
name: many
steps:
  - id: item
    for_each: "{{ range(%d) | list }}"
    uses: noop
"""


@pytest.mark.slow
def test_a_run_keeps_its_newest_events_up_to_the_cap(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    cap = defaults.EVENTS_PER_RUN
    steps = cap // 2 + 100  # each step records `running` and `succeeded`: over the cap
    path = write_pipeline(MANY % steps)
    started = time.monotonic()
    result = run_cli("run", str(path), "--progress", "none", "--executor", "inline", timeout=300)
    assert result.code == 0, result.output
    print(f"  {steps} steps in {time.monotonic() - started:.1f}s")
    run_id = ids(run_cli)[0]
    step_events = query(
        tmp_path,
        "SELECT step_id, state FROM events WHERE run_id = ? AND step_id IS NOT NULL ORDER BY seq",
        run_id,
    )
    assert len(step_events) == cap
    # the oldest went: the first steps' starts; the newest stayed: the last step's end
    assert ("item.0", "running") not in step_events
    assert step_events[-1][1] == "succeeded"
    assert (f"item.{steps - 1}", "succeeded") in step_events
    # the run's own events are kept, and every step's row is whole
    run_events = query(
        tmp_path, "SELECT state FROM events WHERE run_id = ? AND step_id IS NULL", run_id
    )
    assert [e[0] for e in run_events] == ["started", "succeeded"]
    counts = query(
        tmp_path, "SELECT COUNT(*) FROM steps WHERE run_id = ? AND state = 'succeeded'", run_id
    )
    assert counts[0][0] >= steps
    shown = run_cli("show", run_id, "--json")
    assert shown.code == 0 and len(json.loads(shown.stdout)["steps"]) == steps
    assert os.path.getsize(state(tmp_path) / "runs.db") > 0
