"""The run store, end to end: a runner killed with SIGKILL and resumed, runs sharing a state
folder, resuming after a fix, the history commands, and stores that cannot be used.

Everything goes through the real `runner` command and a real SQLite file; nothing waits a fixed
time (what must happen while a run goes on is polled with generous deadlines).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli, no_traceback, processes_with, runner_executable, wait_for
from test_engine import marker, popen, runner_env, runner_text, start_runner  # noqa: F401

WritePipeline = Callable[..., Path]
RUN_ID = re.compile(r"\brun (\d{8}T\d{6}-[0-9a-f]{6})\b")


def run_id_of(output: str) -> str:
    found = RUN_ID.search(output)
    assert found, f"no run id in:\n{output}"
    return found.group(1)


def show(run_cli: RunCli, run_id: str, **kw: Any) -> dict[str, Any]:
    result = run_cli("show", run_id, "--json", **kw)
    assert result.code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def step_states(data: dict[str, Any]) -> dict[str, str]:
    return {s["step_id"]: s["state"] for s in data["steps"]}


def run(run_cli: RunCli, path: Path, *args: str, **kw: Any) -> Any:
    result = run_cli("run", str(path), "--progress", "plain", "--workers", "2", *args, **kw)
    assert no_traceback(runner_text(result.output)), result.output
    return result


# -- SIGKILL mid-run, then resume -------------------------------------------------------------


def committed(db: Path) -> list[str]:
    """The steps the store holds as succeeded (none while it does not exist yet)."""
    if not db.exists():
        return []
    read = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = read.execute("SELECT step_id FROM steps WHERE state = 'succeeded'").fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return []
    finally:
        read.close()
    return sorted(row[0] for row in rows)


def chain(n: int, mark: str) -> str:
    """`n` steps in a line; each appends its index to out.txt, sleeps a little, prints it."""
    lines = ["version: 1", "name: chain", "env:", f"  MARK: {mark}", "steps:"]
    for i in range(n):
        lines += [
            f"  - id: s{i:02d}",
            "    uses: shell",
            f"    with: {{cmd: 'echo {i} >> out.txt; sleep 0.1; echo {i}'}}",
        ]
        if i:
            lines.append(f"    needs: s{i - 1:02d}")
    lines.append("outputs:")
    lines += [f"  s{i:02d}: '{{{{ steps.s{i:02d}.output }}}}'" for i in range(n)]
    return "\n".join(lines) + "\n"


def indexes(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.fault(14)
def test_sigkill_mid_run_loses_only_running_attempts_and_resume_finishes(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    marker: str,  # noqa: F811
    popen: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    path = write_pipeline(chain(20, marker))
    out = tmp_path / "out.txt"
    db = tmp_path / "state" / "runs.db"
    proc = start_runner(tmp_path, path, "--workers", "2", env={"MARK": marker})
    popen.append(proc)
    # Killed once four steps are committed as succeeded (read from the store, as `runner show`
    # reads a live run): a step's end is committed with a later change, at most 50 ms after it
    # (group commit), so what was echoed before the kill need not be recorded yet.
    assert wait_for(lambda: len(committed(db)) >= 4, timeout=60), indexes(out)
    # Only the runner, as the OOM killer would: its workers and steps must notice on their own.
    os.kill(proc.pid, signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)
    seen_at_kill = indexes(out)
    committed_at_kill = committed(db)

    check = sqlite3.connect(db)
    try:
        assert check.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        check.close()

    run_id = run_id_of(stdout)
    # The run is still `running` in the store, but its runner is gone: following it ends.
    followed = run_cli("logs", run_id, "--follow", timeout=30)
    assert followed.code == 0, followed.output
    assert "s00: 0" in followed.stdout
    states = step_states(show(run_cli, run_id))
    done = [sid for sid, state in states.items() if state == "succeeded"]
    assert set(committed_at_kill) <= set(done), (committed_at_kill, states)  # all kept
    assert done == [f"s{i:02d}" for i in range(len(done))], states
    assert all(int(sid[1:]) in seen_at_kill for sid in done)
    unfinished = {sid: state for sid, state in states.items() if sid not in done}
    assert set(unfinished.values()) <= {"running", "pending"}, unfinished

    resumed = run_cli("resume", run_id[:-1], "--progress", "plain", "--workers", "2")
    assert resumed.code == 0, resumed.output
    assert no_traceback(resumed.output)
    counts = {i: indexes(out).count(i) for i in range(20)}
    # What was recorded as succeeded never ran again; only steps that had run but whose end
    # was not committed yet (the one running at the kill, and a chained one before it whose
    # end was still to be committed) ran twice.
    twice = {i for i, c in counts.items() if c == 2}
    assert all(c in (1, 2) for c in counts.values()), counts
    assert twice <= set(seen_at_kill), (twice, seen_at_kill)
    assert twice.isdisjoint(int(sid[1:]) for sid in done)
    assert indexes(out) == sorted(indexes(out))
    # An attempt recorded as running when the runner died is recorded as lost (and nothing
    # else is).
    check = sqlite3.connect(db)
    try:
        lost = check.execute(
            "SELECT step_id FROM attempts WHERE run_id = ? AND state = 'lost'", (run_id,)
        ).fetchall()
    finally:
        check.close()
    assert {row[0] for row in lost} <= {s for s, st in unfinished.items() if st == "running"}

    data = show(run_cli, run_id)
    assert data["run"]["status"] == "succeeded"
    assert set(step_states(data).values()) == {"succeeded"}
    assert data["run"]["outputs"] == {f"s{i:02d}": str(i) for i in range(20)}
    assert {s["step_id"]: s["output"] for s in data["steps"]} == {
        f"s{i:02d}": str(i) for i in range(20)
    }


# -- several runs at once ---------------------------------------------------------------------

FAN = """
version: 1
name: {name}
steps:
  - id: fan
    for_each: "{{{{ range(100) | list }}}}"
    uses: shell
    with: {{cmd: "echo {name}-{{{{ item }}}}"}}
"""


@pytest.mark.fault(21)
def test_two_runs_at_once_share_a_state_dir_and_both_are_recorded(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    popen: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    paths = [write_pipeline(FAN.format(name=n), name=f"{n}.yaml") for n in ("alpha", "beta")]
    procs = [start_runner(tmp_path, p, "--workers", "2") for p in paths]
    popen.extend(procs)
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (stdout, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stdout + stderr
        assert "locked" not in (stdout + stderr).lower()
        assert no_traceback(stdout + stderr)
    listed = run_cli("runs", "--json")
    assert listed.code == 0, listed.output
    rows = {r["pipeline"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"alpha", "beta"}
    for name, (stdout, _) in zip(("alpha", "beta"), results, strict=True):
        assert rows[name]["status"] == "succeeded"
        assert rows[name]["steps"] == 100
        assert rows[name]["id"] == run_id_of(stdout)
        data = show(run_cli, rows[name]["id"])
        outputs = {s["step_id"]: s["output"] for s in data["steps"]}
        assert outputs == {f"fan.{i}": f"{name}-{i}" for i in range(100)}
        assert set(step_states(data).values()) == {"succeeded"}


@pytest.mark.fault(21)
def test_opening_a_store_another_runner_is_still_creating_waits_for_it(tmp_path: Path) -> None:
    """Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is
    locked" without waiting to the connection that meets it: two runners creating one state
    dir at the same moment must not fail on that."""
    from pipeline_runner.store import Store, db_path

    state = tmp_path / "state"
    state.mkdir()
    creator = sqlite3.connect(db_path(state), isolation_level=None, check_same_thread=False)
    creator.execute("BEGIN IMMEDIATE")
    creator.execute("CREATE TABLE being_created (x)")
    release = threading.Timer(0.5, lambda: creator.execute("COMMIT"))
    release.start()
    try:
        store = Store(state)
    finally:
        release.join()
        creator.close()
    assert store.runs() == []
    store.close()


# -- resuming a failed run after a fix ----------------------------------------------------------

READS_DATA = """
version: 1
name: reads-data
params:
  x: bad
steps:
  - id: prep
    uses: shell
    with: {cmd: "echo prep >> calls.txt; echo prepared"}
  - id: read
    needs: prep
    uses: shell
    with: {cmd: "echo read >> calls.txt; grep -q good data.txt && echo data-ok"}
  - id: check
    needs: prep
    uses: shell
    with: {cmd: "echo check >> calls.txt; test {{ params.x }} = good && echo x-ok"}
  - id: after
    needs: [read, check]
    uses: shell
    with: {cmd: "echo after >> calls.txt; echo {{ steps.prep.output }}-{{ steps.read.output }}"}
outputs:
  result: "{{ steps.after.output }}"
"""


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.txt").read_text().split()


def test_resume_completes_a_failed_run_once_its_data_and_param_are_fixed(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(READS_DATA)
    (tmp_path / "data.txt").write_text("nothing useful\n")
    first = run(run_cli, path)
    assert first.code == 1, first.output
    run_id = run_id_of(first.stdout)
    assert step_states(show(run_cli, run_id)) == {
        "prep": "succeeded",
        "read": "failed",
        "check": "failed",
        "after": "upstream_failed",
    }

    # (a) the data file is fixed: `read` succeeds now, `check` still fails on its parameter.
    (tmp_path / "data.txt").write_text("good data\n")
    second = run_cli("resume", run_id, "--progress", "plain")
    assert second.code == 1, second.output
    assert step_states(show(run_cli, run_id))["read"] == "succeeded"

    # (b) the parameter is changed for the steps that run again.
    third = run_cli("resume", run_id, "--param", "x=good", "--progress", "plain")
    assert third.code == 0, third.output
    assert no_traceback(runner_text(third.output))
    data = show(run_cli, run_id)
    assert data["run"]["status"] == "succeeded"
    assert set(step_states(data).values()) == {"succeeded"}
    assert data["run"]["outputs"] == {"result": "prepared-data-ok"}
    assert calls(tmp_path).count("prep") == 1  # never re-run: it had succeeded
    assert calls(tmp_path).count("read") == 2
    assert calls(tmp_path).count("check") == 3
    assert calls(tmp_path).count("after") == 1


CHANGING = """
version: 1
name: changing
steps:
  - id: prep
    uses: shell
    with: {{cmd: "echo {word} >> calls.txt; echo {word}"}}
  - id: gate
    needs: prep
    uses: shell
    with: {{cmd: "test -e ok"}}
"""


@pytest.mark.fault(16)
def test_resume_refuses_when_a_succeeded_step_changed_unless_forced(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(CHANGING.format(word="one"))
    first = run(run_cli, path)
    assert first.code == 1, first.output
    run_id = run_id_of(first.stdout)
    write_pipeline(CHANGING.format(word="two"))
    (tmp_path / "ok").write_text("")

    refused = run_cli("resume", run_id, "--progress", "plain")
    assert refused.code == 2, refused.output
    assert "prep" in refused.stderr and "--force" in refused.stderr
    assert no_traceback(refused.output)
    assert calls(tmp_path) == ["one"]  # nothing ran
    assert show(run_cli, run_id)["run"]["status"] == "failed"

    forced = run_cli("resume", run_id, "--force", "--progress", "plain")
    assert forced.code == 0, forced.output
    assert calls(tmp_path) == ["one", "two"]
    data = show(run_cli, run_id)
    assert data["run"]["status"] == "succeeded"
    assert {s["step_id"]: s["output"] for s in data["steps"]}["prep"] == "two"


@pytest.mark.parametrize("stored", ["packed", "text"])
def test_a_runs_plan_is_stored_packed_and_one_stored_as_text_before_still_resumes(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path, stored: str
) -> None:
    import zlib

    path = write_pipeline(CHANGING.format(word="one"))
    first = run(run_cli, path)
    assert first.code == 1, first.output
    run_id = run_id_of(first.stdout)
    db = sqlite3.connect(tmp_path / "state" / "runs.db")
    kind, value = db.execute(
        "SELECT typeof(plan_json), plan_json FROM runs WHERE id = ?", (run_id,)
    ).fetchone()
    assert kind == "blob"
    text = zlib.decompress(value).decode()
    assert len(value) < len(text) and {n["id"] for n in json.loads(text)["nodes"]} >= {"prep"}
    if stored == "text":  # as a runner before the plan was packed wrote it
        with db:
            db.execute("UPDATE runs SET plan_json = ? WHERE id = ?", (text, run_id))
    db.close()

    listed = run_cli("runs", "--json")
    assert listed.code == 0 and "plan_json" not in json.loads(listed.stdout)[0], listed.output
    assert "plan_json" not in show(run_cli, run_id)["run"]
    status = run_cli("status", str(path), "--json")
    assert status.code == 0, status.output
    assert json.loads(status.stdout)["last_run"]["id"] == run_id

    write_pipeline(CHANGING.format(word="two"))
    refused = run_cli("resume", run_id, "--progress", "plain")  # the recorded plan was read
    assert refused.code == 2, refused.output
    assert "prep" in refused.stderr and "--force" in refused.stderr


# -- history: runs, show, logs ------------------------------------------------------------------

TALKER = """
version: 1
name: talker
steps:
  - id: hello
    uses: shell
    with: {cmd: "echo hello from the step; echo to stderr >&2"}
  - id: world
    needs: hello
    uses: shell
    with: {cmd: "echo world"}
"""


def test_runs_show_and_logs_with_prefixes_and_json(
    write_pipeline: WritePipeline, run_cli: RunCli
) -> None:
    path = write_pipeline(TALKER)
    ids = []
    for _ in range(2):
        result = run(run_cli, path)
        assert result.code == 0, result.output
        ids.append(run_id_of(result.stdout))
    first, second = ids

    listed = run_cli("runs")
    assert listed.code == 0, listed.output
    assert first in listed.stdout and second in listed.stdout
    assert "succeeded" in listed.stdout and "talker" in listed.stdout
    rows = json.loads(run_cli("runs", "--json").stdout)
    assert [r["id"] for r in rows] == [second, first]  # newest first
    assert all(r["status"] == "succeeded" and r["steps"] == 2 for r in rows)

    common = next(i for i, (x, y) in enumerate(zip(first, second, strict=True)) if x != y)
    prefix = first[: common + 1]  # the shortest prefix that names only the first run
    shown = run_cli("show", prefix)
    assert shown.code == 0, shown.output
    assert first in shown.stdout
    assert re.search(r"hello\s+succeeded", shown.stdout), shown.stdout
    data = show(run_cli, prefix)
    assert data["run"]["id"] == first
    assert [(s["step_id"], s["state"], s["attempts"]) for s in data["steps"]] == [
        ("hello", "succeeded", 1),
        ("world", "succeeded", 1),
    ]
    assert data["steps"][0]["output"] == "hello from the step"

    logs = run_cli("logs", prefix, "hello")
    assert logs.code == 0, logs.output
    assert "hello from the step" in logs.stdout and "to stderr" in logs.stdout
    assert "world" not in logs.stdout
    every = run_cli("logs", prefix)
    assert "==> hello <==" in every.stdout and "==> world <==" in every.stdout
    as_json = json.loads(run_cli("logs", prefix, "--json").stdout)
    assert set(as_json) == {"hello", "world"}
    assert "world" in as_json["world"]

    for args, words in [
        (("show", first[:common]), ["ambiguous"]),  # both runs share it
        (("show", "19990101T000000-abcdef"), ["no run"]),
        (("logs", "nope"), ["no run"]),
        (("logs", prefix, "helo"), ["no step", "hello"]),  # did you mean
        (("resume", "nope"), ["no run"]),
    ]:
        result = run_cli(*args)
        assert result.code == 2, (args, result.output)
        assert all(w in result.stderr for w in words), (args, result.stderr)
        assert no_traceback(result.output)


FOLLOWED = """
version: 1
name: followed
steps:
  - id: talk
    uses: python
    with: {call: "lib:talk", args: ["{{ params.dir }}"]}
params:
  dir: .
"""

TALK_LIB = """
import os
import sys
import time


def talk(folder):
    print("first line", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(folder, "go")) and time.monotonic() < deadline:
        time.sleep(0.02)
    print("second line", flush=True)
    return "done"
"""


def follow(follower: subprocess.Popen[str], tmp_path: Path) -> None:
    """The step prints its first line, waits for `go`, prints its second line, ends."""
    lines: list[str] = []
    assert follower.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout or ()), daemon=True)
    reader.start()

    assert wait_for(lambda: any("first line" in line for line in lines), timeout=60), lines
    assert not any("second line" in line for line in lines)
    assert follower.poll() is None  # still following: the run goes on
    (tmp_path / "go").write_text("")
    assert wait_for(lambda: any("second line" in line for line in lines), timeout=60), lines
    assert follower.wait(timeout=60) == 0  # the run ended
    reader.join(timeout=10)
    assert [line for line in lines if "line" in line] == ["first line\n", "second line\n"]


def test_logs_follow_prints_lines_as_they_come_and_returns_when_the_run_ends(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    popen: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    path = write_pipeline(FOLLOWED, files={"lib.py": TALK_LIB})
    runner = start_runner(tmp_path, path, "--param", f"dir={tmp_path}")
    popen.append(runner)

    def running_id() -> str | None:
        result = run_cli("runs", "--json")
        rows = json.loads(result.stdout) if result.code == 0 else []
        return str(rows[0]["id"]) if rows else None

    assert wait_for(lambda: running_id() is not None, timeout=60)
    run_id = running_id()
    assert run_id is not None
    follower = subprocess.Popen(
        [runner_executable(), "logs", run_id, "talk", "--follow"],
        cwd=tmp_path,
        env=runner_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        follow(follower, tmp_path)
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.wait(timeout=30)
    runner.communicate(timeout=60)
    assert runner.returncode == 0


# -- stores that cannot be used -------------------------------------------------------------------

ONE_STEP = """
version: 1
name: one
steps:
  - id: touch
    uses: shell
    with: {cmd: "touch RAN"}
"""


def _random_bytes(db: Path) -> None:
    db.write_bytes(os.urandom(16384))


def _truncated(db: Path) -> None:
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)


def _header_only(db: Path) -> None:
    with open(db, "r+b") as f:
        f.truncate(50)


def _damaged_pages(db: Path) -> None:
    """A valid header, then garbage where the tables are (no valid page type: deterministic)."""
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(bytes(range(256)) * 48)


@pytest.mark.fault(20)
@pytest.mark.parametrize(
    "damage", [_random_bytes, _truncated, _header_only, _damaged_pages], ids=lambda f: f.__name__
)
def test_a_corrupt_store_exits_3_and_is_never_replaced(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    damage: Callable[[Path], None],
) -> None:
    path = write_pipeline(ONE_STEP)
    db = tmp_path / "state" / "runs.db"
    if damage is not _random_bytes:
        assert run(run_cli, path).code == 0  # a real store with a run in it
        (tmp_path / "RAN").unlink()
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    else:
        db.parent.mkdir()
    damage(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    inode = db.stat().st_ino

    for args in (("run", str(path), "--progress", "plain"), ("runs",), ("runs", "--json")):
        result = run_cli(*args)
        assert result.code == 3, (args, result.output)
        assert "run store is corrupt" in result.stderr, result.stderr
        assert str(db) in result.stderr
        assert no_traceback(result.output)
    assert not (tmp_path / "RAN").exists()  # nothing ran
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert db.stat().st_ino == inode


@pytest.mark.fault(19)
def test_a_state_dir_that_cannot_be_created_exits_3_with_a_message(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(ONE_STEP)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    for state_dir in (blocker / "state", Path("/proc/runner-no-such-folder/state")):
        result = run_cli("run", str(path), "--state-dir", str(state_dir), "--progress", "plain")
        assert result.code == 3, result.output
        assert str(state_dir) in result.stderr, result.stderr
        assert "cannot be" in result.stderr
        assert no_traceback(result.output)
    assert not (tmp_path / "RAN").exists()


@pytest.mark.fault(19)
@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_state_dir_exits_3_with_a_message(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(ONE_STEP)
    state = tmp_path / "ro"
    state.mkdir()
    state.chmod(0o500)
    try:
        result = run_cli("run", str(path), "--state-dir", str(state), "--progress", "plain")
    finally:
        state.chmod(0o700)
    assert result.code == 3, result.output
    assert str(state) in result.stderr
    assert no_traceback(result.output)
    assert not (tmp_path / "RAN").exists()
