"""The ready-queue loop: hands ready steps to the executor, applies what comes back.

Modelled on dask/local.py.  The plan is constant; the run state (runstate.py) is private to
this loop and the decision modules it asks (limits, chains, retrying, compensation, expansion).
Each node keeps a count of unfinished needs; finishing a node decrements its dependents'
counts, and a node whose count reaches zero becomes ready, so a whole run costs
O(nodes + edges).  Ready steps wait in a heap ordered by priority, then the longest chain of
steps still behind them (critical path first), then file order.

One turn of the loop: hand ready steps to the executor up to its capacity, wait for
completions (or the next retry, or a signal), apply them, then tell the sinks (the store commits
once per turn, the reporters print).  Readers see frozen change records (changes.py).

Signals: the first SIGINT/SIGTERM/SIGHUP stops scheduling and cancels running attempts (SIGTERM
to their process groups, SIGKILL after the grace period); a second one (Ctrl-C again, or the
SIGTERM a CI system sends after its SIGINT) kills at once.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import cancelling, gating, gcpolicy, limits, procs, retrying, runsetup, runsignals
from .chains import Chains
from .changes import RunInfo, RunResult, Sink, StepChanged
from .errors import EXIT_FAILED, TemplateError
from .executors import Event, Executor, Returned
from .kinds import FailureKind, RunStatus
from .messages import Completion, Started, Task, numbered
from .model import Plan, State
from .paths import RunPaths
from .records import node_records
from .runfacts import Deadline
from .runoutcome import Ending, run_status
from .runstate import NodeRun, Options, RunState, step_counts
from .runtime import Renderer
from .tasks import TaskMaker, record_outputs
from .transitions import Transitions

if TYPE_CHECKING:
    import random

__all__ = ["Options", "RunInfo", "RunResult", "Scheduler", "Sink"]


class Scheduler:
    def __init__(
        self,
        plan: Plan,
        executor: Executor,
        run_id: str,
        run_dir: Path,
        secrets: Mapping[str, str],
        sinks: Sequence[Sink],
        options: Options | None = None,
    ) -> None:
        self.plan = plan
        self.executor = executor
        self.run_id = run_id
        self.run_dir = run_dir
        self.sinks = list(sinks)
        self.options = options or Options()
        self.state = RunState(plan, self.emit)
        self.rng: random.Random | None = None  # made when a retry first needs jitter
        self.chains = Chains(self.state, getattr(executor, "can_follow", None))
        self.breakers = retrying.Breakers(dict(plan.breakers))
        tasks = TaskMaker(
            plan, run_id, str(run_dir), secrets, self.options.grace, self.options.trace
        )
        self.tasks = tasks
        self.signals: list[int] = []
        self.storage_error: str | None = None
        self.parked = False  # only approval gates waiting (and what needs them) are left
        self.deadline = Deadline(None)  # the pipeline's `timeout`, set when the run starts
        base = {"params": plan.params, "env": plan.env, "pipeline": {"name": plan.name}}
        renderer = Renderer(base, dict(secrets), self.state.lookup)
        hooks = (self.start_follow_up, self.cancel, self.halt)
        self.flow = Transitions(self.state, self.options, renderer, tasks, hooks)
        self.flow.signals = self.signals
        folder = RunPaths(run_dir)
        folder.logs.mkdir(parents=True, exist_ok=True)
        self.flow.logs_dir = str(folder.logs)

    # -- set-up ---------------------------------------------------------------------------------

    def emit(self, change: StepChanged) -> None:
        for sink in self.sinks:
            sink.changed(change)

    def setup(self) -> None:
        flow = self.flow
        runsetup.build(self.state, self.options, flow.log_path)
        flow.failed_before = runsetup.failed_outside(self.state, self.options)
        runsetup.keep_recorded(self.state, self.options, flow.render_for)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = self.flow.started = time.time()
        self.deadline = Deadline(self.plan.timeout)
        self.setup()
        # The nodes' run state lives as long as the run, as the plan does (engine.py): the
        # collector's full passes during the run leave it alone.
        gcpolicy.for_the_run()
        info = _run_info(self, started)
        wake_r, wake_w = runsignals.wake_pipe()
        previous = runsignals.install(wake_w, self.signals, self.executor.kill)
        # The handlers stay until the end of the run is recorded: a signal arriving while the
        # workers close or the store commits is noted (a second one still kills the workers at
        # once), never a KeyboardInterrupt or a default SIGTERM death that leaves the run
        # `running` in the store.  They come before the run is recorded: once `runner cancel`
        # can see the run, its signal is a clean cancellation.
        try:
            for sink in self.sinks:
                sink.run_started(info)
            del info  # a record of every node: not held through the run (no sink keeps it)
            try:
                self.executor.start()
                self.start_roots()
                while self.state.unfinished > 0 and not self.parked:
                    self.turn(wake_r)
                stopped_by = self.signals[0] if self.signals else None
            except BaseException:
                # The run cannot go on (its store cannot be written): stop what runs and what
                # workers hold queued, as for a Ctrl-C, rather than let it finish unrecorded.
                self.abandon()
                raise
            finally:
                self.executor.close()
            return self.finish(started, stopped_by)
        finally:
            runsignals.restore(previous)
            os.close(wake_r)
            os.close(wake_w)

    def start_roots(self) -> None:
        # Roots only, taken before any is started: a root that finishes at once (skipped,
        # cached) readies its dependents itself.
        runs = self.state.runs.values()
        roots = [nr for nr in runs if nr.state is State.PENDING and nr.waiting == 0]
        for nr in roots:
            self.flow.became_ready(nr)
        self.flow.check_finally()
        self.dispatch()
        self.flush()

    def turn(self, wake_r: int) -> None:
        """Wait, apply what happened, hand out what became ready, then commit it all at once:
        the store learns of new attempts in the same transaction as the completions that made
        them ready, before the loop waits again."""
        state = self.state
        timeout = self.flow.gates.wait_limit(self.deadline.wait(retrying.next_wait(state)))
        if not state.running and not state.ready and not state.timers:
            if self.flow.gates.waiting:
                self.park()
            else:
                self.stall()
            return
        events = self.executor.wait(self.commit_wait(timeout), wake_r)
        runsignals.drain(wake_r)
        for event in events:
            self.handle(event)
        if self.flow.gates.due():
            gating.answer_gates(self.flow)
        for nr in retrying.due_retries(state, time.monotonic()):
            if nr.state is State.RETRYING and not state.stopping(nr):
                self.flow.retry(nr)
        if self.signals and (
            not state.cancelling or (runsignals.hard(self.signals) and not state.hard_cancel)
        ):
            self.cancel()
        flow = self.flow
        ended = state.cancelling or flow.compensations is not None or flow.finally_released
        if self.deadline.passes(ended):
            self.cancel(self.deadline.reason())
        # While cancelling, what is ready is `finally` steps (once released) and steps whose
        # `if` calls always() or cancelled(): cancel() dropped the rest.
        if not state.cancelling or (
            not state.hard_cancel and (self.flow.finally_released or state.ready)
        ):
            self.dispatch()
        self.flush()

    def abandon(self) -> None:
        try:
            self.executor.cancel(self.options.grace)
        except Exception:  # the error on its way out matters more than this one
            pass

    def park(self) -> None:
        """Nothing runs and nothing can but waiting approval gates: look for their answers a
        last time, then stop the run `waiting` (resumed once they are answered)."""
        if gating.only_gates_left(self.flow):
            self.parked = True
        else:
            self.dispatch()
        self.flush()

    def stall(self) -> None:
        """Nothing runs and nothing can: a bug, but never a hang. Cancel what is left."""
        for nr in self.state.runs.values():
            if not nr.state.finished:
                nr.error = "never became ready (internal scheduling error)"
                self.flow.done(nr, State.CANCELLED, propagate=False)
        self.flush()

    def flush(self) -> None:
        """The turn's changes to the readers, the store first: when it keeps them for a later
        commit (group commit), the others are not told of them before that."""
        for sink in self.sinks:
            if sink.turn() is False:
                return

    def commit_wait(self, timeout: float | None) -> float | None:
        """`timeout`, shortened to when a reader must have its turn (the store's group commit:
        what it keeps is committed even while every step runs long)."""
        for sink in self.sinks:
            due = getattr(sink, "commit_due", None)  # only a store has changes to commit
            wait = due() if due is not None else None
            if wait is not None and (timeout is None or wait < timeout):
                timeout = wait
        return timeout

    # -- dispatch -------------------------------------------------------------------------------

    def dispatch(self) -> None:
        state = self.state
        capacity = self.executor.capacity()
        batch: list[Task] = []
        while capacity > 0 and state.ready:
            entry = heapq.heappop(state.ready)
            nr = state.runs[entry[3]]
            if nr.state.finished:  # cancelled while it waited (a fail_fast sibling)
                continue
            limit = limits.limit_reached(state, nr.node)
            if limit is not None:
                limits.block(state, limit, entry)
                continue
            if self.breaker_stops(nr, entry):
                continue
            batch.append(self.start_attempt(nr))
            capacity -= 1
            batch.extend(
                self.chains.chain(nr, batch[-1].attempt_id, self.tasks.plain, placed=False)
            )
        if batch:
            self.executor.submit(batch)

    def breaker_stops(self, nr: NodeRun, entry: tuple[int, int, int, str]) -> bool:
        """A pool whose breaker is open fails its steps at once instead of calling them; while
        its half-open trial runs, the pool's other steps wait for its outcome."""
        verdict = self.breakers.verdict(nr, time.monotonic())
        if verdict is retrying.Verdict.WAIT:
            limits.block(self.state, "breaker:" + str(nr.node.pool), entry)
            return True
        if verdict is not retrying.Verdict.OPEN:
            return False
        pool = str(nr.node.pool)
        if retrying.reject_by_breaker(self.state, nr, self.breakers, pool):
            self.state.mark(nr, State.RETRYING)  # `retries.on: [breaker]`: after the cooldown
        else:
            self.flow.final_failure(nr)
        # it held no slot: let the next waiting step come through
        limits.release(self.state, "pool:" + pool)
        return True

    def take(self, nr: NodeRun, attempt_id: int) -> None:
        """Attempt `attempt_id` of `nr` runs: count it, take its slots, tell the readers."""
        state = self.state
        nr.attempt += 1
        state.by_attempt[attempt_id] = nr.id
        state.running += 1
        limits.hold(state, nr.node, +1)
        nr.started = nr.started or time.time()
        state.mark(nr, State.RUNNING)

    def give_back(self, nr: NodeRun) -> None:
        """An attempt of `nr` ended: free its slots (and its pool's half-open trial)."""
        self.state.running -= 1
        limits.hold(self.state, nr.node, -1)
        trial = self.breakers.end_trial(nr.node)
        if trial is not None:
            limits.release_all(self.state, trial)

    def start_attempt(self, nr: NodeRun) -> Task:
        assert nr.task is not None
        attempt_id = self.state.new_attempt_id()
        self.take(nr, attempt_id)
        return numbered(nr.task, attempt_id, nr.attempt)

    def start_follow_up(self, nr: NodeRun) -> None:
        """The step before `nr` succeeded: its worker has started `nr` already."""
        attempt_id, nr.follow_id = nr.follow_id, 0
        self.chains.followers.pop(attempt_id, None)
        self.take(nr, attempt_id)
        follows = self.chains.extend(nr, attempt_id, self.tasks.plain)
        if follows:
            self.executor.submit(follows)

    # -- completions ----------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if isinstance(event, Started):
            nid = self.state.by_attempt.get(event.attempt_id)
            if nid is not None:
                nr = self.state.runs[nid]
                nr.process = (event.pgid, event.start_time)
                self.state.news(nr)
        elif isinstance(event, Returned):
            self.returned(event.task)
        else:
            nid = self.state.by_attempt.pop(event.attempt_id, None)
            if nid is not None:
                self.completed(self.state.runs[nid], event)

    def returned(self, task: Task) -> None:
        """The executor gave back an attempt it did not start: queue it again."""
        follower = self.chains.followers.pop(task.attempt_id, None)
        if follower is not None:
            self.state.runs[follower].follow_id = 0
            return
        nid = self.state.by_attempt.pop(task.attempt_id, None)
        if nid is None:
            return
        nr = self.state.runs[nid]
        self.chains.drop(nr)
        self.give_back(nr)
        nr.attempt -= 1
        if self.state.cancelling:
            if self.state.cancel_reason is not None:  # the pipeline's timeout, as for the rest
                nr.kind, nr.error = self.state.cancel_reason
            self.flow.done(nr, State.CANCELLED, propagate=False)
        else:
            self.state.mark(nr, State.PENDING)
            self.state.enqueue(nr)

    def completed(self, nr: NodeRun, event: Completion) -> None:
        self.give_back(nr)
        nr.attempts = (*nr.attempts, event)  # a few at most (retries)
        if self.chains.can_follow is not None and (
            nr.started is None or event.started < nr.started
        ):
            nr.started = event.started  # a follow-up started before the runner learned of it
        nr.worker = event.worker
        nr.process = None
        if event.ok:
            output_json = event.output_json or "null"
            output = None if output_json == "null" else json.loads(output_json)
            nr.take(output, output_json, event.outputs_json)
            nr.finished = event.finished
            # A success after failed attempts: those are in the attempts, not on the step.
            nr.kind, nr.error, nr.traceback, nr.exit_code = None, "", "", event.exit_code
            if nr.cache_key:  # a cached step: its outputs fingerprinted for the entry
                record_outputs(nr, self.plan.folder_of(nr.node))
            self.breakers.record(nr.node, True)
            self.flow.done(nr, State.SUCCEEDED)
            return
        self.chains.drop(nr)
        nr.kind, nr.error, nr.traceback = event.kind, event.message, event.traceback
        nr.exit_code = event.exit_code
        if event.kind == FailureKind.CANCELLED:
            if self.state.cancel_reason is not None:
                nr.kind, nr.error = self.state.cancel_reason
            nr.finished = event.finished
            self.flow.done(nr, State.CANCELLED, propagate=False)
            return
        if self.flow.skipped_by_exit(nr, event.finished):
            return
        self.breakers.record(nr.node, False)
        self.attempt_failed(nr, event.finished)

    def attempt_failed(self, nr: NodeRun, finished: float) -> None:
        kind = nr.kind or FailureKind.ERROR
        if kind == FailureKind.STORAGE:
            # The disk is full or a size limit was hit: retrying cannot help, and starting
            # other steps would only fail the same way.  Stop the run; exit code 3.
            self.storage_error = nr.error
            nr.finished = finished
            self.flow.final_failure(nr)
            if not self.state.cancelling:
                self.cancel()
            return
        if retrying.may_retry(nr, kind):
            if self.state.stopping(nr):
                # Retries left, but the run is being cancelled: its next attempt never starts,
                # as for a step waiting for its retry when the cancellation came.
                nr.finished = finished
                self.flow.done(nr, State.CANCELLED, propagate=False)
                return
            if self.rng is None:
                import random

                self.rng = random.Random(self.options.seed)
            retrying.schedule_retry(self.state, nr, self.rng)
            self.state.mark(nr, State.RETRYING)
            return
        nr.finished = finished
        self.flow.final_failure(nr)

    # -- cancellation ---------------------------------------------------------------------------

    def cancel(self, reason: tuple[str, str] | None = None) -> None:
        """Stop scheduling; stop running attempts; what never started is cancelled.  `finally`
        steps still run afterwards, unless a second Ctrl-C asked to stop at once.  `reason`:
        the failure kind and message of the steps stopped (the pipeline's timeout)."""
        state = self.state
        state.cancel_reason = reason
        state.cancelling = True
        state.hard_cancel = runsignals.hard(self.signals)
        grace = 0.0 if state.hard_cancel else self.options.grace
        for event in self.executor.cancel(grace):
            self.handle(event)
        for nr in cancelling.to_cancel(state):
            self.cancel_node(nr)
        cancelling.drop_stopped(state)
        self.flow.check_finally()

    def cancel_node(self, nr: NodeRun) -> None:
        state = self.state
        if state.cancel_reason is not None:
            nr.kind, nr.error = state.cancel_reason
        nr.error = nr.error or "run was cancelled"
        if nr.state is State.RUNNING:
            self.forget_attempt(nr)
        state.finish(nr, State.CANCELLED)
        if not nr.node.is_finally:
            self.flow.release_finally_needs(nr)

    def forget_attempt(self, nr: NodeRun) -> None:
        """Free the slots of `nr`'s running attempt; a completion of it that comes later is
        not applied."""
        self.give_back(nr)
        for aid in [a for a, nid in self.state.by_attempt.items() if nid == nr.id]:
            del self.state.by_attempt[aid]

    def halt(self, nr: NodeRun) -> None:
        """Stop the running attempt of one step (a sibling of a failed `fail_fast` leg): its
        process group is sent SIGTERM, and what the attempt reports is not applied.  A step
        that started no process (a python step) runs to its end, unrecorded."""
        self.chains.drop(nr)
        self.forget_attempt(nr)
        if nr.process is not None:
            procs.term_recorded_group(*nr.process)
            nr.process = None

    # -- the end --------------------------------------------------------------------------------

    def finish(self, started: float, signum: int | None) -> RunResult:
        """Record and return the result; `signum` is the signal that stopped the run, if one
        came before its last step finished."""
        ending = Ending(signum, self.storage_error, self.parked, self.flow.failed_before)
        status, code = run_status(self.state, ending)
        runsetup.kept_groups(self.state, self.flow.render_for)
        nodes = self.state.all_nodes()
        outputs: dict[str, Any] = {}
        # A partial run (`run --only`) has no outputs: they may read steps it never ran, and
        # that is not a failure. `resume --only` keeps the rest of the run, so it has them.
        if (
            status is RunStatus.SUCCEEDED
            and self.plan.outputs
            and all(n in nodes for n in self.plan.nodes)
        ):
            try:
                outputs = self.flow.run_outputs(str(status))
            except TemplateError as exc:
                outputs = {"error": f"outputs could not be rendered: {exc}"}
                status, code = RunStatus.FAILED, EXIT_FAILED
        counts = step_counts(nodes.values())
        records = node_records(nodes)
        when = time.time()
        failure = self.deadline.failure()
        result = RunResult(
            self.run_id, status, code, records, outputs, started, when, signum, counts, failure
        )
        for sink in self.sinks:
            sink.run_finished(result)
        return result


def _run_info(scheduler: Scheduler, started: float) -> RunInfo:
    """The record the readers get when the run starts: every node as it is then."""
    runs = scheduler.state.runs
    executor = scheduler.executor
    return RunInfo(
        scheduler.run_id,
        scheduler.plan,
        scheduler.run_dir,
        executor.name,
        getattr(executor, "size", 1),
        MappingProxyType({nid: nr.change(nr.state) for nid, nr in runs.items()}),
        started,
    )
