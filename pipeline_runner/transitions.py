"""What follows when a node becomes ready or reaches its end: a step is prepared (its
condition and templates rendered, its cache looked up) and queued; a group completes; a
run-time for_each expands; an ended node wakes its dependents or fails them; and when no main
step is left, compensations then `finally` steps are released.

`Transitions` changes the run state only.  What needs the executor (a follow-up that started
on a worker, stopping the run for --fail-fast) it hands to the two functions it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import (
    approvals,
    compensation,
    expansion,
    gating,
    limits,
    runfacts,
    runsetup,
    success_policy,
    triggers,
)
from .errors import TemplateError
from .kinds import FailureKind, RunStatus
from .logfiles import log_file_name
from .loops import Loops
from .model import Node, NodeKind, Plan, Scope, State, has_deferred
from .runstate import NodeRun, Options, RunState, group_output, group_state, judged
from .runtime import Renderer
from .tasks import TaskMaker, cache_hit, cache_key_problem


class Transitions:
    def __init__(
        self,
        state: RunState,
        options: Options,
        renderer: Renderer,
        tasks: TaskMaker,
        hooks: tuple[Callable[[NodeRun], None], Callable[[], None], Callable[[NodeRun], None]],
    ) -> None:
        self.state = state
        self.plan: Plan = state.plan
        self.options = options
        self.renderer = renderer
        self.tasks = tasks
        self.run_id = tasks.run_id
        # start a follow-up; stop the run (--fail-fast); stop one running attempt (fail_fast)
        self.follow, self.stop, self.halt = hooks
        self.logs_dir = ""
        self.signals: list[int] = []  # the stop signals that came (the scheduler's list)
        self.failed_before = False  # resume --only: a step left out had not succeeded
        self.finally_released = False
        self.compensations: list[str] | None = None  # queued compensation nodes, once built
        self.started = time.time()  # the run's (or this resume's) start, for run.duration
        self.loops = Loops(self)
        self.gates = approvals.Gates(options.gates, self.run_id)

    def log_path(self, nid: str) -> str:
        return f"{self.logs_dir}/{log_file_name(nid)}"

    def run_outputs(self, status: str) -> Any:
        """The pipeline's `outputs`, rendered at the end of the run (raises TemplateError)."""
        scope = Scope(aliases=self.plan.aliases)
        run = {"run": {"id": self.run_id, "status": status}}
        return self.renderer.value(dict(self.plan.outputs), scope, run)

    def render_for(self, nr: NodeRun, value: Any) -> Any:
        """A template value of `nr`'s, rendered with the `run` names of its next attempt."""
        return self.renderer.value(value, nr.node.scope, self.run_context(nr))

    def run_context(self, nr: NodeRun) -> dict[str, Any]:
        """The names known at run time besides `steps` and `secrets`: `run` (in `finally` also
        its failures and duration) and `step` (the step's own id and instance key, Airflow's
        `task_instance_key_str`)."""
        run = {"id": self.run_id, "attempt": nr.attempt + 1, "status": self.main_status()}
        node = nr.node
        if node.is_finally:
            run["failures"] = runfacts.failures(self.state.all_nodes().values())
            run["duration"] = round(time.time() - self.started, 3)
        if "step" in node.scope.vars:  # `as: step` or a template parameter `step` hides it
            return {"run": run}
        return {"run": run, "step": {"id": node.id, "key": node.key}}

    def main_status(self) -> str:
        """`run.status` for `finally` steps: what `finish` will record.  A run stopped by a
        signal is `cancelled`; one that `--fail-fast` stopped ends `failed`, as its exit says;
        a failed run whose saga ran ends `compensated` or `compensation_failed`."""
        state = self.state
        if state.cancelling and self.signals:
            return str(RunStatus.CANCELLED)
        failed = state.main_failed or self.failed_before or state.cancelling
        if not failed:
            return str(RunStatus.SUCCEEDED)
        return str(compensation.outcome(state) or RunStatus.FAILED)

    def became_ready(self, nr: NodeRun) -> None:
        node = nr.node
        if nr.state is not State.PENDING:
            return
        if nr.follow_id:
            self.follow(nr)
        elif node.loop is not None and nr.members:
            self.loops.advance(nr)
        elif node.kind is NodeKind.GROUP or (node.kind is NodeKind.MAPPED and nr.members):
            self.complete_group(nr)
        elif self.stopped_by_needs(nr):
            return
        elif node.loop is not None:
            self.loops.advance(nr)
        elif node.kind is NodeKind.MAPPED:
            self.expand_mapped(nr)
        else:
            self.prepare(nr)

    def stopped_by_needs(self, nr: NodeRun) -> bool:
        """Its needs have ended: when its trigger rule does not hold, it ends `skipped` or
        `upstream_failed` here (triggers.py).  A `finally` step and a step whose `if` calls a
        status function have no rule; a compensation is started by the saga alone."""
        node = nr.node
        if node.is_finally or node.status_if or not node.needs:
            return False
        decided = triggers.verdict(node.trigger, triggers.need_states(self.state, node))
        if decided is None:
            return False
        nr.error = decided[1]
        self.done(nr, decided[0])
        return True

    def prepare(self, nr: NodeRun) -> None:
        node = nr.node
        with_, env = node.with_, node.env
        try:
            if node.condition is not None or has_deferred(with_) or has_deferred(env):
                extra = self.run_context(nr)
                if node.condition is not None:
                    ctx = self.renderer.context(node.scope, extra)
                    if node.status_if:
                        ctx.update(triggers.functions(self.state, nr, self.main_status()))
                    from .templating import evaluate_condition

                    if not evaluate_condition(node.condition, ctx):
                        self.done(nr, State.SKIPPED)
                        return
                with_, env = self.tasks.render(self.renderer, nr, extra)
        except TemplateError as exc:
            self.fail_now(nr, FailureKind.ERROR, f"template error: {exc}")
            return
        if node.uses == approvals.USES:
            gating.open_gate(self, nr, with_)
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
                self.fail_now(nr, FailureKind.ERROR, f"template error: {exc}")
                return
            nr.task = self.tasks.make(nr, with_, env)
        self.state.enqueue(nr)

    def cached(self, nr: NodeRun, with_: Any) -> bool:
        """Look the step up in the cache; on a hit it is done, with the stored output."""
        assert self.options.cache is not None
        problem = cache_key_problem(self.state, nr, with_, lambda v: self.render_for(nr, v))
        if problem is not None:
            self.fail_now(nr, FailureKind.ERROR, f"cache: {problem}")
            return True
        folder = self.plan.folder_of(nr.node)
        forced = self.options.forced
        use = self.options.use_cache and nr.id not in forced and nr.node.group not in forced
        if not cache_hit(nr, self.options.cache, use, folder):
            return False
        self.done(nr, State.CACHED)
        return True

    def final_failure(self, nr: NodeRun) -> None:
        if nr.node.continue_on_error:
            self.done(nr, State.FAILED_ALLOWED)
            return
        self.done(nr, State.FAILED)
        # A `finally` step's failure fails the run but stops nothing: they all run to their end.
        # Under a success policy the fan-out's end decides (complete_group).
        if self.options.fail_fast and not nr.node.is_finally:
            self.stop_fast(nr)

    def stop_fast(self, nr: NodeRun) -> None:
        """--fail-fast: `nr` failed; stop the run unless a success policy judges it."""
        if not self.state.cancelling and not success_policy.under_policy(nr.node, self.state.runs):
            self.stop()

    def skipped_by_exit(self, nr: NodeRun, finished: float) -> bool:
        """An attempt that exited with one of the step's `skip_exit_codes` skips the step:
        no retry, no failure (Airflow's exit code 99)."""
        code = nr.exit_code
        if code is None or code not in nr.node.skip_exit_codes or nr.kind != FailureKind.ERROR:
            return False
        nr.kind, nr.traceback, nr.finished = None, "", finished
        nr.error = f"exited with code {code}, one of its skip_exit_codes"
        self.done(nr, State.SKIPPED)
        return True

    def fail_now(self, nr: NodeRun, kind: str, message: str) -> None:
        """Fail a step before its process starts (a template that cannot render, a broken
        for_each).  This is the step's attempt: the first one reads `attempt 1`, never 0."""
        if nr.attempt == nr.base:
            nr.attempt += 1
        nr.kind, nr.error = kind, message
        nr.finished = time.time()
        self.final_failure(nr)

    def done(self, nr: NodeRun, state: State, propagate: bool = True, quiet: bool = False) -> None:
        """`nr` reaches its final `state`: finish it, then wake or fail its dependents."""
        self.state.finish(nr, state, quiet=quiet)
        if nr.node.kind is not NodeKind.STEP:
            limits.leg_done(self.state, nr.node)
        if state is State.FAILED:
            self.fail_fast(nr)
        if nr.compensates is not None:
            step = compensation.undone(self.state, nr)
            if step is not None:
                self.state.mark(step, State.COMPENSATED)
            self.next_compensation()
        if nr.state.ok:
            for child in self.state.dependents_of(nr.id):
                self.need_ended(child)
        elif propagate:
            self.fail_downstream(nr)
        elif not nr.node.is_finally:
            # Cancelled: a `finally` step that needs it stops waiting for it (as in cancel).
            self.release_finally_needs(nr)
        self.check_finally()

    def need_ended(self, child: NodeRun) -> None:
        child.waiting -= 1
        if child.waiting == 0 and child.state is State.PENDING and self.may_wake(child):
            self.became_ready(child)

    def may_wake(self, child: NodeRun) -> bool:
        """Whether `child` may still start: while the run is being cancelled only `finally`
        steps, steps whose `if` calls always() or cancelled(), and queued follow-ups do."""
        node = child.node
        return (
            not self.state.cancelling or node.is_finally or node.on_cancel or bool(child.follow_id)
        )

    def fail_fast(self, nr: NodeRun) -> None:
        """A leg of a `fail_fast` matrix failed: cancel its siblings, each with what is
        unfinished inside it (not the rest of the run: the fan-out fails, and what needs it)."""
        runs = self.state.runs
        fan = runs.get(nr.node.group) if nr.node.group is not None else None
        if fan is None or not fan.node.fail_fast:
            return
        doomed: list[NodeRun] = []
        stack = [m for m in (fan.members or fan.node.members) if m != nr.id]
        while stack:
            found = runs.get(stack.pop())
            if found is not None and not found.state.finished:
                doomed.append(found)
                stack.extend(found.members or found.node.members)
        for leg in doomed:
            if leg.state is State.RUNNING:
                self.halt(leg)
            leg.error = f"cancelled: {nr.id} failed and the matrix is fail_fast"
            leg.finished = leg.finished or time.time()
            self.state.finish(leg, State.CANCELLED)
        for leg in doomed:
            self.fail_downstream(leg)

    def release_finally_needs(self, nr: NodeRun) -> None:
        """`nr` was cancelled: what runs when cancelled stops waiting for it."""
        for child in self.state.dependents_of(nr.id):
            if child.node.is_finally or child.node.on_cancel:
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
            if child.node.status_if or child.node.trigger != triggers.DEFAULT:
                # Its rule or its `if` decides when all its needs have ended.
                self.need_ended(child)
                continue
            child.error = f"needs {nr.id}, which {nr.state.value.replace('_', ' ')}"
            self.state.finish(child, State.UPSTREAM_FAILED)
            stack.extend((child, dep) for dep in self.state.dependents_of(child.id))

    def member_not_ok(self, group: NodeRun, member: NodeRun) -> None:
        """A member of `group` ended in a state that stops dependents.  A failed member makes
        the group `failed` at once (see group_state: nothing the other members do can change
        that); otherwise the group's state is decided when all its members are done."""
        if member.state is not State.FAILED or group.node.success is not None:
            self.need_finished(group)  # a success policy: decided when all have ended
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

    def complete_group(self, nr: NodeRun) -> None:
        runs = self.state.runs
        members = [runs[m] for m in (nr.members or nr.node.members) if m in runs]
        nr.started = min((m.started for m in members if m.started), default=None)
        if self.state.cancelling:  # a policy judges failures, not a stopped run
            state, why = group_state(members), ""
        else:
            state, why = judged(nr.node, members)
        if why:
            if not state.ok:
                nr.error, nr.finished = why, time.time()
                self.done(nr, state)
                if state is State.FAILED and self.options.fail_fast and not nr.node.is_finally:
                    self.stop_fast(nr)
                return
            nr.error = why  # partial: how many failed
        if not state.ok:  # a need of the group failed: its members are upstream_failed
            nr.error = next((m.error for m in members if not m.state.ok), "")
        else:
            try:
                nr.output, nr.outputs = group_output(nr, members, lambda v: self.render_for(nr, v))
            except TemplateError as exc:
                self.fail_now(nr, FailureKind.ERROR, f"template outputs: {exc}")
                return
        nr.finished = time.time()
        self.done(nr, state)

    def expand_mapped(self, nr: NodeRun) -> None:
        """A run-time for_each: render the list and create one step per item (for a template:
        one copy of its body per item)."""
        node = nr.node
        assert node.for_each is not None
        expand = expansion.template_instances if node.body else expansion.instances
        try:
            items = self.render_for(nr, node.for_each.items)
            nodes = expand(self.state, node, items, self.render_key(nr))
            nr.node = node = expansion.limits_of(node, items)
            secrets = self.renderer.secrets.values()
            if any(s in inst.id for inst in nodes for s in secrets):
                # An id is never masked (resume finds steps by it): one holding a secret would
                # print it in `runner show` and put it in a log file's name.
                raise TemplateError("an item's key holds a secret; set `key:` to name the items")
        except TemplateError as exc:
            self.fail_now(nr, FailureKind.ERROR, f"for_each: {exc}")
            return
        if not nodes:
            self.complete_group(nr)
            return
        nr.members = [inst.id for inst in nodes if inst.group == node.id]
        nr.waiting = len(nr.members)
        ready = self.add_instances(nr, nodes)
        if nr.waiting == 0:  # resume: every instance kept its output
            self.complete_group(nr)
        for child in ready:
            self.became_ready(child)

    def add_instances(
        self, nr: NodeRun, nodes: list[Node], keep: bool | None = None
    ) -> list[NodeRun]:
        """The instances join the run (on resume, those that succeeded before keep their
        output, unless `keep` is False); returns those ready to start."""
        state, preset, node = self.state, self.options.preset, nr.node
        if keep is not False:
            keep = bool(preset) and expansion.upstream_kept(state, preset, node)
        children = []
        for inst in nodes:
            child = NodeRun(inst, log_path=self.log_path(inst.id), waiting=len(inst.needs))
            child.attempt = child.base = self.options.attempts_done.get(inst.id, 0)
            state.add(child)
            state.dependents[inst.id] = [node.id] if inst.group == node.id else []
            state.depth[inst.id] = state.depth.get(node.id, 1)
            children.append(child)
        for child in children:
            for need in child.node.needs:
                state.add_dependent(need, child.id)
            reused = keep and child.node.kind is NodeKind.STEP and expansion.reuse(child, preset)
            if not reused:
                state.mark(child, State.PENDING)
        for child in children:
            if child.reused:
                state.finish(child, child.state, quiet=True, ranked=False)
                for dep in state.dependents_of(child.id):
                    dep.waiting -= 1
        return [c for c in children if c.state is State.PENDING and c.waiting == 0]

    def render_key(self, nr: NodeRun) -> Any:
        def render(scope: Scope) -> str:
            from .templating import compile_value

            assert nr.node.for_each is not None and nr.node.for_each.key is not None
            ctx = self.renderer.context(scope, self.run_context(nr))
            return str(compile_value(nr.node.for_each.key).render(ctx))

        return render
