"""The ready-queue state machine: owns the run state, knows nothing of processes.

Modelled on dask/local.py.  The plan is constant; the run state (`NodeRun` per node) is
private to this one loop.  Each node keeps a count of unfinished needs; finishing a node
decrements its dependents' counts, and a node whose count reaches zero becomes ready, so a
whole run costs O(nodes + edges).  Ready steps wait in a heap ordered by priority, then the
longest chain of steps still behind them (critical path first), then file order.  A step takes
a pool slot and a worker only when it is handed to the executor; steps blocked by a full pool
or a `max_parallel` limit wait in a heap of their own, released when a slot frees, so no mix of
limits can deadlock.

One turn of the loop: hand ready steps to the executor up to its capacity, wait for
completions (or the next retry, or a signal), apply them, then tell the sinks (the store commits
once per turn, the reporters print).  Retries wait on a timer heap, never in a worker.

Signals: the first SIGINT/SIGTERM/SIGHUP stops scheduling and cancels running attempts (SIGTERM
to their process groups, SIGKILL after the grace period); a second one (Ctrl-C again, or the
SIGTERM a CI system sends after its SIGINT) kills at once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import heapq
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from . import graph
from .errors import EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_STORE, TemplateError
from .executors import Event, Executor, Returned
from .foreach import default_key, key_problem
from .messages import Completion, Started, Task
from .model import Node, NodeKind, Plan, Scope, State, has_deferred
from .runtime import Renderer

if TYPE_CHECKING:
    import random

    from .cache import CacheBackend, Globs


MAX_TIMER_WAIT = 3600.0  # seconds the loop waits for a timer before it looks again
CHAIN_AHEAD = 8  # follow-ups queued behind a running step of a chain (see follow_chain)


@dataclass
class NodeRun:
    """The mutable run state of one node (owned by the scheduler)."""

    node: Node
    state: State = State.PENDING
    waiting: int = 0
    attempt: int = 0
    output: Any = None
    output_json: str = "null"
    kind: str | None = None  # error kind of the last failed attempt
    error: str = ""
    traceback: str = ""
    exit_code: int | None = None
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    members: list[str] = field(default_factory=list)
    outputs: dict[str, Any] | None = None  # groups: key -> output
    attempts: list[Completion] = field(default_factory=list)
    reused: bool = False  # output taken from an earlier run (resume) or the cache
    base: int = 0  # attempts made by earlier runs of the same run id (resume)
    cache_key: str | None = None
    cache_files: dict[str, str] = field(default_factory=dict)  # the outputs' fingerprint
    cache_globs: Globs | None = None  # `cache.inputs`/`outputs`, rendered
    completed_seq: int = 0  # order of success, for compensation in reverse
    compensates: str | None = None  # a compensation node: the step it undoes
    process: tuple[int, str] | None = None  # the running attempt's process group and start
    task: Task | None = None
    log_path: str = ""
    follow_id: int = 0  # an attempt queued to run right after the step it needs (see follow_up)

    @property
    def id(self) -> str:
        return self.node.id

    def view(self) -> Mapping[str, Any]:
        data = {"output": self.output, "state": self.state.value, "key": self.node.key}
        if self.outputs is not None:
            data["outputs"] = self.outputs
        return data


class Sink(Protocol):
    """Observers of a run: reporters and the store.  Called from the scheduler's thread."""

    def run_started(self, run: RunInfo) -> None: ...

    def changed(self, nr: NodeRun, old: State) -> None: ...

    def turn(self) -> None: ...

    def run_finished(self, result: RunResult) -> None: ...


@dataclass
class RunInfo:
    run_id: str
    plan: Plan
    run_dir: Path
    executor: str
    workers: int
    nodes: Mapping[str, NodeRun]
    started: float


@dataclass
class RunResult:
    run_id: str
    status: str  # succeeded | failed | cancelled
    exit_code: int
    nodes: Mapping[str, NodeRun]
    outputs: dict[str, Any]
    started: float
    finished: float
    signal: int | None = None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Options:
    fail_fast: bool = False
    only: Sequence[str] = ()
    grace: float = 3.0
    preset: Mapping[str, tuple[State, Any]] = field(default_factory=dict)  # resume: done nodes
    attempts_done: Mapping[str, int] = field(default_factory=dict)  # resume: attempts so far
    recorded_rows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # resume: steps
    cache: CacheBackend | None = None  # where cached results are looked up
    use_cache: bool = True  # False: --no-cache (run every step; still record results)
    compensate: bool = True  # False: --no-compensate
    seed: int | None = None


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
        self.secrets = dict(secrets)
        self.sinks = list(sinks)
        self.options = options or Options()
        self.rng: random.Random | None = None  # made when a retry first needs jitter
        self.runs: dict[str, NodeRun] = {}
        self.kept: dict[str, NodeRun] = {}  # resume --only: steps left out, as recorded
        self.dependents: dict[str, list[str]] = {k: list(v) for k, v in plan.dependents.items()}
        self.ready: list[tuple[int, int, int, str]] = []
        self.blocked: dict[str, list[tuple[int, int, int, str]]] = {}
        self.timers: list[tuple[float, str]] = []
        self.pool_busy: dict[str, int] = {}
        self.group_busy: dict[str, int] = {}
        self.by_attempt: dict[int, str] = {}
        self.followers: dict[int, str] = {}  # follow-up attempts not started yet
        self.can_follow: Callable[[int], bool] | None = getattr(executor, "can_follow", None)
        self.next_attempt_id = 1
        self.unfinished = 0
        self.main_unfinished = 0
        self.running = 0
        self.cancelling = False
        self.main_failed = False
        self.failed_before = False  # resume --only: a step left out had not succeeded
        self.signals: list[int] = []
        self.finally_released = False
        self.storage_error: str | None = None
        self.hard_cancel = False
        self.compensations: list[str] | None = None  # queued compensation nodes, once built
        self.success_seq = 0
        self.breaker_failures: dict[str, int] = {}
        self.breaker_open_until: dict[str, float] = {}
        self.breaker_trial: dict[str, str] = {}  # pool -> its half-open trial step
        self.depth: dict[str, int] = {}
        env_base = {**plan.env, **secrets}
        self.step_env_base = {k: str(v) for k, v in env_base.items()}
        self.renderer = Renderer(
            {"params": plan.params, "env": plan.env, "pipeline": {"name": plan.name}},
            self.secrets,
            self.lookup,
        )
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.logs_dir = str(run_dir / "logs")
        self.scratch_dir = str(run_dir / "scratch")

    # -- set-up ---------------------------------------------------------------------------------

    def log_path(self, nid: str) -> str:
        return f"{self.logs_dir}/{nid}.log"

    def lookup(self, nid: str) -> Mapping[str, Any]:
        found = self.runs.get(nid)
        return (found if found is not None else self.kept[nid]).view()

    def selected(self) -> set[str]:
        """`--only`: the matching nodes plus everything they need (and groups' members)."""
        nodes = self.plan.nodes
        if not self.options.only:
            return set(nodes)
        chosen = {n for n in nodes if any(fnmatch.fnmatchcase(n, p) for p in self.options.only)}
        stack = list(chosen)
        while stack:
            nid = stack.pop()
            for need in nodes[nid].needs:
                if need not in chosen:
                    chosen.add(need)
                    stack.append(need)
        return chosen

    def critical_path(self) -> None:
        """For each node, the number of steps on the longest chain from it to the end."""
        for node in reversed(graph.topological(self.plan.nodes)):
            below = max((self.depth.get(d, 0) for d in self.dependents.get(node.id, ())), default=0)
            self.depth[node.id] = below + (0 if node.kind is NodeKind.GROUP else 1)

    def setup(self) -> None:
        chosen = self.selected()
        self.critical_path()
        for nid, node in self.plan.nodes.items():
            if nid not in chosen:
                continue
            nr = NodeRun(node, log_path=self.log_path(nid))
            nr.waiting = sum(1 for n in node.needs if n in chosen)
            nr.attempt = nr.base = self.options.attempts_done.get(nid, 0)
            if node.is_finally:
                nr.waiting += 1  # released when every other node is done
            else:
                self.main_unfinished += 1
            self.runs[nid] = nr
            self.unfinished += 1
        for nid in list(self.dependents):
            self.dependents[nid] = [d for d in self.dependents[nid] if d in self.runs]
        # Resume: steps that succeeded before keep their state and output.  All of them are
        # marked first and counted after, so none is made ready by another's completion.
        reused = []
        for nid, (state, output) in self.options.preset.items():
            found = self.runs.get(nid)
            # `finally` steps run again, with the run's new status.
            if found is not None and found.node.kind is NodeKind.STEP and not found.node.is_finally:
                found.output, found.output_json, found.reused = output, json.dumps(output), True
                found.state = state
                reused.append(found)
        for nr in reused:
            self.unfinished -= 1
            if not nr.node.is_finally:
                self.main_unfinished -= 1
            for dep in self.dependents.get(nr.id, ()):
                self.runs[dep].waiting -= 1
        self.failed_before = self.failed_outside()
        self.keep_recorded()

    def failed_outside(self) -> bool:
        """Resume with `--only`: whether a step left out of this slice had not succeeded when
        the run last ended.  A run's status is over all its steps, not only those run now (a
        group's recorded state is derived from its steps, and stale once they ran again)."""
        nodes, runs = self.plan.nodes, self.runs
        return any(
            nid in nodes
            and nid not in runs
            and nodes[nid].kind is not NodeKind.GROUP
            and not State(row["state"]).ok
            for nid, row in self.options.recorded_rows.items()
        )

    def keep_recorded(self) -> None:
        """Resume with `--only`: the steps left out of the slice, as the run recorded them, so
        that the result lists every step of the run and its `outputs` can read them."""
        for sid, row in self.options.recorded_rows.items():
            if sid in self.runs or sid.endswith(":compensate"):
                continue
            node = self.recorded_node(sid)
            if node is not None:
                self.kept[sid] = kept_run(node, row)
        self.kept_groups()

    def kept_groups(self) -> None:
        """The kept groups' states and outputs, made again from their members (some of which
        may have run again in the slice), as complete_group does: the store records no output
        for a group, and its recorded state is stale once its members ran again."""
        for node in graph.topological({k: nr.node for k, nr in self.kept.items()}):
            if node.kind is not NodeKind.STEP:
                self.kept_group(self.kept[node.id])

    def recorded_node(self, sid: str) -> Node | None:
        """The node of a recorded step: in the plan, or an instance of a run-time for_each
        that is not expanded again in this run."""
        node = self.plan.nodes.get(sid)
        if node is not None:
            return node
        for cut in (i for i in range(len(sid) - 1, 0, -1) if sid[i] == "."):
            owner = self.plan.nodes.get(sid[:cut])
            if owner is not None and owner.kind is NodeKind.MAPPED:
                if owner.id in self.runs:
                    return None
                key = sid[cut + 1 :]
                return dataclasses.replace(
                    owner, id=sid, kind=NodeKind.STEP, needs=(), group=owner.id, key=key
                )
        return None

    def kept_group(self, nr: NodeRun) -> None:
        """A kept group's state and output, from its members (as complete_group does)."""
        node = nr.node
        ids = node.members or [k for k, m in self.kept.items() if m.node.group == node.id]
        everything = {**self.kept, **self.runs}
        members = [everything[m] for m in ids if m in everything]
        nr.state = group_state(members)
        nr.output, nr.outputs = None, None
        if not nr.state.ok:
            return
        try:
            self.group_output(nr, members)
        except TemplateError:
            nr.output = None

    def all_nodes(self) -> dict[str, NodeRun]:
        """Every node of the run: those of this run and, after `resume --only`, the kept ones,
        in file order."""
        if not self.kept:
            return self.runs
        rank = {nid: i for i, nid in enumerate(self.plan.nodes)}
        merged = {**self.runs, **self.kept}
        return dict(sorted(merged.items(), key=lambda item: rank.get(item[0], len(rank))))

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
            MappingProxyType(self.runs),
            started,
        )
        for sink in self.sinks:
            sink.run_started(info)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous = self.install_signals(wake_w)
        # The handlers stay until the end of the run is recorded: a signal arriving while the
        # workers close or the store commits is noted (a second one still kills the workers at
        # once), never a KeyboardInterrupt or a default SIGTERM death that leaves the run
        # `running` in the store.
        try:
            try:
                self.executor.start()
                # Roots only, taken before any is started: a root that finishes at once
                # (skipped, cached) readies its dependents itself.
                roots = [
                    nr for nr in self.runs.values() if nr.state is State.PENDING and nr.waiting == 0
                ]
                for nr in roots:
                    self.became_ready(nr)
                self.check_finally()
                self.dispatch()
                self.flush()
                while self.unfinished > 0:
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
            self.restore_signals(previous)
            os.close(wake_r)
            os.close(wake_w)

    def turn(self, wake_r: int) -> None:
        """Wait, apply what happened, hand out what became ready, then commit it all at once:
        the store learns of new attempts in the same transaction as the completions that made
        them ready, before the loop waits again."""
        timeout = None
        if self.timers:
            # A retry may wait longer than the operating system's waits can (2**31 ms, with a
            # delay of up to 24 days plus jitter): the loop wakes each hour and looks again.
            timeout = min(max(self.timers[0][0] - time.monotonic(), 0.0), MAX_TIMER_WAIT)
        if not self.running and not self.ready and not self.timers:
            self.stall()
            return
        events = self.executor.wait(timeout, wake_r)
        self.drain_wake(wake_r)
        for event in events:
            self.handle(event)
        self.fire_timers()
        if self.signals and (not self.cancelling or (self.hard_signal() and not self.hard_cancel)):
            self.cancel()
        if not self.cancelling or (self.finally_released and not self.hard_cancel):
            self.dispatch()
        self.flush()

    def abandon(self) -> None:
        try:
            self.executor.cancel(self.options.grace)
        except Exception:  # the error on its way out matters more than this one
            pass

    def stall(self) -> None:
        """Nothing runs and nothing can: a bug, but never a hang. Cancel what is left."""
        for nr in self.runs.values():
            if not nr.state.finished:
                nr.error = "never became ready (internal scheduling error)"
                self.set_state(nr, State.CANCELLED)
                self.done(nr, propagate=False)
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
            return
        if node.kind is NodeKind.GROUP:
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
                        self.set_state(nr, State.SKIPPED)
                        self.done(nr)
                        return
                with_, env = self.render_task(nr, extra)
        except TemplateError as exc:
            self.fail_now(nr, "error", f"template error: {exc}")
            return
        if node.cache is not None and self.options.cache is not None and self.cached(nr, with_):
            return
        nr.task = self.make_task(nr, with_, env)
        self.enqueue(nr)

    def retry(self, nr: NodeRun) -> None:
        """A retry's delay has passed: render `with` and `env` again for the new attempt
        (`run.attempt` is its number, `run.status` the status now), then queue it."""
        node = nr.node
        if has_deferred(node.with_) or has_deferred(node.env):
            try:
                with_, env = self.render_task(nr, self.run_context(nr))
            except TemplateError as exc:
                nr.attempt += 1  # the new attempt is the one that failed
                self.fail_now(nr, "error", f"template error: {exc}")
                return
            nr.task = self.make_task(nr, with_, env)
        self.enqueue(nr)

    def render_task(self, nr: NodeRun, extra: Mapping[str, Any]) -> tuple[Any, Any]:
        """The attempt's `with` and `env`, rendered (`extra`: the `run` names)."""
        node = nr.node
        with_ = self.renderer.value(node.with_, node.scope, extra, self.shell_fields(node))
        return with_, self.renderer.value(dict(node.env), node.scope, extra)

    def make_task(self, nr: NodeRun, with_: Any, env: Mapping[str, Any]) -> Task:
        node = nr.node
        return Task(
            attempt_id=0,
            node_id=node.id,
            uses=node.uses or "noop",
            with_=with_,
            env={**self.step_env_base, **{k: _env_text(v) for k, v in env.items()}}
            if env
            else self.step_env_base,
            timeout=node.timeout,
            log_path=nr.log_path,
            run_id=self.run_id,
            attempt=0,
            key=node.key,
            item=node.item,
            pipeline_dir=self.plan.pipeline_dir,
            scratch_dir=f"{self.scratch_dir}/{node.id}",
            resources=dict(node.resources) or None,
            grace=self.options.grace,
        )

    def cached(self, nr: NodeRun, with_: Any) -> bool:
        """Look the step up in the cache; on a hit it is done, with the stored output."""
        from .cache import outputs_match

        assert self.options.cache is not None
        problem = self.cache_lookup_key(nr, with_)
        if problem is not None:
            self.fail_now(nr, "error", f"cache: {problem}")
            return True
        assert nr.cache_key is not None and nr.cache_globs is not None
        hit = self.options.cache.get(nr.cache_key) if self.options.use_cache else None
        if hit is None or not outputs_match(hit[1], nr.cache_globs, self.plan.pipeline_dir):
            return False
        nr.output, nr.cache_files = hit
        nr.output_json = json.dumps(nr.output)
        nr.reused = True
        nr.started = nr.finished = time.time()
        self.set_state(nr, State.CACHED)
        self.done(nr)
        return True

    def cache_lookup_key(self, nr: NodeRun, with_: Any) -> str | None:
        """Render the step's cache globs and compute its key; the problem, if that fails."""
        from .cache import MissingInput, cache_key, render_globs

        node = nr.node
        assert node.cache is not None
        needs = {n: self.runs[n].output for n in node.needs if n in self.runs}
        try:
            nr.cache_globs = render_globs(
                node.cache, lambda v: self.renderer.value(v, node.scope, self.run_context(nr))
            )
            nr.cache_key = cache_key(
                node.uses or "", with_, needs, nr.cache_globs, self.plan.pipeline_dir
            )
        except TemplateError as exc:
            return f"template error: {exc}"
        except (MissingInput, ValueError) as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot read an input file: {exc}"
        return None

    def record_outputs(self, nr: NodeRun, globs: Globs) -> None:
        """Hash the declared outputs of a success, for its cache entry (none if unreadable)."""
        from .cache import fingerprint

        try:
            nr.cache_files = fingerprint(globs.outputs, self.plan.pipeline_dir)
        except OSError:
            nr.cache_key = None

    def shell_fields(self, node: Node) -> frozenset[str]:
        if node.uses == "shell":
            return frozenset({"cmd"})
        return frozenset()

    def enqueue(self, nr: NodeRun) -> None:
        node = nr.node
        heapq.heappush(
            self.ready, (-node.priority, -self.depth.get(node.id, 0), node.order, node.id)
        )

    # -- dispatch -------------------------------------------------------------------------------

    def dispatch(self) -> None:
        capacity = self.executor.capacity()
        batch: list[Task] = []
        while capacity > 0 and self.ready:
            entry = heapq.heappop(self.ready)
            nr = self.runs[entry[3]]
            limit = self.limit_reached(nr.node)
            if limit is not None:
                heapq.heappush(self.blocked.setdefault(limit, []), entry)
                continue
            if self.breaker_open(nr, entry):
                continue
            batch.append(self.start_attempt(nr))
            capacity -= 1
            batch.extend(self.follow_chain(nr, batch[-1].attempt_id, CHAIN_AHEAD, placed=False))
        if batch:
            self.executor.submit(batch)

    def breaker_open(self, nr: NodeRun, entry: tuple[int, int, int, str]) -> bool:
        """A pool whose breaker is open fails its steps at once instead of calling them.  After
        the cooldown it is half-open: one step is let through (the trial), and the pool's other
        steps wait for its outcome (see end_trial)."""
        pool = nr.node.pool
        if pool is None or pool not in self.plan.breakers:
            return False
        if pool in self.breaker_trial:
            heapq.heappush(self.blocked.setdefault("breaker:" + pool, []), entry)
            return True
        until = self.breaker_open_until.get(pool)
        if until is None:
            return False  # closed
        if time.monotonic() >= until:
            self.breaker_trial[pool] = nr.id  # half-open: this is the one trial call
            return False
        failures, cooldown = self.plan.breakers[pool]
        nr.attempt += 1
        nr.finished = time.time()
        nr.kind, nr.exit_code = "breaker", None
        nr.error = (
            f"circuit breaker of pool '{pool}' is open after {failures} failures in a row; "
            f"not calling it for {cooldown:g}s"
        )
        self.set_state(nr, State.RUNNING)
        self.final_failure(nr)
        self.release("pool:" + pool)  # it held no slot: let the next waiting step come through
        return True

    def breaker_record(self, nr: NodeRun, ok: bool) -> None:
        pool = nr.node.pool
        if pool is None or pool not in self.plan.breakers:
            return
        if ok:
            self.breaker_failures[pool] = 0
            self.breaker_open_until.pop(pool, None)
            return
        failures, cooldown = self.plan.breakers[pool]
        self.breaker_failures[pool] = self.breaker_failures.get(pool, 0) + 1
        if self.breaker_failures[pool] >= failures:
            self.breaker_open_until[pool] = time.monotonic() + cooldown

    def end_trial(self, node: Node) -> None:
        """The attempt of `node` ended: if it was its pool's trial call, the steps that waited
        for it go back to the ready queue (the breaker is closed or open again by now)."""
        pool = node.pool
        if pool is None or self.breaker_trial.get(pool) != node.id:
            return
        del self.breaker_trial[pool]
        for entry in self.blocked.pop("breaker:" + pool, []):
            heapq.heappush(self.ready, entry)

    def limit_reached(self, node: Node) -> str | None:
        pool = node.pool
        if pool is not None and self.pool_busy.get(pool, 0) >= self.plan.pools.get(pool, 1 << 30):
            return "pool:" + pool
        limit = self.group_limit(node)
        if limit is not None and self.group_busy.get(node.group or "", 0) >= limit:
            return f"group:{node.group}"
        return None

    def hold(self, node: Node, delta: int) -> None:
        if node.pool is not None:
            self.pool_busy[node.pool] = self.pool_busy.get(node.pool, 0) + delta
            if delta < 0:
                self.release("pool:" + node.pool)
                self.end_trial(node)
        if node.group is not None:
            self.group_busy[node.group] = self.group_busy.get(node.group, 0) + delta
            if delta < 0:
                self.release("group:" + node.group)

    def release(self, limit: str) -> None:
        waiting = self.blocked.get(limit)
        if waiting:
            heapq.heappush(self.ready, heapq.heappop(waiting))

    def start_attempt(self, nr: NodeRun) -> Task:
        assert nr.task is not None
        nr.attempt += 1
        attempt_id = self.next_attempt_id
        self.next_attempt_id += 1
        self.by_attempt[attempt_id] = nr.id
        task = nr.task._replace(attempt_id=attempt_id, attempt=nr.attempt)
        self.running += 1
        self.hold(nr.node, +1)
        nr.started = nr.started or time.time()
        self.set_state(nr, State.RUNNING)
        return task

    def follow_up(self, nr: NodeRun, attempt_id: int, placed: bool = True) -> Task | None:
        """The sole dependent of `nr`, queued now on the worker of `nr`'s attempt to run right
        after it if it succeeds (the worker skips it otherwise), when nothing about it waits on
        the runner: no condition or template left to render, no cache, pool, resources or
        group limit, and no other step waiting for a worker.  A chain then runs without a
        round trip to the runner between its steps; the runner records each start when it
        learns that the step before succeeded, as it would have started it then."""
        if self.can_follow is None or self.cancelling or self.ready:
            return None
        dependents = self.dependents.get(nr.id, ())
        if len(dependents) != 1:
            return None
        child = self.runs[dependents[0]]
        node = child.node
        if (
            child.state is not State.PENDING
            or child.waiting != 1
            or child.follow_id
            or node.kind is not NodeKind.STEP
            or node.is_finally
            or child.compensates is not None
            or node.condition is not None
            or node.cache is not None
            or node.pool is not None
            or node.resources
            or self.group_limit(node) is not None
            or has_deferred(node.with_)
            or has_deferred(node.env)
            or (placed and not self.can_follow(attempt_id))
        ):
            return None
        follow_id = self.next_attempt_id
        self.next_attempt_id += 1
        child.task = self.make_task(child, node.with_, node.env)
        child.follow_id = follow_id
        self.followers[follow_id] = child.id
        return child.task._replace(
            attempt_id=follow_id, attempt=child.attempt + 1, after=attempt_id
        )

    def follow_chain(
        self, nr: NodeRun, attempt_id: int, limit: int, placed: bool = True
    ) -> list[Task]:
        """Up to `limit` follow-ups, each queued behind the one before: the next links of a
        chain, so that its worker goes on for a while without waiting for the runner."""
        tasks: list[Task] = []
        while len(tasks) < limit:
            follow = self.follow_up(nr, attempt_id, placed=placed and not tasks)
            if follow is None:
                break
            tasks.append(follow)
            nr, attempt_id = self.runs[follow.node_id], follow.attempt_id
        return tasks

    def group_limit(self, node: Node) -> int | None:
        """`max_parallel` of the group `node` is in (a for_each's, or its template's)."""
        group = self.runs.get(node.group) if node.group is not None else None
        if group is None:
            return None
        if group.node.max_parallel is not None:
            return group.node.max_parallel
        return group.node.for_each.max_parallel if group.node.for_each else None

    def start_follow_up(self, nr: NodeRun) -> None:
        """The step before `nr` succeeded: its worker has started `nr` already."""
        attempt_id, nr.follow_id = nr.follow_id, 0
        self.followers.pop(attempt_id, None)
        nr.attempt += 1
        self.by_attempt[attempt_id] = nr.id
        self.running += 1
        self.hold(nr.node, +1)
        nr.started = nr.started or time.time()
        self.set_state(nr, State.RUNNING)
        # Keep the chain CHAIN_AHEAD links ahead of what runs: queue one behind its last link.
        tail, tail_id, ahead = nr, attempt_id, 0
        while (child := self.queued_follower(tail)) is not None:
            tail, tail_id, ahead = child, child.follow_id, ahead + 1
        follows = self.follow_chain(tail, tail_id, CHAIN_AHEAD - ahead)
        if follows:
            self.executor.submit(follows)

    def queued_follower(self, nr: NodeRun) -> NodeRun | None:
        """The step queued to follow `nr` on its worker, if any."""
        dependents = self.dependents.get(nr.id, ())
        if len(dependents) == 1 and self.runs[dependents[0]].follow_id:
            return self.runs[dependents[0]]
        return None

    def drop_follow_ups(self, nr: NodeRun) -> None:
        """`nr`'s attempt did not succeed: its worker skips what was queued to follow it, and
        what was queued to follow those."""
        while (child := self.queued_follower(nr)) is not None:
            self.followers.pop(child.follow_id, None)
            child.follow_id = 0
            nr = child

    # -- completions ----------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if isinstance(event, Started):
            nid = self.by_attempt.get(event.attempt_id)
            if nid is not None:
                nr = self.runs[nid]
                nr.process = (event.pgid, event.start_time)
                for sink in self.sinks:
                    sink.changed(nr, nr.state)
            return
        if isinstance(event, Returned):
            follower = self.followers.pop(event.task.attempt_id, None)
            if follower is not None:
                self.runs[follower].follow_id = 0
                return
            nid = self.by_attempt.pop(event.task.attempt_id, None)
            if nid is None:
                return
            nr = self.runs[nid]
            self.drop_follow_ups(nr)
            self.running -= 1
            self.hold(nr.node, -1)
            nr.attempt -= 1
            if self.cancelling:
                self.set_state(nr, State.CANCELLED)
                self.done(nr, propagate=False)
            else:
                self.set_state(nr, State.PENDING)
                self.enqueue(nr)
            return
        nid = self.by_attempt.pop(event.attempt_id, None)
        if nid is None:
            return
        nr = self.runs[nid]
        self.running -= 1
        self.hold(nr.node, -1)
        nr.attempts.append(event)
        if self.can_follow is not None and (nr.started is None or event.started < nr.started):
            nr.started = event.started  # a follow-up started before the runner learned of it
        nr.worker = event.worker
        nr.process = None
        if event.ok:
            nr.output_json = event.output_json or "null"
            nr.output = json.loads(nr.output_json)
            nr.finished = event.finished
            # A success after failed attempts: those are in the attempts, not on the step.
            nr.kind, nr.error, nr.traceback, nr.exit_code = None, "", "", event.exit_code
            if nr.cache_key and nr.cache_globs is not None:
                self.record_outputs(nr, nr.cache_globs)
            self.breaker_record(nr, True)
            self.set_state(nr, State.SUCCEEDED)
            self.done(nr)
            return
        self.drop_follow_ups(nr)
        nr.kind, nr.error, nr.traceback = event.kind, event.message, event.traceback
        nr.exit_code = event.exit_code
        if event.kind == "cancelled":
            nr.finished = event.finished
            self.set_state(nr, State.CANCELLED)
            self.done(nr, propagate=False)
            return
        self.breaker_record(nr, False)
        self.attempt_failed(nr, event.finished)

    def attempt_failed(self, nr: NodeRun, finished: float) -> None:
        policy = nr.node.retries
        kind = nr.kind or "error"
        if kind == "storage":
            # The disk is full or a size limit was hit: retrying cannot help, and starting
            # other steps would only fail the same way.  Stop the run; exit code 3.
            self.storage_error = nr.error
            nr.finished = finished
            self.final_failure(nr)
            if not self.cancelling:
                self.cancel()
            return
        if nr.attempt - nr.base <= policy.max and policy.allows(kind, nr.exit_code):
            if self.stopping(nr):
                # Retries left, but the run is being cancelled: its next attempt never starts,
                # as for a step waiting for its retry when the cancellation came.
                nr.finished = finished
                self.set_state(nr, State.CANCELLED)
                self.done(nr, propagate=False)
                return
            if self.rng is None:
                import random

                self.rng = random.Random(self.options.seed)
            delay = policy.delay_before(nr.attempt - nr.base + 1, self.rng)
            heapq.heappush(self.timers, (time.monotonic() + delay, nr.id))
            self.set_state(nr, State.RETRYING)
            return
        nr.finished = finished
        self.final_failure(nr)

    def final_failure(self, nr: NodeRun) -> None:
        if nr.node.continue_on_error:
            self.set_state(nr, State.FAILED_ALLOWED)
            self.done(nr)
            return
        self.set_state(nr, State.FAILED)
        self.done(nr)
        # A `finally` step's failure fails the run but stops nothing: they all run to their end.
        if self.options.fail_fast and not self.cancelling and not nr.node.is_finally:
            self.cancel()

    def fail_now(self, nr: NodeRun, kind: str, message: str) -> None:
        """Fail a step before its process starts (a template that cannot render, a broken
        for_each).  This is the step's attempt: the first one reads `attempt 1`, never 0."""
        if nr.attempt == nr.base:
            nr.attempt += 1
        nr.kind, nr.error = kind, message
        nr.finished = time.time()
        self.final_failure(nr)

    def fire_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, nid = heapq.heappop(self.timers)
            nr = self.runs[nid]
            if nr.state is State.RETRYING and not self.stopping(nr):
                self.retry(nr)

    def done(self, nr: NodeRun, propagate: bool = True) -> None:
        """A node reached a final state: count it and wake or fail its dependents."""
        self.unfinished -= 1
        if not nr.node.is_finally:
            self.main_unfinished -= 1
        if nr.state is State.SUCCEEDED:
            self.success_seq += 1
            nr.completed_seq = self.success_seq
        if nr.compensates is not None:
            self.next_compensation()
        if nr.state.ok:
            for dep in self.dependents.get(nr.id, ()):
                child = self.runs[dep]
                child.waiting -= 1
                if (
                    child.waiting == 0
                    and child.state is State.PENDING
                    and (not self.cancelling or child.node.is_finally or child.follow_id)
                ):
                    self.became_ready(child)
        elif propagate:
            self.fail_downstream(nr)
        elif not nr.node.is_finally:
            # Cancelled: a `finally` step that needs it stops waiting for it (as in cancel).
            for dep in self.dependents.get(nr.id, ()):
                if self.runs[dep].node.is_finally:
                    self.need_finished(self.runs[dep])
        self.check_finally()

    def fail_downstream(self, nr: NodeRun) -> None:
        """Mark everything that needs `nr` (directly or not) upstream_failed.  A `finally`
        step is not failed by a main step: that need only gives it the step's output, so it
        just stops waiting for it."""
        stack = [(nr, dep) for dep in self.dependents.get(nr.id, ())]
        while stack:
            parent, child_id = stack.pop()
            child = self.runs[child_id]
            if child.state is not State.PENDING:
                continue
            if parent.node.group == child.id:
                self.member_not_ok(child, parent)
                continue
            if child.node.is_finally and not parent.node.is_finally:
                self.need_finished(child)
                continue
            child.error = f"needs {nr.id}, which {nr.state.value.replace('_', ' ')}"
            self.set_state(child, State.UPSTREAM_FAILED)
            self.unfinished -= 1
            if not child.node.is_finally:
                self.main_unfinished -= 1
            stack.extend((child, dep) for dep in self.dependents.get(child.id, ()))

    def member_not_ok(self, group: NodeRun, member: NodeRun) -> None:
        """A member of `group` ended in a state that stops dependents.  A failed member makes
        the group `failed` at once (see group_state: nothing the other members do can change
        that); otherwise the group's state is decided when all its members are done."""
        if member.state is not State.FAILED:
            self.need_finished(group)
            return
        group.error = f"{member.id} failed"
        group.finished = time.time()
        self.set_state(group, State.FAILED)
        self.done(group)

    def need_finished(self, child: NodeRun) -> None:
        child.waiting -= 1
        if child.waiting == 0 and child.state is State.PENDING:
            self.became_ready(child)

    def check_finally(self) -> None:
        if self.finally_released or self.main_unfinished > 0:
            return
        if self.compensations is None and self.start_compensations():
            return
        if self.compensations:
            return
        self.finally_released = True
        self.kept_groups()  # `finally` steps may read a kept group whose members ran again
        for nr in self.runs.values():
            if nr.node.is_finally and nr.state is State.PENDING:
                nr.waiting -= 1
                if nr.waiting == 0:
                    self.became_ready(nr)

    # -- compensation (saga) ------------------------------------------------------------------

    def start_compensations(self) -> bool:
        """When the run failed, undo what succeeded: the `compensate` actions of succeeded
        steps, one at a time, in reverse order of completion, within the template instances
        that failed (a failure outside any instance undoes the whole run)."""
        self.compensations = []
        if not self.options.compensate or self.cancelling or not self.main_failed:
            return False
        scopes: set[str | None] = set()
        for nr in self.runs.values():
            if (
                nr.state is State.FAILED
                and nr.compensates is None
                and not nr.node.is_finally
                and nr.node.kind is not NodeKind.GROUP  # failed through a member, counted there
            ):
                scopes.add(self.instance_of(nr.node))
        undo = [
            nr
            for nr in self.runs.values()
            if nr.state is State.SUCCEEDED
            and nr.node.compensate is not None
            and (None in scopes or self.instance_of(nr.node) in scopes)
        ]
        undo.sort(key=lambda nr: nr.completed_seq, reverse=True)
        for nr in undo:
            comp = self.compensation_node(nr)
            self.runs[comp.id] = NodeRun(comp, log_path=self.log_path(comp.id))
            self.runs[comp.id].compensates = nr.id
            self.dependents[comp.id] = []
            self.unfinished += 1
            self.main_unfinished += 1
            self.compensations.append(comp.id)
            self.set_state(self.runs[comp.id], State.PENDING)
        if not self.compensations:
            return False
        self.next_compensation()
        return True

    def next_compensation(self) -> None:
        if self.compensations:
            nid = self.compensations.pop(0)
            self.prepare(self.runs[nid])

    def instance_of(self, node: Node) -> str | None:
        group = node.group
        while group is not None:
            owner = self.plan.nodes.get(group)
            if owner is None:
                return None
            if owner.group_kind in ("template", "pipeline"):
                return group
            group = owner.group
        return None

    def compensation_node(self, nr: NodeRun) -> Node:
        node = nr.node
        assert node.compensate is not None
        return dataclasses.replace(
            node,
            id=f"{node.id}:compensate",
            uses=node.compensate.uses,
            with_=node.compensate.with_,
            needs=(),
            condition=None,
            cache=None,
            compensate=None,
            pool=None,
            group=None,
            order=len(self.plan.nodes) + len(self.runs),
        )

    # -- groups ---------------------------------------------------------------------------------

    def group_output(self, nr: NodeRun, members: Sequence[NodeRun]) -> None:
        """A group's output from its members': a template's `outputs` rendered (raises
        TemplateError), its members' by inner id, or a fan-out's list and mapping by key."""
        node = nr.node
        if node.group_kind not in ("template", "pipeline"):
            nr.output = [m.output for m in members]
            nr.outputs = {m.node.key or m.id: m.output for m in members}
        elif node.outputs is None:
            nr.output = {m.id.removeprefix(node.id + "."): m.output for m in members}
        else:
            nr.output = self.renderer.value(node.outputs, node.scope, self.run_context(nr))

    def complete_group(self, nr: NodeRun) -> None:
        node = nr.node
        members = [self.runs[m] for m in (nr.members or node.members) if m in self.runs]
        state = group_state(members)
        if not state.ok:  # a need of the group failed: its members are upstream_failed
            nr.error = next((m.error for m in members if not m.state.ok), "")
        else:
            try:
                self.group_output(nr, members)
            except TemplateError as exc:
                self.fail_now(nr, "error", f"template outputs: {exc}")
                return
        nr.started = min((m.started for m in members if m.started), default=None)
        nr.finished = time.time()
        self.set_state(nr, state)
        self.done(nr)

    def expand_mapped(self, nr: NodeRun) -> None:
        """A run-time for_each: render the list and create one step per item."""
        node = nr.node
        spec = node.for_each
        assert spec is not None
        try:
            items = self.renderer.value(spec.items, node.scope, self.run_context(nr))
            if not isinstance(items, list):
                raise TemplateError(f"for_each must give a list, got {type(items).__name__}")
            taken: set[str] = set()  # ids of this list's instances, so none is dropped
            instances = [
                self.instance(node, index, item, taken) for index, item in enumerate(items)
            ]
        except TemplateError as exc:
            self.fail_now(nr, "error", f"for_each: {exc}")
            return
        if not instances:
            self.complete_group(nr)
            return
        nr.members = [inst.id for inst in instances]
        nr.waiting = len(instances)
        keep = self.upstream_kept(node)
        for inst in instances:
            child = NodeRun(inst, log_path=self.log_path(inst.id))
            child.attempt = child.base = self.options.attempts_done.get(inst.id, 0)
            self.runs[inst.id] = child
            self.dependents[inst.id] = [node.id]
            self.depth[inst.id] = self.depth.get(node.id, 1)
            self.unfinished += 1
            if not node.is_finally:
                self.main_unfinished += 1
            if not (keep and self.reuse(child)):
                self.set_state(child, State.PENDING)
        for inst in instances:
            child = self.runs[inst.id]
            if child.reused:
                self.done(child)
            else:
                self.became_ready(child)

    def upstream_kept(self, node: Node) -> bool:
        """Resume: whether every step upstream of `node` kept its output from the earlier run,
        so that a run-time for_each gives the same items as then."""
        preset = self.options.preset
        stack, seen = list(node.needs), set()
        while stack and preset:
            nid = stack.pop()
            up = self.runs.get(nid)
            if up is None or (up.node.kind is NodeKind.STEP and not (up.reused and nid in preset)):
                return False
            seen.add(nid)
            above = (*up.members, *up.node.members, *up.node.needs)
            stack.extend(n for n in above if n not in seen)
        return bool(preset)

    def reuse(self, nr: NodeRun) -> bool:
        """Resume: keep the state and output of a run-time for_each instance that succeeded in
        the earlier run (its store row stays as it was)."""
        found = self.options.preset.get(nr.id)
        if found is None or nr.node.is_finally:
            return False
        nr.state, nr.output = found
        nr.output_json, nr.reused = json.dumps(nr.output), True
        return True

    def instance(self, node: Node, index: int, item: Any, taken: set[str]) -> Node:
        spec = node.for_each
        assert spec is not None
        if spec.key is not None:
            scope = Scope(
                {**node.scope.vars, spec.as_name: item}, node.scope.aliases, node.scope.parent
            )
            ctx = self.renderer.context(scope, self.run_context(self.runs[node.id]))
            from .templating import compile_value

            key = str(compile_value(spec.key).render(ctx))
        else:
            key = default_key(item, index)
        problem = key_problem(key)
        if problem:
            raise TemplateError(f"invalid key {key!r} for item {index}: {problem}")
        inst_id = f"{node.id}.{key}"
        if inst_id in self.runs or inst_id in taken:
            raise TemplateError(f"two items have the key '{key}'; set `key:` to tell them apart")
        taken.add(inst_id)
        scope = Scope(
            MappingProxyType({**node.scope.vars, spec.as_name: item}),
            node.scope.aliases,
            node.scope.parent,
        )
        return dataclasses.replace(
            node,
            id=inst_id,
            kind=NodeKind.STEP,
            needs=(),
            group=node.id,
            key=key,
            item=item,
            has_item=True,
            scope=scope,
            for_each=None,
        )

    # -- cancellation ---------------------------------------------------------------------------

    def install_signals(self, wake_w: int) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if not _main_thread():
            return previous

        def handler(signum: int, frame: Any) -> None:
            self.signals.append(signum)
            if self.hard_signal():
                self.executor.kill()

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
        previous[-1] = signal.set_wakeup_fd(wake_w)
        return previous

    @staticmethod
    def restore_signals(previous: dict[int, Any]) -> None:
        if not previous:
            return
        signal.set_wakeup_fd(previous.pop(-1))
        for sig, old in previous.items():
            signal.signal(sig, old)

    @staticmethod
    def drain_wake(fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def hard_signal(self) -> bool:
        """A second stop signal, of any kind, means stop now: a second Ctrl-C, or the SIGTERM
        a CI system sends when its SIGINT did not end the job soon enough (GitHub Actions
        SIGKILLs the tree 2.5 s later; with a long `--grace` the first signal's cancellation
        would still be waiting, and nothing of it would be recorded)."""
        return len(self.signals) >= 2

    def cancel(self) -> None:
        """Stop scheduling; stop running attempts; what never started is cancelled.  `finally`
        steps still run afterwards, unless a second Ctrl-C asked to stop at once."""
        self.cancelling = True
        self.hard_cancel = self.hard_signal()
        grace = 0.0 if self.hard_cancel else self.options.grace
        for event in self.executor.cancel(grace):
            self.handle(event)
        for nr in self.runs.values():
            if nr.node.is_finally and not self.hard_cancel:
                continue
            if nr.state in (State.PENDING, State.RETRYING, State.RUNNING):
                nr.error = nr.error or "run was cancelled"
                if nr.state is State.RUNNING:
                    self.running -= 1
                    self.hold(nr.node, -1)
                    # A completion of its attempt that comes later is not applied again.
                    for aid in [a for a, nid in self.by_attempt.items() if nid == nr.id]:
                        del self.by_attempt[aid]
                self.set_state(nr, State.CANCELLED)
                self.unfinished -= 1
                if not nr.node.is_finally:
                    self.main_unfinished -= 1
                    for dep in self.dependents.get(nr.id, ()):
                        if self.runs[dep].node.is_finally:
                            self.need_finished(self.runs[dep])
        self.ready = [
            e for e in self.ready if not self.hard_cancel and self.runs[e[3]].node.is_finally
        ]
        heapq.heapify(self.ready)
        self.timers = [t for t in self.timers if not self.stopping(self.runs[t[1]])]
        heapq.heapify(self.timers)
        self.check_finally()

    def stopping(self, nr: NodeRun) -> bool:
        """Whether the cancellation stops `nr`: every step once it began, except `finally`
        steps, which run to their end (retries included) unless a second signal came."""
        return self.cancelling and (self.hard_cancel or not nr.node.is_finally)

    # -- state and the end ----------------------------------------------------------------------

    def set_state(self, nr: NodeRun, state: State) -> None:
        old = nr.state
        nr.state = state
        if state in (State.FAILED, State.UPSTREAM_FAILED) and not nr.node.is_finally:
            self.main_failed = True
        for sink in self.sinks:
            sink.changed(nr, old)

    def main_status(self) -> str:
        """`run.status` for `finally` steps: what `finish` will record.  A run stopped by a
        signal is `cancelled`; one that `--fail-fast` stopped ends `failed`, as its exit says."""
        if self.cancelling and self.signals:
            return "cancelled"
        failed = self.main_failed or self.failed_before or self.cancelling
        return "failed" if failed else "succeeded"

    def finish(self, started: float, signum: int | None) -> RunResult:
        """Record and return the result; `signum` is the signal that stopped the run, if one
        came before its last step finished."""
        failed = self.failed_before or any(
            nr.state in (State.FAILED, State.UPSTREAM_FAILED) for nr in self.runs.values()
        )
        if self.storage_error is not None:
            status, code = "failed", EXIT_STORE
        elif signum is not None:
            status = "cancelled"
            exits = {int(signal.SIGTERM): EXIT_SIGTERM, int(signal.SIGINT): EXIT_SIGINT}
            code = exits.get(int(signum), 128 + int(signum))
        elif failed or self.cancelling:
            status, code = "failed", EXIT_FAILED
        else:
            status, code = "succeeded", EXIT_OK
        outputs: dict[str, Any] = {}
        self.kept_groups()
        nodes = self.all_nodes()
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
        result = RunResult(
            self.run_id,
            status,
            code,
            MappingProxyType(nodes),
            outputs,
            started,
            time.time(),
            signum,
            counts,
        )
        for sink in self.sinks:
            sink.run_finished(result)
        return result


def kept_run(node: Node, row: Mapping[str, Any]) -> NodeRun:
    """A step left out of `resume --only`, as the store recorded it."""
    state = State(row["state"])
    nr = NodeRun(node, state=state, log_path=str(row["log_path"] or ""), reused=True)
    nr.attempt = nr.base = int(row["attempts"] or 0)
    if state in (State.SUCCEEDED, State.CACHED):
        nr.output_json = str(row["output_json"] or "null")
        nr.output = json.loads(nr.output_json)
    nr.kind, nr.error, nr.exit_code = row["error_kind"], row["error"] or "", row["exit_code"]
    nr.started, nr.finished, nr.worker = row["started"], row["finished"], row["worker"]
    return nr


def group_state(members: Sequence[NodeRun]) -> State:
    """The state of a group (fan-out, template instance) from its members' (semantics.md, the
    table under "Step states"): the first of `failed`, `upstream_failed`, `cancelled` that a
    member has; else `succeeded` when one succeeded or was cached (or there are none); else
    `failed_allowed` when one is; else (all skipped) `skipped`."""
    states = {m.state for m in members}
    for worst in (State.FAILED, State.UPSTREAM_FAILED, State.CANCELLED):
        if worst in states:
            return worst
    if not states or states & {State.SUCCEEDED, State.CACHED}:
        return State.SUCCEEDED
    if State.FAILED_ALLOWED in states:
        return State.FAILED_ALLOWED
    return State.SKIPPED


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
