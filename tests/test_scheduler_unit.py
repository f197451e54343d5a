"""The scheduler's decisions, checked directly: a Scheduler (or a RunState) built from a planned
pipeline, run with the inline executor (no worker processes), its change records kept by a
recording sink.  Then the readers (store, plain lines, events file, report files) fed change
records directly, with no scheduler at all."""

from __future__ import annotations

import io
import json
import sqlite3
import textwrap
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from pipeline_runner import compensation, limits, retrying, runsetup
from pipeline_runner.changes import RunInfo, RunResult, StepChanged
from pipeline_runner.errors import Location
from pipeline_runner.executors.local import InlineExecutor
from pipeline_runner.exports import EventsFile, junit_xml, summary_json
from pipeline_runner.model import NodeKind, Plan, State
from pipeline_runner.planner import plan_file
from pipeline_runner.report import PlainReporter
from pipeline_runner.runstate import NodeRun, Options, RunState
from pipeline_runner.scheduler import Scheduler
from pipeline_runner.secrets import Masker


class Recorder:
    """A sink that keeps everything it is told."""

    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.changes: list[StepChanged] = []
        self.turns = 0
        self.result: RunResult | None = None

    def run_started(self, run: RunInfo) -> None:
        self.info = run

    def changed(self, change: StepChanged) -> None:
        self.changes.append(change)

    def turn(self) -> None:
        self.turns += 1

    def run_finished(self, result: RunResult) -> None:
        self.result = result

    def started(self) -> list[str]:
        """Ids in the order their first attempt started."""
        seen: list[str] = []
        for c in self.changes:
            if c.state is State.RUNNING and c.old is not State.RUNNING and c.id not in seen:
                seen.append(c.id)
        return seen

    def states(self, nid: str) -> list[str]:
        return [c.state.value for c in self.changes if c.id == nid and c.state is not c.old]


def plan_of(tmp_path: Path, text: str) -> Plan:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return plan_file(str(path))


def scheduler(tmp_path: Path, text: str, **options: Any) -> tuple[Scheduler, Recorder]:
    recorder = Recorder()
    plan = plan_of(tmp_path, text)
    sched = Scheduler(
        plan, InlineExecutor([]), "r1", tmp_path / "run", {}, [recorder], Options(**options)
    )
    return sched, recorder


def run(tmp_path: Path, text: str, **options: Any) -> tuple[Scheduler, Recorder, RunResult]:
    sched, recorder = scheduler(tmp_path, text, **options)
    result = sched.run()
    return sched, recorder, result


def state_of(tmp_path: Path, text: str) -> RunState:
    state = RunState(plan_of(tmp_path, text), lambda change: None)
    runsetup.build(state, Options(), lambda nid: f"{nid}.log")
    return state


# -- the ready queue ------------------------------------------------------------------------------


def test_ready_order_is_priority_then_longest_chain_then_file_order(tmp_path: Path) -> None:
    _, rec, result = run(
        tmp_path,
        """
        version: 1
        name: order
        steps:
          - {id: a, uses: noop}
          - {id: b, uses: noop}
          - {id: c, uses: noop, priority: 5}
          - {id: d, uses: noop}
          - {id: e, uses: noop, needs: d}
        """,
    )
    assert result.status == "succeeded"
    # c has the highest priority; d has a chain behind it (e); then a, b in file order
    # (e, readied when d ends, has a chain as long as a's and b's and comes later in the file)
    assert rec.started() == ["c", "d", "a", "b", "e"]


def test_the_longest_chain_counts_when_a_step_needs_one_written_after_it(tmp_path: Path) -> None:
    # e needs d, written after it: the file's order reversed does not put every node after
    # what needs it, so the chains are measured in a sorted order (runsetup.critical_path).
    _, rec, result = run(
        tmp_path,
        """
        version: 1
        name: order
        steps:
          - {id: e, uses: noop, needs: d}
          - {id: a, uses: noop}
          - {id: b, uses: noop}
          - {id: d, uses: noop, needs: f}
          - {id: f, uses: noop}
        """,
    )
    assert result.status == "succeeded"
    # f has the longest chain behind it (3 steps: f, d, e); once it ends, d (2) goes before a
    # and b (1 each), and then e (1, but written first) too
    assert rec.started() == ["f", "d", "e", "a", "b"]


def test_a_skipped_root_readies_a_dependent_whose_rule_allows_it(tmp_path: Path) -> None:
    sched, rec, result = run(
        tmp_path,
        """
        version: 1
        name: skip
        steps:
          - {id: a, uses: noop, if: "{{ false }}"}
          - {id: b, uses: noop, needs: a, trigger: none_failed}
          - {id: c, needs: b, uses: shell, with: {cmd: "exit 3"}}
          - {id: d, uses: noop, needs: c}
        """,
    )
    assert rec.states("a") == ["skipped"]
    assert rec.states("b") == ["running", "succeeded"]
    assert rec.states("d") == ["upstream_failed"]
    assert result.counts == {"skipped": 1, "succeeded": 1, "failed": 1, "upstream_failed": 1}
    state = sched.state
    assert (state.unfinished, state.main_unfinished, state.running) == (0, 0, 0)
    assert state.main_failed
    assert result.nodes["d"].error == "needs c, which failed"


# -- pools and group limits -----------------------------------------------------------------------


def test_a_full_pool_blocks_and_a_freed_slot_releases_one(tmp_path: Path) -> None:
    state = state_of(
        tmp_path,
        """
        version: 1
        name: pools
        pools: {db: 1}
        steps:
          - {id: x, uses: noop, pool: db}
          - {id: y, uses: noop, pool: db}
          - {id: z, uses: noop, pool: db}
        """,
    )
    x, y, z = (state.runs[n] for n in "xyz")
    assert limits.limit_reached(state, x.node) is None
    limits.hold(state, x.node, +1)
    assert limits.limit_reached(state, y.node) == "pool:db"
    state.enqueue(y)
    state.enqueue(z)
    for entry in list(state.ready):
        limits.block(state, "pool:db", entry)
    state.ready.clear()
    limits.hold(state, x.node, -1)  # one slot freed: one waiting step comes back, the first
    assert [e[3] for e in state.ready] == ["y"]
    assert [e[3] for e in state.blocked["pool:db"]] == ["z"]


def test_max_parallel_of_a_for_each_is_a_group_limit(tmp_path: Path) -> None:
    state = state_of(
        tmp_path,
        """
        version: 1
        name: fan
        steps:
          - {id: f, for_each: [a, b, c], max_parallel: 2, uses: noop}
        """,
    )
    a, b, c = (state.runs[f"f.{k}"] for k in "abc")
    assert limits.group_limit(state, a.node) == 2
    limits.hold(state, a.node, +1)
    assert limits.limit_reached(state, b.node) is None
    limits.hold(state, b.node, +1)
    assert limits.limit_reached(state, c.node) == "group:f"


def test_a_pool_of_one_runs_its_steps_one_at_a_time(tmp_path: Path) -> None:
    _, rec, result = run(
        tmp_path,
        """
        version: 1
        name: pools
        pools: {db: 1}
        steps:
          - {id: x, uses: noop, pool: db}
          - {id: y, uses: noop, pool: db}
        """,
    )
    assert result.status == "succeeded"
    order = [(c.id, c.state.value) for c in rec.changes if c.state is not c.old]
    assert order == [("x", "running"), ("x", "succeeded"), ("y", "running"), ("y", "succeeded")]


# -- retries, timers and breakers -----------------------------------------------------------------


def test_retries_wait_on_the_timer_heap_then_run_again(tmp_path: Path) -> None:
    _, rec, result = run(
        tmp_path,
        """
        version: 1
        name: retry
        steps:
          - id: a
            retries: {max: 2, delay: 0s, jitter: false}
            uses: shell
            with: {cmd: "exit 3"}
        """,
    )
    states = rec.states("a")
    assert states == ["running", "retrying", "running", "retrying", "running", "failed"]
    assert result.nodes["a"].attempt == 3
    assert [c.attempt for c in rec.changes if c.state is State.RETRYING] == [1, 2]
    assert len(result.nodes["a"].attempts) == 3


def test_schedule_retry_puts_the_step_on_the_timer_heap(tmp_path: Path) -> None:
    import random

    state = state_of(
        tmp_path,
        """
        version: 1
        name: retry
        steps:
          - {id: a, uses: noop, retries: {max: 1, delay: 30s, jitter: false}}
        """,
    )
    nr = state.runs["a"]
    nr.attempt = 1
    assert retrying.may_retry(nr, "error")
    before = time.monotonic()
    delay = retrying.schedule_retry(state, nr, random.Random(1))
    assert delay == 30.0
    assert state.timers[0][1] == "a" and state.timers[0][0] >= before + 30.0
    assert retrying.due_retries(state, before) == []
    assert retrying.due_retries(state, before + 31.0) == [nr]
    nr.attempt = 2
    assert not retrying.may_retry(nr, "error")  # no retries left


def test_a_breaker_opens_then_lets_one_trial_through(tmp_path: Path) -> None:
    state = state_of(
        tmp_path,
        """
        version: 1
        name: breaker
        pools:
          api: {size: 3, breaker: {failures: 2, cooldown: 10s}}
        steps:
          - {id: a, uses: noop, pool: api}
          - {id: b, uses: noop, pool: api}
        """,
    )
    breakers = retrying.Breakers(dict(state.plan.breakers))
    a, b = state.runs["a"], state.runs["b"]
    now = time.monotonic()
    assert breakers.verdict(a, now) is retrying.Verdict.CLOSED
    breakers.record(a.node, False)
    assert breakers.verdict(a, now) is retrying.Verdict.CLOSED
    breakers.record(a.node, False)  # the second failure in a row opens it
    assert breakers.verdict(b, now) is retrying.Verdict.OPEN
    assert "open after 2 failures in a row" in breakers.open_message("api")
    later = now + 11.0  # the cooldown passed: half-open, one trial, the others wait
    assert breakers.verdict(b, later) is retrying.Verdict.TRIAL
    assert breakers.verdict(a, later) is retrying.Verdict.WAIT
    assert breakers.end_trial(a.node) is None  # not the trial
    breakers.record(b.node, True)
    assert breakers.end_trial(b.node) == "breaker:api"
    assert breakers.verdict(a, later) is retrying.Verdict.CLOSED


def test_an_open_breaker_fails_steps_without_calling_them(tmp_path: Path) -> None:
    _, rec, result = run(
        tmp_path,
        """
        version: 1
        name: breaker
        pools:
          api: {size: 1, breaker: {failures: 1, cooldown: 10m}}
        steps:
          - {id: a, pool: api, uses: shell, with: {cmd: "exit 3"}, continue_on_error: true}
          - {id: b, pool: api, needs: a, uses: noop}
        """,
    )
    b = result.nodes["b"]
    assert b.state is State.FAILED and b.error_kind == "breaker" and b.attempts == ()
    assert rec.states("b") == ["running", "failed"]


# -- compensation and finally ---------------------------------------------------------------------


SAGA = """
version: 1
name: saga
steps:
  - id: reserve
    uses: noop
    compensate: {uses: shell, with: {cmd: "echo undo reserve"}}
  - id: charge
    needs: reserve
    uses: noop
    compensate: {uses: shell, with: {cmd: "echo undo charge"}}
  - id: ship
    needs: charge
    uses: shell
    with: {cmd: "exit 3"}
finally:
  - id: notify
    uses: shell
    with: {cmd: "echo {{ run.status }}"}
"""


def test_compensations_run_in_reverse_order_of_success_then_finally(tmp_path: Path) -> None:
    _, rec, result = run(tmp_path, SAGA)
    assert rec.started() == [
        "reserve",
        "charge",
        "ship",
        "charge:compensate",
        "reserve:compensate",
        "notify",
    ]
    assert result.status == "compensated" and result.exit_code == 1
    assert result.nodes["reserve"].state is State.COMPENSATED
    assert result.nodes["notify"].output is not None or result.nodes["notify"].state.ok
    log = Path(result.nodes["notify"].log_path).read_text()
    assert "compensated" in log


def test_to_undo_orders_by_completion_and_release_finally_waits(tmp_path: Path) -> None:
    state = state_of(tmp_path, SAGA)
    reserve, charge, ship = (state.runs[n] for n in ("reserve", "charge", "ship"))
    state.finish(reserve, State.SUCCEEDED)
    state.finish(charge, State.SUCCEEDED)
    state.finish(ship, State.FAILED)
    assert state.main_failed and state.main_unfinished == 0
    assert [nr.id for nr in compensation.to_undo(state)] == ["charge", "reserve"]
    node = compensation.compensation_node(state, charge)
    assert node.id == "charge:compensate" and node.needs == () and node.compensate is None
    assert [nr.id for nr in compensation.release_finally(state)] == ["notify"]


def test_no_compensate_runs_finally_only(tmp_path: Path) -> None:
    _, rec, _ = run(tmp_path, SAGA, compensate=False)
    assert rec.started() == ["reserve", "charge", "ship", "notify"]


# -- fail-fast ------------------------------------------------------------------------------------


def test_fail_fast_cancels_what_has_not_started(tmp_path: Path) -> None:
    sched, rec, result = run(
        tmp_path,
        """
        version: 1
        name: ff
        steps:
          - {id: a, priority: 1, uses: shell, with: {cmd: "exit 3"}}
          - {id: b, uses: noop}
          - {id: c, uses: noop, needs: b}
        finally:
          - {id: f, uses: noop}
        """,
        fail_fast=True,
    )
    assert result.status == "failed" and result.exit_code == 1
    assert rec.states("b") == ["cancelled"] and rec.states("c") == ["cancelled"]
    assert rec.states("f") == ["running", "succeeded"]  # finally still runs
    assert sched.state.cancelling and not sched.state.hard_cancel


# -- run-time for_each ----------------------------------------------------------------------------


def test_a_run_time_for_each_expands_into_instances(tmp_path: Path) -> None:
    sched, rec, result = run(
        tmp_path,
        """
        version: 1
        name: fan
        steps:
          - id: split
            uses: python
            with: {call: "json:loads", args: ['[{"name": "x"}, {"name": "y"}]']}
          - id: each
            needs: split
            for_each: "{{ steps.split.output }}"
            as: part
            uses: shell
            with: {cmd: "echo {{ part.name }}"}
          - {id: after, needs: each, uses: noop}
        """,
    )
    assert result.status == "succeeded"
    assert rec.started() == ["split", "each.x", "each.y", "after"]
    assert sched.state.runs["each"].members == ["each.x", "each.y"]
    assert next(c.state for c in rec.changes if c.id == "each.x") is State.PENDING
    assert result.counts["succeeded"] == 4  # split, each.x, each.y, after


def test_a_run_time_for_each_with_two_equal_keys_fails_the_step(tmp_path: Path) -> None:
    _, _, result = run(
        tmp_path,
        """
        version: 1
        name: fan
        steps:
          - id: split
            uses: python
            with: {call: "json:loads", args: ['["x", "x"]']}
          - {id: each, needs: split, for_each: "{{ steps.split.output }}", uses: noop}
        """,
    )
    each = result.nodes["each"]
    assert each.state is State.FAILED and "two items have the key 'x'" in each.error


# -- the records readers get ----------------------------------------------------------------------


def test_change_records_are_frozen_snapshots(tmp_path: Path) -> None:
    _, rec, _ = run(
        tmp_path,
        """
        version: 1
        name: snap
        steps:
          - {id: a, uses: shell, with: {cmd: "echo hi"}}
        """,
    )
    running, done = [c for c in rec.changes if c.id == "a"]
    assert (running.old, running.state, running.last_attempt) == (
        State.PENDING,
        State.RUNNING,
        None,
    )
    assert done.state is State.SUCCEEDED and done.last_attempt is not None
    assert done.last_attempt.ok and done.attempt == 1
    with pytest.raises(AttributeError):
        done.state = State.FAILED  # type: ignore[misc]
    assert rec.info is not None and rec.info.nodes["a"].state is State.PENDING


def record(nid: str, state: State, old: State, **fields: Any) -> StepChanged:
    base: dict[str, Any] = {
        "id": nid,
        "kind": NodeKind.STEP,
        "state": state,
        "old": old,
        "attempt": 1,
        "started": 100.0,
        "finished": 101.5 if state.finished else None,
        "error_kind": None,
        "error": "",
        "exit_code": None,
        "worker": "w1",
        "output": None,
        "output_json": "null",
        "log_path": "",
        "group": None,
        "key": None,
        "uses": "noop",
        "location": Location("p.yaml", 3, 5),
    }
    base.update(fields)
    return StepChanged(**base)


def test_the_store_records_change_records(tmp_path: Path) -> None:
    from pipeline_runner.messages import Completion
    from pipeline_runner.store import db_path, open_store
    from pipeline_runner.storesink import StoreSink

    store = open_store(tmp_path / "state")
    plan = plan_of(tmp_path, "version: 1\nname: s\nsteps:\n  - {id: a, uses: noop}\n")
    sink = StoreSink(store, {}, "{}", "h", "f", Masker(["s3cret"]))
    pending = record("a", State.PENDING, State.PENDING, finished=None)
    sink.run_started(RunInfo("r1", plan, tmp_path, "inline", 1, {"a": pending}, 99.0))
    sink.changed(record("a", State.RUNNING, State.PENDING, process=(4242, "77")))
    done = Completion(1, False, None, "error", "bad s3cret", "", 3, 100.0, 101.0, "w1")
    sink.changed(
        record(
            "a",
            State.FAILED,
            State.RUNNING,
            error="bad s3cret",
            error_kind="error",
            exit_code=3,
            last_attempt=done,
            attempts=(done,),
        )
    )
    sink.commit()
    store.close()
    db = sqlite3.connect(db_path(tmp_path / "state"))
    row = db.execute("SELECT state, attempts, error, exit_code FROM steps").fetchone()
    assert row == ("failed", 1, "bad ***", 3)
    attempt = db.execute("SELECT state, error, pgid, pgid_start FROM attempts").fetchone()
    assert attempt == ("failed", "bad ***", 4242, "77")
    events = db.execute("SELECT state FROM events WHERE step_id = 'a' ORDER BY rowid").fetchall()
    assert events == [("running",), ("failed",)]


def test_plain_lines_and_the_events_file_from_change_records(tmp_path: Path) -> None:
    out = io.StringIO()
    plain = PlainReporter(out)
    events_path = tmp_path / "events.jsonl"
    events = EventsFile(str(events_path), Masker([]))
    failed = record("a", State.FAILED, State.RUNNING, error="boom", error_kind="timeout", attempt=2)
    for sink in (plain, events):
        sink.changed(record("a", State.RUNNING, State.PENDING, attempt=2))
        sink.changed(failed)
        sink.changed(failed._replace(old=State.FAILED))  # news: no line
        sink.turn()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("running         a (attempt 2)")
    assert lines[1].endswith("failed          a (1.50s): boom [timeout]")
    rows = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert [(r["state"], r["previous"], r.get("error")) for r in rows] == [
        ("running", "pending", None),
        ("failed", "running", "boom"),
    ]


def test_report_files_from_a_result_of_change_records() -> None:
    ok = record("t.a", State.SUCCEEDED, State.RUNNING, output={"n": 1}, group="t")
    bad = record("b", State.FAILED, State.RUNNING, error="boom", error_kind="crash")
    group = record("t", State.SUCCEEDED, State.PENDING, kind=NodeKind.GROUP, group_kind="template")
    nodes = MappingProxyType({"t": group, "t.a": ok, "b": bad})
    result = RunResult("r1", "failed", 1, nodes, {}, 99.0, 102.0, None, {"succeeded": 1})
    data = summary_json(result, "p", Masker([]))
    assert [(s["id"], s["state"], s["error_kind"]) for s in data["steps"]] == [
        ("t.a", "succeeded", None),
        ("b", "failed", "crash"),
    ]
    assert data["steps"][0]["output"] == {"n": 1}
    xml = junit_xml(result, "p", Masker([]))
    assert '<testsuite name="t"' in xml and 'type="crash"' in xml


def test_run_info_lists_every_node_with_its_state(tmp_path: Path) -> None:
    sched, rec = scheduler(tmp_path, SAGA)
    sched.run()
    assert rec.info is not None
    assert list(rec.info.nodes) == ["reserve", "charge", "ship", "notify"]
    assert all(isinstance(c, StepChanged) for c in rec.info.nodes.values())


def test_node_run_change_carries_the_current_attempt_only(tmp_path: Path) -> None:
    from pipeline_runner.messages import Completion

    state = state_of(tmp_path, "version: 1\nname: s\nsteps:\n  - {id: a, uses: noop}\n")
    nr: NodeRun = state.runs["a"]
    nr.base = nr.attempt = 2  # two attempts in an earlier run
    assert nr.change(State.PENDING).last_attempt is None
    done = Completion(1, True, "1", None, "", "", 0, 1.0, 2.0, "w")
    nr.attempt, nr.attempts = 3, [done]
    assert nr.change(State.RUNNING).last_attempt == done


def test_a_change_record_has_every_field_in_its_place(tmp_path: Path) -> None:
    """change() makes the record's tuple directly (not through StepChanged's own __new__): a
    field added to StepChanged and not given there would shift or drop the fields after it."""
    state = state_of(tmp_path, "version: 1\nname: s\nsteps:\n  - {id: a, uses: noop}\n")
    nr: NodeRun = state.runs["a"]
    nr.cache_files, nr.process = {"out.txt": "ab12"}, (4321, "99")
    record = nr.change(State.PENDING)
    assert type(record) is StepChanged
    assert len(record) == len(StepChanged._fields)
    assert record == StepChanged(*record)
    assert (record.id, record.old, record.process) == ("a", State.PENDING, (4321, "99"))
    assert (record.cache_files, record.group_kind) == ({"out.txt": "ab12"}, None)


# -- the chains switch ----------------------------------------------------------------------------


class Following(InlineExecutor):
    """The inline executor, saying it can queue follow-ups; it keeps what it was handed."""

    def __init__(self) -> None:
        super().__init__([])
        self.handed: list[Any] = []

    def can_follow(self, attempt_id: int) -> bool:
        return True

    def submit(self, tasks: list[Any]) -> None:
        self.handed.extend(tasks)
        super().submit(tasks)


CHAIN = """
version: 1
name: chain
steps:
  - {id: s0, uses: noop}
  - {id: s1, uses: noop, needs: s0}
  - {id: s2, uses: noop, needs: s1}
  - {id: s3, uses: noop, needs: s2}
"""


@pytest.mark.parametrize("plain", [False, True])
def test_runner_no_shortcuts_turns_chains_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plain: bool
) -> None:
    if plain:
        monkeypatch.setenv("PIPELINE_RUNNER_NO_SHORTCUTS", "1")
    else:
        monkeypatch.delenv("PIPELINE_RUNNER_NO_SHORTCUTS", raising=False)
    executor = Following()
    recorder = Recorder()
    plan = plan_of(tmp_path, CHAIN)
    sched = Scheduler(plan, executor, "r1", tmp_path / "run", {}, [recorder], Options())
    result = sched.run()
    assert result.status == "succeeded"
    assert recorder.started() == ["s0", "s1", "s2", "s3"]
    followers = [t.node_id for t in executor.handed if t.after]
    assert followers == ([] if plain else ["s1", "s2", "s3"])
    assert [t.attempt for t in executor.handed] == [1, 1, 1, 1]


# -- kinds ----------------------------------------------------------------------------------------


def test_kinds_are_their_plain_strings_wherever_they_go(tmp_path: Path) -> None:
    from pipeline_runner.kinds import FailureKind, GroupKind, RunStatus

    assert FailureKind.TIMEOUT in frozenset({"timeout"}) and "crash" in {FailureKind.CRASH}
    assert f"[{FailureKind.BREAKER}]" == "[breaker]" and str(RunStatus.FAILED) == "failed"
    assert json.dumps([GroupKind.FOR_EACH]) == '["for_each"]'
    db = sqlite3.connect(tmp_path / "k.db")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (?)", (RunStatus.CANCELLED,))
    assert db.execute("SELECT x, typeof(x) FROM t").fetchone() == ("cancelled", "text")
    # the run's status, as the scheduler gives it
    _, _, result = run(tmp_path, "version: 1\nname: k\nsteps:\n  - {id: a, uses: noop}\n")
    assert result.status is RunStatus.SUCCEEDED and result.status == "succeeded"


def test_a_retry_started_in_the_same_turn_keeps_its_failed_attempt_row(tmp_path: Path) -> None:
    # A retry with no delay starts in the turn its first attempt failed in.  The store reads
    # each change as it was made: attempt 1 keeps its row and its `retrying` event (read at
    # the end of the turn, the step already on attempt 2, both were given to attempt 2).
    from pipeline_runner.store import db_path, open_store
    from pipeline_runner.storesink import StoreSink

    store = open_store(tmp_path / "state")
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: r
        steps:
          - {id: a, retries: {max: 1, delay: 0s}, uses: shell, with: {cmd: "exit 3"}}
        """,
    )
    sink = StoreSink(store, {}, "{}", "h", "f", Masker([]))
    Scheduler(plan, InlineExecutor([]), "r1", tmp_path / "run", {}, [sink], Options()).run()
    store.close()
    db = sqlite3.connect(db_path(tmp_path / "state"))
    attempts = db.execute("SELECT attempt, state, exit_code FROM attempts ORDER BY attempt")
    assert attempts.fetchall() == [(1, "failed", 3), (2, "failed", 3)]
    events = db.execute(
        "SELECT state, attempt FROM events WHERE step_id = 'a' ORDER BY time, rowid"
    ).fetchall()
    assert events == [("running", 1), ("retrying", 1), ("running", 2), ("failed", 2)]


def test_the_store_groups_turns_into_one_commit_unless_a_change_cannot_wait(
    tmp_path: Path,
) -> None:
    """Group commit: a turn's changes are kept (turn() is False, so later readers wait) until
    COMMIT_INTERVAL has passed since the first; a started process group is committed at once.
    Without the shortcut every turn commits."""
    from pipeline_runner import defaults
    from pipeline_runner.store import db_path, open_store
    from pipeline_runner.storesink import StoreSink

    store = open_store(tmp_path / "state")
    plan = plan_of(tmp_path, "version: 1\nname: s\nsteps:\n  - {id: a, uses: noop}\n")
    sink = StoreSink(store, {}, "{}", "h", "f", Masker([]))
    sink.group = True
    pending = record("a", State.PENDING, State.PENDING, finished=None)
    sink.run_started(RunInfo("r1", plan, tmp_path, "inline", 1, {"a": pending}, 99.0))

    def stored() -> str:
        db = sqlite3.connect(db_path(tmp_path / "state"))
        try:
            return str(db.execute("SELECT state FROM steps").fetchone()[0])
        finally:
            db.close()

    sink.changed(record("a", State.RUNNING, State.PENDING))
    due = sink.commit_due()
    assert due is not None and 0 < due <= defaults.COMMIT_INTERVAL
    assert sink.turn() is False and stored() == "pending"
    # Its process group is news that cannot wait: a later resume may have to stop it.
    sink.changed(record("a", State.RUNNING, State.RUNNING, process=(4242, "77")))
    assert sink.commit_due() == 0.0
    assert sink.turn() is True and stored() == "running"
    assert sink.commit_due() is None
    sink.changed(record("a", State.SUCCEEDED, State.RUNNING))
    sink.oldest -= defaults.COMMIT_INTERVAL  # the interval has passed
    assert sink.turn() is True and stored() == "succeeded"
    sink.group = False  # PIPELINE_RUNNER_NO_SHORTCUTS=1: every turn commits
    sink.changed(record("a", State.FAILED, State.SUCCEEDED))
    assert sink.turn() is True and stored() == "failed"
    store.close()
