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
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import compensation, expansion, limits, retrying, runsetup, runsignals
from .chains import Chains
from .changes import RunInfo, RunResult, Sink, StepChanged
from .errors import EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_STORE, TemplateError
from .executors import Event, Executor, Returned
from .messages import Completion, Started, Task
from .model import NodeKind, Plan, Scope, State, has_deferred
from .runstate import NodeRun, Options, RunState, group_output, group_state
from .runtime import Renderer
from .tasks import TaskMaker, cache_hit, cache_key_problem, record_outputs

if TYPE_CHECKING:
    import random

__all__ = ["Options", "RunInfo", "RunResult", "Scheduler", "Sink"]

MAX_TIMER_WAIT = 3600.0  # seconds the loop waits for a timer before it looks again


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
        self.tasks = TaskMaker(plan, run_id, str(run_dir), secrets, self.options.grace)
        self.failed_before = False  # resume --only: a step left out had not succeeded
        self.signals: list[int] = []
        self.finally_released = False
        self.storage_error: str | None = None
        self.compensations: list[str] | None = None  # queued compensation nodes, once built
        base = {"params": plan.params, "env": plan.env, "pipeline": {"name": plan.name}}
        self.renderer = Renderer(base, dict(secrets), self.state.lookup)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.logs_dir = str(run_dir / "logs")

    # -- set-up ---------------------------------------------------------------------------------

    def emit(self, change: StepChanged) -> None:
        for sink in self.sinks:
            sink.changed(change)

    def log_path(self, nid: str) -> str:
        return f"{self.logs_dir}/{nid}.log"

    def render_for(self, nr: NodeRun, value: Any) -> Any:
        """A template value of `nr`'s, rendered with the `run` names of its next attempt."""
        return self.renderer.value(value, nr.node.scope, self.run_context(nr))

    def setup(self) -> None:
        runsetup.build(self.state, self.options, self.log_path)
        self.failed_before = runsetup.failed_outside(self.state, self.options)
        runsetup.keep_recorded(self.state, self.options, self.render_for)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = time.time()
        self.setup()
        info = RunInfo(
            self.run_id,
            self.plan,
            self.run_dir,
            self.executor.name,
            getattr(self.executor, "size", 1),
            MappingProxyType({nid: nr.change(nr.state) for nid, nr in self.state.runs.items()}),
            started,
        )
        for sink in self.sinks:
            sink.run_started(info)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous = runsignals.install(wake_w, self.signals, self.executor.kill)
        # The handlers stay until the end of the run is recorded: a signal arriving while the
        # workers close or the store commits is noted (a second one still kills the workers at
        # once), never a KeyboardInterrupt or a default SIGTERM death that leaves the run
        # `running` in the store.
        try:
            try:
                self.executor.start()
                self.start_roots()
                while self.state.unfinished > 0:
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
            self.became_ready(nr)
        self.check_finally()
        self.dispatch()
        self.flush()

    def turn(self, wake_r: int) -> None:
        """Wait, apply what happened, hand out what became ready, then commit it all at once:
        the store learns of new attempts in the same transaction as the completions that made
        them ready, before the loop waits again."""
        state = self.state
        timeout = None
        if state.timers:
            # A retry may wait longer than the operating system's waits can (2**31 ms, with a
            # delay of up to 24 days plus jitter): the loop wakes each hour and looks again.
            timeout = min(max(state.timers[0][0] - time.monotonic(), 0.0), MAX_TIMER_WAIT)
        if not state.running and not state.ready and not state.timers:
            self.stall()
            return
        events = self.executor.wait(timeout, wake_r)
        runsignals.drain(wake_r)
        for event in events:
            self.handle(event)
        for nr in retrying.due_retries(state, time.monotonic()):
            if nr.state is State.RETRYING and not state.stopping(nr):
                self.retry(nr)
        if self.signals and (
            not state.cancelling or (self.hard_signal() and not state.hard_cancel)
        ):
            self.cancel()
        if not state.cancelling or (self.finally_released and not state.hard_cancel):
            self.dispatch()
        self.flush()

    def abandon(self) -> None:
        try:
            self.executor.cancel(self.options.grace)
        except Exception:  # the error on its way out matters more than this one
            pass

    def stall(self) -> None:
        """Nothing runs and nothing can: a bug, but never a hang. Cancel what is left."""
        for nr in self.state.runs.values():
            if not nr.state.finished:
                nr.error = "never became ready (internal scheduling error)"
                self.done(nr, State.CANCELLED, propagate=False)
        self.flush()

    def flush(self) -> None:
        for sink in self.sinks:
            sink.turn()

    # -- readiness ------------------------------------------------------------------------------

    def became_ready(self, nr: NodeRun) -> None:
        node = nr.node
        if nr.state is not State.PENDING:
            return
        if nr.follow_id:
            self.start_follow_up(nr)
        elif node.kind is NodeKind.GROUP:
            self.complete_group(nr)
        elif node.kind is NodeKind.MAPPED and not nr.members:
            self.expand_mapped(nr)
        elif node.kind is NodeKind.MAPPED:
            self.complete_group(nr)
        else:
            self.prepare(nr)

    def run_context(self, nr: NodeRun) -> dict[str, Any]:
        return {"run": {"id": self.run_id, "attempt": nr.attempt + 1, "status": self.main_status()}}

    def prepare(self, nr: NodeRun) -> None:
        node = nr.node
        with_, env = node.with_, node.env
        try:
            if node.condition is not None or has_deferred(with_) or has_deferred(env):
                extra = self.run_context(nr)
                if node.condition is not None:
                    ctx = self.renderer.context(node.scope, extra)
                    from .templating import evaluate_condition

                    if not evaluate_condition(node.condition, ctx):
                        self.done(nr, State.SKIPPED)
                        return
                with_, env = self.tasks.render(self.renderer, nr, extra)
        except TemplateError as exc:
            self.fail_now(nr, "error", f"template error: {exc}")
            return
        if node.cache is not None and self.options.cache is not None and self.cached(nr, with_):
            return
        nr.task = self.tasks.make(nr, with_, env)
        self.state.enqueue(nr)

    def retry(self, nr: NodeRun) -> None:
        """A retry's delay has passed: render `with` and `env` again for the new attempt
        (`run.attempt` is its number, `run.status` the status now), then queue it."""
        node = nr.node
        if has_deferred(node.with_) or has_deferred(node.env):
            try:
                with_, env = self.tasks.render(self.renderer, nr, self.run_context(nr))
            except TemplateError as exc:
                nr.attempt += 1  # the new attempt is the one that failed
                self.fail_now(nr, "error", f"template error: {exc}")
                return
            nr.task = self.tasks.make(nr, with_, env)
        self.state.enqueue(nr)

    def cached(self, nr: NodeRun, with_: Any) -> bool:
        """Look the step up in the cache; on a hit it is done, with the stored output."""
        assert self.options.cache is not None
        problem = cache_key_problem(self.state, nr, with_, lambda v: self.render_for(nr, v))
        if problem is not None:
            self.fail_now(nr, "error", f"cache: {problem}")
            return True
        if not cache_hit(nr, self.options.cache, self.options.use_cache, self.plan.pipeline_dir):
            return False
        self.done(nr, State.CACHED)
        return True

    # -- dispatch -------------------------------------------------------------------------------

    def dispatch(self) -> None:
        state = self.state
        capacity = self.executor.capacity()
        batch: list[Task] = []
        while capacity > 0 and state.ready:
            entry = heapq.heappop(state.ready)
            nr = state.runs[entry[3]]
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
        nr.attempt += 1
        nr.finished = time.time()
        nr.kind, nr.exit_code = "breaker", None
        nr.error = self.breakers.open_message(pool)
        self.state.mark(nr, State.RUNNING)
        self.final_failure(nr)
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
        return nr.task._replace(attempt_id=attempt_id, attempt=nr.attempt)

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
            self.done(nr, State.CANCELLED, propagate=False)
        else:
            self.state.mark(nr, State.PENDING)
            self.state.enqueue(nr)

    def completed(self, nr: NodeRun, event: Completion) -> None:
        self.give_back(nr)
        nr.attempts.append(event)
        if self.chains.can_follow is not None and (
            nr.started is None or event.started < nr.started
        ):
            nr.started = event.started  # a follow-up started before the runner learned of it
        nr.worker = event.worker
        nr.process = None
        if event.ok:
            nr.output_json = event.output_json or "null"
            nr.output = json.loads(nr.output_json)
            nr.finished = event.finished
            # A success after failed attempts: those are in the attempts, not on the step.
            nr.kind, nr.error, nr.traceback, nr.exit_code = None, "", "", event.exit_code
            record_outputs(nr, self.plan.pipeline_dir)
            self.breakers.record(nr.node, True)
            self.done(nr, State.SUCCEEDED)
            return
        self.chains.drop(nr)
        nr.kind, nr.error, nr.traceback = event.kind, event.message, event.traceback
        nr.exit_code = event.exit_code
        if event.kind == "cancelled":
            nr.finished = event.finished
            self.done(nr, State.CANCELLED, propagate=False)
            return
        self.breakers.record(nr.node, False)
        self.attempt_failed(nr, event.finished)

    def attempt_failed(self, nr: NodeRun, finished: float) -> None:
        kind = nr.kind or "error"
        if kind == "storage":
            # The disk is full or a size limit was hit: retrying cannot help, and starting
            # other steps would only fail the same way.  Stop the run; exit code 3.
            self.storage_error = nr.error
            nr.finished = finished
            self.final_failure(nr)
            if not self.state.cancelling:
                self.cancel()
            return
        if retrying.may_retry(nr, kind):
            if self.state.stopping(nr):
                # Retries left, but the run is being cancelled: its next attempt never starts,
                # as for a step waiting for its retry when the cancellation came.
                nr.finished = finished
                self.done(nr, State.CANCELLED, propagate=False)
                return
            if self.rng is None:
                import random

                self.rng = random.Random(self.options.seed)
            retrying.schedule_retry(self.state, nr, self.rng)
            self.state.mark(nr, State.RETRYING)
            return
        nr.finished = finished
        self.final_failure(nr)

    def final_failure(self, nr: NodeRun) -> None:
        if nr.node.continue_on_error:
            self.done(nr, State.FAILED_ALLOWED)
            return
        self.done(nr, State.FAILED)
        # A `finally` step's failure fails the run but stops nothing: they all run to their end.
        if self.options.fail_fast and not self.state.cancelling and not nr.node.is_finally:
            self.cancel()

    def fail_now(self, nr: NodeRun, kind: str, message: str) -> None:
        """Fail a step before its process starts (a template that cannot render, a broken
        for_each).  This is the step's attempt: the first one reads `attempt 1`, never 0."""
        if nr.attempt == nr.base:
            nr.attempt += 1
        nr.kind, nr.error = kind, message
        nr.finished = time.time()
        self.final_failure(nr)

    # -- the end of a node ----------------------------------------------------------------------

    def done(self, nr: NodeRun, state: State, propagate: bool = True, quiet: bool = False) -> None:
        """`nr` reaches its final `state`: finish it, then wake or fail its dependents."""
        self.state.finish(nr, state, quiet=quiet)
        if nr.compensates is not None:
            self.next_compensation()
        if nr.state.ok:
            for child in self.state.dependents_of(nr.id):
                child.waiting -= 1
                if (
                    child.waiting == 0
                    and child.state is State.PENDING
                    and (not self.state.cancelling or child.node.is_finally or child.follow_id)
                ):
                    self.became_ready(child)
        elif propagate:
            self.fail_downstream(nr)
        elif not nr.node.is_finally:
            # Cancelled: a `finally` step that needs it stops waiting for it (as in cancel).
            self.release_finally_needs(nr)
        self.check_finally()

    def release_finally_needs(self, nr: NodeRun) -> None:
        for child in self.state.dependents_of(nr.id):
            if child.node.is_finally:
                self.need_finished(child)

    def fail_downstream(self, nr: NodeRun) -> None:
        """Mark everything that needs `nr` (directly or not) upstream_failed.  A `finally`
        step is not failed by a main step: that need only gives it the step's output, so it
        just stops waiting for it."""
        stack = [(nr, dep) for dep in self.state.dependents_of(nr.id)]
        while stack:
            parent, child = stack.pop()
            if child.state is not State.PENDING:
                continue
            if parent.node.group == child.id:
                self.member_not_ok(child, parent)
                continue
            if child.node.is_finally and not parent.node.is_finally:
                self.need_finished(child)
                continue
            child.error = f"needs {nr.id}, which {nr.state.value.replace('_', ' ')}"
            self.state.finish(child, State.UPSTREAM_FAILED)
            stack.extend((child, dep) for dep in self.state.dependents_of(child.id))

    def member_not_ok(self, group: NodeRun, member: NodeRun) -> None:
        """A member of `group` ended in a state that stops dependents.  A failed member makes
        the group `failed` at once (see group_state: nothing the other members do can change
        that); otherwise the group's state is decided when all its members are done."""
        if member.state is not State.FAILED:
            self.need_finished(group)
            return
        group.error = f"{member.id} failed"
        group.finished = time.time()
        self.done(group, State.FAILED)

    def need_finished(self, child: NodeRun) -> None:
        child.waiting -= 1
        if child.waiting == 0 and child.state is State.PENDING:
            self.became_ready(child)

    def check_finally(self) -> None:
        if self.finally_released or self.state.main_unfinished > 0:
            return
        if self.compensations is None and self.start_compensations():
            return
        if self.compensations:
            return
        self.finally_released = True
        # `finally` steps may read a kept group whose members ran again
        runsetup.kept_groups(self.state, self.render_for)
        for nr in compensation.release_finally(self.state):
            self.became_ready(nr)

    def start_compensations(self) -> bool:
        """When the run failed, undo what succeeded (see compensation.py), one at a time."""
        self.compensations = []
        state = self.state
        if not self.options.compensate or state.cancelling or not state.main_failed:
            return False
        for nr in compensation.to_undo(state):
            comp = compensation.compensation_node(state, nr)
            run = NodeRun(comp, log_path=self.log_path(comp.id), compensates=nr.id)
            state.add(run)
            state.dependents[comp.id] = []
            self.compensations.append(comp.id)
            state.mark(run, State.PENDING)
        if not self.compensations:
            return False
        self.next_compensation()
        return True

    def next_compensation(self) -> None:
        if self.compensations:
            self.prepare(self.state.runs[self.compensations.pop(0)])

    # -- groups ---------------------------------------------------------------------------------

    def complete_group(self, nr: NodeRun) -> None:
        runs = self.state.runs
        members = [runs[m] for m in (nr.members or nr.node.members) if m in runs]
        state = group_state(members)
        if not state.ok:  # a need of the group failed: its members are upstream_failed
            nr.error = next((m.error for m in members if not m.state.ok), "")
        else:
            try:
                nr.output, nr.outputs = group_output(nr, members, lambda v: self.render_for(nr, v))
            except TemplateError as exc:
                self.fail_now(nr, "error", f"template outputs: {exc}")
                return
        nr.started = min((m.started for m in members if m.started), default=None)
        nr.finished = time.time()
        self.done(nr, state)

    def expand_mapped(self, nr: NodeRun) -> None:
        """A run-time for_each: render the list and create one step per item."""
        node = nr.node
        assert node.for_each is not None
        try:
            items = self.render_for(nr, node.for_each.items)
            nodes = expansion.instances(self.state, node, items, self.render_key(nr))
        except TemplateError as exc:
            self.fail_now(nr, "error", f"for_each: {exc}")
            return
        if not nodes:
            self.complete_group(nr)
            return
        nr.members = [inst.id for inst in nodes]
        nr.waiting = len(nodes)
        state, preset = self.state, self.options.preset
        keep = bool(preset) and expansion.upstream_kept(state, preset, node)
        children = []
        for inst in nodes:
            child = NodeRun(inst, log_path=self.log_path(inst.id))
            child.attempt = child.base = self.options.attempts_done.get(inst.id, 0)
            state.add(child)
            state.dependents[inst.id] = [node.id]
            state.depth[inst.id] = state.depth.get(node.id, 1)
            if not (keep and expansion.reuse(child, preset)):
                state.mark(child, State.PENDING)
            children.append(child)
        for child in children:
            if child.reused:
                self.done(child, child.state, quiet=True)
            else:
                self.became_ready(child)

    def render_key(self, nr: NodeRun) -> Any:
        def render(scope: Scope) -> str:
            from .templating import compile_value

            assert nr.node.for_each is not None and nr.node.for_each.key is not None
            ctx = self.renderer.context(scope, self.run_context(nr))
            return str(compile_value(nr.node.for_each.key).render(ctx))

        return render

    # -- cancellation ---------------------------------------------------------------------------

    def hard_signal(self) -> bool:
        """A second stop signal, of any kind, means stop now: a second Ctrl-C, or the SIGTERM
        a CI system sends when its SIGINT did not end the job soon enough (GitHub Actions
        SIGKILLs the tree 2.5 s later; with a long `--grace` the first signal's cancellation
        would still be waiting, and nothing of it would be recorded)."""
        return len(self.signals) >= 2

    def cancel(self) -> None:
        """Stop scheduling; stop running attempts; what never started is cancelled.  `finally`
        steps still run afterwards, unless a second Ctrl-C asked to stop at once."""
        state = self.state
        state.cancelling = True
        state.hard_cancel = self.hard_signal()
        grace = 0.0 if state.hard_cancel else self.options.grace
        for event in self.executor.cancel(grace):
            self.handle(event)
        for nr in list(state.runs.values()):
            if nr.node.is_finally and not state.hard_cancel:
                continue
            if nr.state in (State.PENDING, State.RETRYING, State.RUNNING):
                self.cancel_node(nr)
        state.ready = [
            e for e in state.ready if not state.hard_cancel and state.runs[e[3]].node.is_finally
        ]
        heapq.heapify(state.ready)
        state.timers = [t for t in state.timers if not state.stopping(state.runs[t[1]])]
        heapq.heapify(state.timers)
        self.check_finally()

    def cancel_node(self, nr: NodeRun) -> None:
        state = self.state
        nr.error = nr.error or "run was cancelled"
        if nr.state is State.RUNNING:
            state.running -= 1
            limits.hold(state, nr.node, -1)
            trial = self.breakers.end_trial(nr.node)
            if trial is not None:
                limits.release_all(state, trial)
            # A completion of its attempt that comes later is not applied again.
            for aid in [a for a, nid in state.by_attempt.items() if nid == nr.id]:
                del state.by_attempt[aid]
        state.finish(nr, State.CANCELLED)
        if not nr.node.is_finally:
            self.release_finally_needs(nr)

    # -- the end --------------------------------------------------------------------------------

    def main_status(self) -> str:
        """`run.status` for `finally` steps: what `finish` will record.  A run stopped by a
        signal is `cancelled`; one that `--fail-fast` stopped ends `failed`, as its exit says."""
        state = self.state
        if state.cancelling and self.signals:
            return "cancelled"
        failed = state.main_failed or self.failed_before or state.cancelling
        return "failed" if failed else "succeeded"

    def status(self, signum: int | None) -> tuple[str, int]:
        """The run's status and exit code, before its outputs are rendered."""
        failed = self.failed_before or any(
            nr.state in (State.FAILED, State.UPSTREAM_FAILED) for nr in self.state.runs.values()
        )
        if self.storage_error is not None:
            return "failed", EXIT_STORE
        if signum is not None:
            exits = {int(signal.SIGTERM): EXIT_SIGTERM, int(signal.SIGINT): EXIT_SIGINT}
            return "cancelled", exits.get(int(signum), 128 + int(signum))
        if failed or self.state.cancelling:
            return "failed", EXIT_FAILED
        return "succeeded", EXIT_OK

    def finish(self, started: float, signum: int | None) -> RunResult:
        """Record and return the result; `signum` is the signal that stopped the run, if one
        came before its last step finished."""
        status, code = self.status(signum)
        outputs: dict[str, Any] = {}
        runsetup.kept_groups(self.state, self.render_for)
        nodes = self.state.all_nodes()
        # A partial run (`run --only`) has no outputs: they may read steps it never ran, and
        # that is not a failure. `resume --only` keeps the rest of the run, so it has them.
        if status == "succeeded" and self.plan.outputs and all(n in nodes for n in self.plan.nodes):
            scope = Scope(aliases=self.plan.aliases)
            try:
                outputs = self.renderer.value(
                    dict(self.plan.outputs), scope, {"run": {"id": self.run_id, "status": status}}
                )
            except TemplateError as exc:
                outputs = {"error": f"outputs could not be rendered: {exc}"}
                status, code = "failed", EXIT_FAILED
        counts: dict[str, int] = {}
        for nr in nodes.values():
            if nr.node.kind is NodeKind.STEP:
                counts[nr.state.value] = counts.get(nr.state.value, 0) + 1
        records = MappingProxyType({nid: nr.change(nr.state) for nid, nr in nodes.items()})
        result = RunResult(
            self.run_id, status, code, records, outputs, started, time.time(), signum, counts
        )
        for sink in self.sinks:
            sink.run_finished(result)
        return result
