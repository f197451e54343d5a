"""Schedules, concurrency groups and `runner cancel`, through the real `runner` command: real
runner processes on one state folder, real signals, the real store.  Waits poll (conftest's
`wait_for`); nothing sleeps to synchronise."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import PIPELINES, RunCli, no_traceback, runner_executable, user_env, wait_for

from pipeline_runner.errors import EXIT_SKIPPED

WritePipeline = Callable[..., Path]

# A step that holds its run until the file `params.release` exists.
HOLDING = """
version: 1
name: {name}
params:
  release: {release}
{extra}
steps:
  - id: first
    uses: shell
    with:
      cmd: echo first
  - id: hold
    needs: first
    uses: shell
    with:
      cmd: while [ ! -e {{{{ params.release }}}} ]; do sleep 0.05; done; echo released
"""


class Procs:
    """Runner processes started by a test; whatever is still running at its end is killed."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[str]] = []
        self.files: list[IO[str]] = []

    def start(self, *args: str, name: str = "proc") -> subprocess.Popen[str]:
        env = user_env()
        env.pop("GITHUB_ACTIONS", None)
        env["PIPELINE_RUNNER_STATE_DIR"] = str(self.tmp_path / "state")
        out = open(self.tmp_path / f"{name}.out", "w")  # noqa: SIM115 (closed with the test)
        self.files.append(out)
        proc = subprocess.Popen(
            [runner_executable(), *args],
            cwd=self.tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.started.append(proc)
        return proc

    def output(self, name: str) -> str:
        return (self.tmp_path / f"{name}.out").read_text()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    found = Procs(tmp_path)
    yield found
    for proc in found.started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for out in found.files:
        out.close()
    (tmp_path / "release").touch()  # let go any step process a killed runner left


def runs(run_cli: RunCli) -> list[dict[str, Any]]:
    result = run_cli("runs", "--json")
    if result.code != 0:  # no store yet
        return []
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return sorted(data, key=lambda r: (r["started"], r["id"]))


def step_state(run_cli: RunCli, run_id: str, step: str) -> str | None:
    result = run_cli("show", run_id, "--json")
    if result.code != 0:
        return None
    steps = {s["step_id"]: s for s in json.loads(result.stdout)["steps"]}
    return steps[step]["state"] if step in steps else None


def holding_run(run_cli: RunCli) -> str:
    """The id of the one run recorded, once its `hold` step runs."""
    assert wait_for(lambda: len(runs(run_cli)) == 1, timeout=60)
    run_id = str(runs(run_cli)[0]["id"])
    assert wait_for(lambda: step_state(run_cli, run_id, "hold") == "running", timeout=60)
    return run_id


def holding(write_pipeline: WritePipeline, tmp_path: Path, name: str, extra: str = "") -> Path:
    release = tmp_path / "release"
    return write_pipeline(
        HOLDING.format(name=name, release=release, extra=extra), name=f"{name}.yaml"
    )


def group(if_running: str) -> str:
    return f"concurrency:\n  group: shared\n  if_running: {if_running}\n"


# -- the scheduled ingestion ---------------------------------------------------------------------


def test_scheduled_ingestion_runs_on_its_interval_and_chains_its_watermark(
    run_cli: RunCli, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "schedule",
        str(PIPELINES / "scheduled-ingestion.yaml"),
        "--max-runs",
        "3",
        "-p",
        "every=1s",
        "-p",
        f"out_dir={out}",
        timeout=120,
    )
    assert result.code == 0, result.output
    assert no_traceback(result.output)
    recorded = runs(run_cli)
    assert [r["status"] for r in recorded] == ["succeeded"] * 3
    # Each run was fed the watermark the run before it reached; the first, none (its default).
    fed = [r["request"]["params_file_values"].get("watermark") for r in recorded]
    assert fed == [None, 4, 8]
    assert [r["outputs"]["watermark"] for r in recorded] == [4, 8, 12]
    batches = sorted(p.name for p in out.iterdir())
    assert batches == ["batch-0001-0004.jsonl", "batch-0005-0008.jsonl", "batch-0009-0012.jsonl"]
    ids = [json.loads(line)["id"] for b in batches for line in (out / b).read_text().splitlines()]
    assert ids == list(range(1, 13))  # every event once
    # On time: one start a second, counted from the first.
    starts = [r["started"] for r in recorded]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(0.8 <= gap <= 30 for gap in gaps), gaps  # never early; late only on a busy machine
    lines = result.stdout.splitlines()
    assert sum(" started run " in line for line in lines) == 3
    assert sum(" finished run " in line for line in lines) == 3
    assert "params from run" in result.stdout and '{"watermark": 8}' in result.stdout


def test_a_cron_schedule_with_seconds_starts_runs(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: every-second
        schedule:
          cron: "* * * * * *"
        steps:
          - id: tick
            uses: shell
            with:
              cmd: date +%s
        """
    )
    result = run_cli("schedule", str(path), "--max-runs", "2", timeout=120)
    assert result.code == 0, result.output
    assert "cron '* * * * * *' (UTC)" in result.stdout
    recorded = runs(run_cli)
    assert [r["status"] for r in recorded] == ["succeeded", "succeeded"]
    assert recorded[1]["started"] - recorded[0]["started"] >= 0.5


def test_the_schedule_skips_a_start_while_its_previous_run_goes_on_and_stops_cleanly(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, procs: Procs
) -> None:
    path = holding(write_pipeline, tmp_path, "held", "schedule:\n  interval: 200ms\n")
    schedule = procs.start("schedule", str(path), name="schedule")
    run_id = holding_run(run_cli)
    assert wait_for(lambda: "skipped: its previous run" in procs.output("schedule"), timeout=60)
    schedule.send_signal(signal.SIGTERM)
    assert schedule.wait(timeout=60) == 0, procs.output("schedule")
    log = procs.output("schedule")
    assert "stopping its run" in log and f"finished run {run_id}: cancelled" in log
    assert [r["status"] for r in runs(run_cli)] == ["cancelled"]  # nothing started after
    assert step_state(run_cli, run_id, "first") == "succeeded"  # what finished stays finished
    assert step_state(run_cli, run_id, "hold") == "cancelled"
    assert no_traceback(log)


def test_a_queued_start_of_the_schedule_waits_for_its_previous_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, procs: Procs
) -> None:
    extra = "schedule:\n  interval: 200ms\n" + group("queue")
    path = holding(write_pipeline, tmp_path, "queued", extra)
    schedule = procs.start("schedule", str(path), "--max-runs", "2", name="schedule")
    holding_run(run_cli)
    assert wait_for(lambda: "queued: starts when its previous run" in procs.output("schedule"))
    assert len(runs(run_cli)) == 1
    (tmp_path / "release").touch()
    assert schedule.wait(timeout=60) == 0, procs.output("schedule")
    recorded = runs(run_cli)
    assert [r["status"] for r in recorded] == ["succeeded", "succeeded"]
    assert recorded[1]["started"] >= recorded[0]["finished"]


# -- concurrency groups between two runners on one state folder ---------------------------------


def test_if_running_skip_does_not_start_the_second_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, procs: Procs
) -> None:
    path = holding(write_pipeline, tmp_path, "skipper", group("skip"))
    first = procs.start("run", str(path), "--progress", "plain", name="first")
    run_id = holding_run(run_cli)
    second = run_cli("run", str(path))
    assert second.code == EXIT_SKIPPED == 76
    assert "runner: skipped: concurrency group 'shared' is busy" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert len(runs(run_cli)) == 1
    (tmp_path / "release").touch()
    assert first.wait(timeout=60) == 0
    assert [r["id"] for r in runs(run_cli)] == [run_id]


def test_if_running_queue_waits_until_the_first_run_ends(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, procs: Procs
) -> None:
    path = holding(write_pipeline, tmp_path, "queuer", group("queue"))
    first = procs.start("run", str(path), "--progress", "plain", name="first")
    holding_run(run_cli)
    second = procs.start("run", str(path), "--progress", "plain", name="second")
    assert wait_for(lambda: "waiting (if_running: queue)" in procs.output("second"), timeout=60)
    assert second.poll() is None and len(runs(run_cli)) == 1
    (tmp_path / "release").touch()
    assert first.wait(timeout=60) == 0
    assert second.wait(timeout=60) == 0, procs.output("second")
    recorded = runs(run_cli)
    assert [r["status"] for r in recorded] == ["succeeded", "succeeded"]
    assert recorded[1]["started"] >= recorded[0]["finished"]


def test_if_running_cancel_cancels_the_first_run_cleanly(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, procs: Procs
) -> None:
    path = holding(write_pipeline, tmp_path, "canceller", group("cancel"))
    first = procs.start("run", str(path), "--progress", "plain", name="first")
    first_id = holding_run(run_cli)
    (tmp_path / "other").touch()
    second = run_cli("run", str(path), "-p", f"release={tmp_path / 'other'}", "--progress", "plain")
    assert second.code == 0, second.output
    assert "cancelling it (if_running: cancel)" in second.stderr
    assert first.wait(timeout=60) == 130  # as after a first Ctrl-C
    recorded = runs(run_cli)
    assert [r["status"] for r in recorded] == ["cancelled", "succeeded"]
    assert recorded[0]["id"] == first_id
    assert recorded[1]["started"] >= recorded[0]["finished"]
    assert step_state(run_cli, first_id, "first") == "succeeded"
    assert step_state(run_cli, first_id, "hold") == "cancelled"


def test_a_crashed_holder_does_not_block_the_group(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, procs: Procs
) -> None:
    path = holding(write_pipeline, tmp_path, "crashed", group("skip"))
    first = procs.start("run", str(path), "--progress", "plain", name="first")
    holding_run(run_cli)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    (tmp_path / "release").touch()  # the orphaned step may end; the lock was the runner's
    second = run_cli("run", str(path), "--progress", "plain")
    assert second.code == 0, second.output
    assert [r["status"] for r in runs(run_cli)][-1] == "succeeded"


def test_a_scheduled_run_meets_a_manual_run_of_its_group(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, procs: Procs
) -> None:
    extra = "schedule:\n  interval: 1s\n" + group("skip")
    path = holding(write_pipeline, tmp_path, "shared", extra)
    manual = procs.start("run", str(path), "--progress", "plain", name="manual")
    holding_run(run_cli)
    result = run_cli("schedule", str(path), "--max-runs", "1")
    assert result.code == 0, result.output
    assert "not started (pid " in result.stdout and "concurrency group is busy, exit 76" in (
        result.stdout
    )
    assert "runner: skipped: concurrency group 'shared' is busy" in result.stderr
    assert len(runs(run_cli)) == 1
    (tmp_path / "release").touch()
    assert manual.wait(timeout=60) == 0


# -- runner cancel -------------------------------------------------------------------------------


def test_runner_cancel_stops_a_run_from_another_process(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, procs: Procs
) -> None:
    path = holding(write_pipeline, tmp_path, "cancelled")
    first = procs.start("run", str(path), "--progress", "plain", name="first")
    run_id = holding_run(run_cli)
    result = run_cli("cancel", run_id[:12])
    assert result.code == 0, result.output
    assert f"cancelling run {run_id} (pid {first.pid})" in result.stdout
    assert f"run {run_id}: cancelled" in result.stdout
    assert first.wait(timeout=60) == 130
    assert step_state(run_cli, run_id, "first") == "succeeded"
    assert step_state(run_cli, run_id, "hold") == "cancelled"
    assert f"resume with: runner resume {run_id}" in procs.output("first")
    again = run_cli("cancel", run_id)
    assert again.code == 2
    assert f"runner: error: run {run_id} is not running: it is cancelled" in again.stderr
    unknown = run_cli("cancel", "nope")
    assert unknown.code == 2 and "no run with id 'nope'" in unknown.stderr


def test_runner_cancel_of_a_scheduled_run_lets_the_schedule_go_on(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, procs: Procs
) -> None:
    path = holding(write_pipeline, tmp_path, "ticking", "schedule:\n  interval: 200ms\n")
    schedule = procs.start("schedule", str(path), "--max-runs", "2", name="schedule")
    run_id = holding_run(run_cli)
    result = run_cli("cancel", run_id)
    assert result.code == 0 and f"run {run_id}: cancelled" in result.stdout, result.output
    assert wait_for(lambda: f"finished run {run_id}: cancelled" in procs.output("schedule"))
    (tmp_path / "release").touch()
    assert schedule.wait(timeout=60) == 0, procs.output("schedule")
    assert [r["status"] for r in runs(run_cli)] == ["cancelled", "succeeded"]


# -- print-crontab and validation ----------------------------------------------------------------


def test_print_crontab_writes_cron_lines_and_says_what_it_cannot(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    body = "steps:\n  - id: a\n    uses: noop\n"
    paris = write_pipeline(
        "version: 1\nname: paris\nschedule:\n  cron: '30 3 * * 1-5'\n  timezone: Europe/Paris\n"
        + body,
        name="paris.yaml",
    )
    secs = write_pipeline(
        "version: 1\nname: secs\nschedule:\n  cron: '0 */5 * * * *'\n" + body, name="secs.yaml"
    )
    quarter = write_pipeline(
        "version: 1\nname: quarter\nschedule:\n  interval: 15m\n" + body, name="quarter.yaml"
    )
    often = write_pipeline(
        "version: 1\nname: often\nschedule:\n  interval: 30s\n" + body, name="often.yaml"
    )
    state = tmp_path / "st"
    args = [str(p) for p in (paris, secs, quarter, often)]
    result = run_cli("schedule", *args, "--print-crontab", "--state-dir", str(state))
    assert result.code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    runner = runner_executable()
    tail = f"--state-dir {state} --progress none"
    assert lines == [
        "CRON_TZ=Europe/Paris",
        f"30 3 * * 1-5 {runner} run {paris} {tail}",
        "CRON_TZ=UTC",
        f"*/5 * * * * {runner} run {secs} {tail}",
        "CRON_TZ=UTC",
        f"*/15 * * * * {runner} run {quarter} {tail}",
    ]
    assert f"# {often}: every 30s cannot be written as a crontab line" in result.stdout
    assert "runner: warning:" in result.stderr and "every 30s" in result.stderr
    assert not (state / "runs.db").exists()  # nothing ran


def test_schedule_keys_are_checked_at_validate_time_with_their_place(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: bad
        params:
          n: 1
        schedule:
          cron: "0 25 * * *"
          timezone: Mars/Olympus
          params_from_previous: true
        concurrency:
          group: "g-{{ run.id }}"
        steps:
          - id: a
            uses: noop
        outputs:
          total: 3
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2
    assert no_traceback(result.output)
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors[0].startswith(f"{path}:6:9: error: schedule.cron: invalid cron expression")
    assert errors[1].startswith(f"{path}:7:13: error: schedule.timezone: unknown time zone")
    assert errors[2].startswith(f"{path}:8:25: error: schedule.params_from_previous: no output")
    assert errors[3] == (
        f"{path}:10:10: error: concurrency.group: must be known before the run: use params or "
        "env, not steps, run or secrets"
    )
    assert len(errors) == 4


@pytest.mark.parametrize(
    ("schedule", "where", "message"),
    [
        ("{cron: '* * *'}", "4:18", "schedule.cron: invalid cron expression '* * *': expected 5"),
        ("{interval: 0s}", "4:22", "schedule.interval: invalid interval '0s': must be more"),
        ("{interval: 1s, timezone: UTC}", "4:36", "schedule.timezone: a timezone is for `cron`"),
        ("{interval: 1s, cron: '* * * * *'}", "4:11", "schedule: give exactly one of `cron`"),
        ("{interval: often}", "4:22", "schedule.interval: invalid duration 'often'"),
    ],
)
def test_a_bad_schedule_is_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline, schedule: str, where: str, message: str
) -> None:
    path = write_pipeline(
        f"version: 1\nname: bad\nsteps: [{{id: a, uses: noop}}]\nschedule: {schedule}\n"
    )
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    assert f"{path}:{where}: error: {message}" in result.stderr, result.stderr
    started = run_cli("schedule", str(path), "--max-runs", "1")
    assert started.code == 2 and f"{path}:{where}: error: {message}" in started.stderr


def test_schedule_refuses_a_file_without_a_schedule_and_if_running_must_be_known(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    plain = write_pipeline("version: 1\nname: p\nsteps: [{id: a, uses: noop}]\n")
    result = run_cli("schedule", str(plain), "--max-runs", "1")
    assert result.code == 2
    assert f"{plain}: error: has no `schedule:` block" in result.stderr
    bad = write_pipeline(
        "version: 1\nname: p\nsteps: [{id: a, uses: noop}]\n"
        "concurrency: {group: g, if_running: later}\n",
        name="bad.yaml",
    )
    result = run_cli("validate", str(bad))
    assert result.code == 2
    assert f"{bad}:4:37: error: concurrency.if_running: expected one of" in result.stderr
    assert not os.path.exists(plain.parent / "state" / "runs.db")


# -- the decisions behind the loop, as functions -------------------------------------------------


def test_next_due_times_of_intervals_and_crons() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from pipeline_runner import timetable
    from pipeline_runner.model import Schedule

    every = Schedule(interval=10.0)
    assert timetable.first_due(every, 100.0) == 100.0
    assert timetable.next_due(every, 100.0, 101.0) == 110.0
    assert timetable.next_due(every, 100.0, 135.0) == 140.0  # missed starts: no burst
    paris = Schedule(cron="30 3 * * *", timezone="Europe/Paris")
    noon = datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    due = datetime.fromtimestamp(timetable.first_due(paris, noon), ZoneInfo("Europe/Paris"))
    assert (due.day, due.hour, due.minute) == (2, 3, 30)
    seconds = Schedule(cron="*/10 * * * * *")
    assert timetable.first_due(seconds, 1000.0) == 1010.0


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        ({"cron": "0 3 * * *"}, "0 3 * * *"),
        ({"cron": "0 */2 * * * *"}, "*/2 * * * *"),
        ({"cron": "5 * * * * *"}, None),
        ({"interval": 60.0}, "* * * * *"),
        ({"interval": 900.0}, "*/15 * * * *"),
        ({"interval": 420.0}, None),
        ({"interval": 21600.0}, "0 */6 * * *"),
        ({"interval": 86400.0}, "0 0 * * *"),
        ({"interval": 30.0}, None),
    ],
)
def test_crontab_fields_only_when_exact(spec: dict[str, Any], line: str | None) -> None:
    from pipeline_runner import timetable
    from pipeline_runner.model import Schedule

    assert timetable.as_crontab(Schedule(**spec)) == line


def test_what_a_due_start_does() -> None:
    from pipeline_runner.kinds import DueAction
    from pipeline_runner.model import IfRunning
    from pipeline_runner.periodic import on_due

    assert on_due(False, IfRunning.SKIP, False) is DueAction.START
    assert on_due(True, None, False) is DueAction.SKIP
    assert on_due(True, IfRunning.SKIP, False) is DueAction.SKIP
    assert on_due(True, IfRunning.QUEUE, False) is DueAction.QUEUE
    assert on_due(True, IfRunning.QUEUE, True) is DueAction.SKIP  # one start waits at most
    assert on_due(True, IfRunning.CANCEL, False) is DueAction.CANCEL
