"""The run state: one mutable `NodeRun` per node, the queues and the counters, owned by the
scheduler's loop (the core: scheduler, runstate and the decision modules).  Readers outside
the core see frozen `StepChanged` records instead (changes.py).

Each node keeps a count of unfinished needs (`waiting`); `finish` is the one place that gives
a node its final state and counts it.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import defaults, success_policy
from .changes import NO_FILES, StepChanged
from .kinds import INSTANCE_KINDS
from .messages import Completion, Task
from .model import EMPTY, Node, NodeKind, Plan, State

if TYPE_CHECKING:
    from .approvals import Book
    from .cache import CacheBackend, Globs


Preset = tuple[State, Any, "str | None"]  # a kept step: its state, output, named outputs


@dataclass
class Options:
    """The scheduler's options for one run: fail-fast, --only, the grace, what a resume keeps,
    the cache."""

    fail_fast: bool = False
    only: Sequence[str] = ()
    grace: float = defaults.GRACE
    # resume: done nodes, with their output and named outputs (JSON)
    preset: Mapping[str, Preset] = field(default_factory=dict)
    attempts_done: Mapping[str, int] = field(default_factory=dict)  # resume: attempts so far
    recorded_rows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # resume: steps
    cache: CacheBackend | None = None  # where cached results are looked up
    use_cache: bool = True  # False: --no-cache (run every step; still record results)
    forced: frozenset[str] = frozenset()  # run --force, resume --rerun: no cache lookup
    compensate: bool = True  # False: --no-compensate
    gates: Book | None = None  # where approval gates and their answers are kept (the store)
    seed: int | None = None
    trace: str | None = None  # `--otlp`: the run's TRACE_ID-FLAGS, for $TRACEPARENT


Entry = tuple[int, int, int, str]
_FAILED = (State.FAILED, State.FAILED_ALLOWED)  # the states whose record keeps the inputs
_UNEXPANDED_ENDS = frozenset(
    {State.FAILED, State.FAILED_ALLOWED, State.UPSTREAM_FAILED, State.SKIPPED, State.CANCELLED}
)
_record: Callable[[type[StepChanged], tuple[Any, ...]], StepChanged] = (
    tuple.__new__
)  # a ready-queue entry: -priority, -depth, order, id


@dataclass(slots=True)
class NodeRun:
    """The mutable run state of one node (owned by the core).

    A 100,000-step run keeps one per node for the whole run: slots (no per-object dict), and
    the collections most nodes never fill are shared empty tuples and mappings, replaced (not
    changed in place) by the few nodes that get some."""

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
    members: Sequence[str] = ()  # an expanded MAPPED node's instances (loop: so far)
    # groups: key -> output (a template instance's: its `outputs`); steps: their named outputs
    outputs: dict[str, Any] | None = None
    outputs_json: str | None = None  # a step's named outputs as recorded (None: none)
    attempts: tuple[Completion, ...] = ()  # this runner's attempts, in order
    reused: bool = False  # output taken from an earlier run (resume) or the cache
    base: int = 0  # attempts made by earlier runs of the same run id (resume)
    cache_key: str | None = None
    cache_files: Mapping[str, str] = field(default_factory=lambda: NO_FILES)  # its fingerprint
    cache_globs: Globs | None = None  # `cache.inputs`/`outputs`, rendered
    completed_seq: int = 0  # order of success, for compensation in reverse
    compensates: str | None = None  # a compensation node: the step it undoes
    process: tuple[int, str] | None = None  # the running attempt's process group and start
    task: Task | None = None
    log_path: str = ""
    follow_id: int = 0  # an attempt queued to run right after the step it needs (see chains)

    @property
    def id(self) -> str:
        return self.node.id

    def view(self) -> Mapping[str, Any]:
        return {
            "output": self.output,
            "outputs": self.outputs if self.outputs is not None else EMPTY,
            "state": self.state.value,
            "key": self.node.key,
        }

    def take(self, output: Any, output_json: str, outputs_json: str | None) -> None:
        """A step's result: its output and its named outputs (as JSON, None for none)."""
        self.output, self.output_json = output, output_json
        self.outputs_json = outputs_json
        self.outputs = json.loads(outputs_json) if outputs_json else None

    def reported_kind(self) -> NodeKind:
        """The node's kind for the readers: a run-time `for_each` that ended before its items
        were known (its expression failed, or a need failed or was skipped) is a step that
        ended so, counted and reported like one; once expanded it is the group of its
        instances.  A loop that failed on its own (`loop_limit`, an `until` that cannot be
        evaluated), not by an iteration's failure, is a failed step too."""
        kind = self.node.kind
        if kind is not NodeKind.MAPPED:  # every step's case: one comparison
            return kind
        own = not self.members or (self.node.loop is not None and self.kind is not None)
        if kind is NodeKind.MAPPED and own and self.state in _UNEXPANDED_ENDS:
            return NodeKind.STEP
        return kind

    def change(self, old: State) -> StepChanged:
        """A frozen record of the node as it is now, having been `old` before."""
        node, attempts = self.node, self.attempts
        # this runner's attempts, after those of earlier runs (base): the last is the current
        current = bool(attempts) and self.base + len(attempts) == self.attempt
        # Every field given, in order: the tuple is made directly, without the named tuple's
        # own __new__ (a Python call with 24 arguments; one record is made per change).
        return _record(
            StepChanged,
            (
                node.id,
                self.reported_kind(),
                self.state,
                old,
                self.attempt,
                self.started,
                self.finished,
                self.kind,
                self.error,
                self.exit_code,
                self.worker,
                self.output,
                self.output_json,
                self.log_path,
                node.group,
                node.key,
                node.uses,
                node.location,
                self.process,
                attempts[-1] if current else None,
                attempts,  # a tuple: shared with the node, not copied
                self.cache_key,
                self.cache_files or NO_FILES,
                node.group_kind,
                self.outputs_json,
                self.inputs_json() if self.state in _FAILED else None,
            ),
        )

    def inputs_json(self) -> str | None:
        """The step's rendered inputs as JSON: `with` (and the for_each item), as its last
        attempt was given them; None when it never got so far."""
        task = self.task
        if task is None or self.node.kind is not NodeKind.STEP:
            return None
        inputs: dict[str, Any] = {"with": task.with_}
        if self.node.has_item:
            inputs["item"] = task.item
        return json.dumps(inputs, default=str, ensure_ascii=False)


class RunState:
    """The nodes of a run, the ready queue and its waiting rooms, and the counters."""

    def __init__(self, plan: Plan, emit: Callable[[StepChanged], None]) -> None:
        self.plan = plan
        self.emit = emit
        self.runs: dict[str, NodeRun] = {}
        self.kept: dict[str, NodeRun] = {}  # resume --only: steps left out, as recorded
        # The plan's own tuples: a list only for a node that gains dependents during the run
        # (add_dependent), not one per node of a big plan.
        self.dependents: dict[str, Sequence[str]] = dict(plan.dependents)
        self.depth: dict[str, int] = {}  # steps on the longest chain from a node to the end
        self.ready: list[Entry] = []
        self.blocked: dict[str, list[Entry]] = {}  # limit -> steps waiting for it
        self.timers: list[tuple[float, str]] = []  # retries: (monotonic time, id)
        self.pool_busy: dict[str, int] = {}
        self.group_busy: dict[str, int] = {}
        self.legs: dict[str, set[str]] = {}  # a limited fan-out of templates: its legs begun
        self.unfinished = 0  # nodes not in a final state
        self.main_unfinished = 0  # of those, not `finally` steps
        self.running = 0  # attempts handed to the executor and not ended
        self.success_seq = 0
        self.main_failed = False  # a main step failed or upstream_failed
        self.cancelling = False  # a signal, --fail-fast or a full disk stopped scheduling
        self.hard_cancel = False  # a second signal: `finally` steps stop too
        self.cancel_reason: tuple[str, str] | None = None  # the pipeline's timeout: kind, text
        self.by_attempt: dict[int, str] = {}  # running attempts: id -> step
        self.next_attempt_id = 1
        # False when no limit can hold a step back (limits.unlimited): its slots are not kept
        self.limited = True

    def new_attempt_id(self) -> int:
        attempt_id = self.next_attempt_id
        self.next_attempt_id += 1
        return attempt_id

    def stopping(self, nr: NodeRun) -> bool:
        """Whether the cancellation stops `nr`: every step once it began, except `finally`
        steps and steps whose `if` calls always() or cancelled(), which run to their end
        (retries included) unless a second signal came."""
        node = nr.node
        return self.cancelling and (self.hard_cancel or not (node.is_finally or node.on_cancel))

    def add(self, nr: NodeRun) -> None:
        """A node joins the run, unfinished."""
        self.runs[nr.id] = nr
        self.unfinished += 1
        if not nr.node.is_finally:
            self.main_unfinished += 1

    def mark(self, nr: NodeRun, state: State) -> None:
        """Set a state and tell the readers."""
        old = nr.state
        nr.state = state
        if (
            (state is State.FAILED or state is State.UPSTREAM_FAILED)
            and not nr.node.is_finally
            and not success_policy.under_policy(nr.node, self.runs)
        ):
            self.main_failed = True  # a fan-out's success policy judges its instances
        self.emit(nr.change(old))

    def news(self, nr: NodeRun) -> None:
        """Tell the readers about a node whose state did not change (its process started)."""
        self.emit(nr.change(nr.state))

    def finish(self, nr: NodeRun, state: State, quiet: bool = False, ranked: bool = True) -> None:
        """The one place a node reaches its final state: set it (and tell the readers, unless
        `quiet`: a step kept from an earlier run, whose record stays as it was) and count it.
        A success is `ranked` in the order of successes (compensations undo in reverse), but
        for the steps kept as the run starts (resume), which were not done in this run."""
        if quiet:
            nr.state = state
        else:
            self.mark(nr, state)
        self.unfinished -= 1
        if not nr.node.is_finally:
            self.main_unfinished -= 1
        if state is State.SUCCEEDED:
            nr.task = None  # nothing reads a succeeded step's task: a big run keeps none
            if ranked:
                self.success_seq += 1
                nr.completed_seq = self.success_seq

    def enqueue(self, nr: NodeRun) -> None:
        node = nr.node
        heapq.heappush(
            self.ready, (-node.priority, -self.depth.get(node.id, 0), node.order, node.id)
        )

    def lookup(self, nid: str) -> Mapping[str, Any]:
        """What a template reads of `steps.<nid>`; of a group also `states` and `errors`,
        by member key (dead letters: which instances failed, and why)."""
        found = self.runs.get(nid)
        nr = found if found is not None else self.kept[nid]
        view = nr.view()
        if nr.node.kind is NodeKind.STEP:
            return view
        states, errors = {}, {}
        for mid in nr.members or nr.node.members:
            member = self.runs.get(mid) or self.kept.get(mid)
            if member is None:
                continue
            key = member.node.key or mid.removeprefix(nid + ".")
            states[key] = member.state.value
            if member.state.finished and not member.state.ok:
                errors[key] = self.first_error(member)
        return {**view, "states": states, "errors": errors}

    def first_error(self, nr: NodeRun) -> str:
        """The message of the step that made `nr` fail: a group's first failed member's."""
        while nr.node.kind is not NodeKind.STEP:
            members = [self.runs.get(m) or self.kept.get(m) for m in nr.members or nr.node.members]
            failed = [m for m in members if m is not None and m.state is State.FAILED]
            if not failed:
                break
            nr = failed[0]
        return nr.error

    def all_nodes(self) -> dict[str, NodeRun]:
        """Every node of the run: those of this run and, after `resume --only`, the kept ones,
        in file order."""
        if not self.kept:
            return self.runs
        rank = {nid: i for i, nid in enumerate(self.plan.nodes)}
        merged = {**self.runs, **self.kept}
        return dict(sorted(merged.items(), key=lambda item: rank.get(item[0], len(rank))))

    def records(self) -> dict[str, StepChanged]:
        """Frozen records of every node of the run, in file order."""
        return {nid: nr.change(nr.state) for nid, nr in self.all_nodes().items()}

    def add_dependent(self, nid: str, dependent: str) -> None:
        """`dependent` (an instance made at run time) needs `nid`."""
        found = self.dependents[nid]
        if not isinstance(found, list):
            found = self.dependents[nid] = list(found)
        found.append(dependent)

    def dependents_of(self, nid: str) -> list[NodeRun]:
        runs = self.runs
        return [runs[d] for d in self.dependents.get(nid, ())]


def step_counts(nodes: Iterable[NodeRun]) -> dict[str, int]:
    """How many steps (not groups) ended in each state."""
    counts: dict[str, int] = {}
    for nr in nodes:
        if nr.reported_kind() is NodeKind.STEP:
            counts[nr.state.value] = counts.get(nr.state.value, 0) + 1
    return counts


def kept_run(node: Node, row: Mapping[str, Any]) -> NodeRun:
    """A step left out of `resume --only`, as the store recorded it."""
    state = State(row["state"])
    nr = NodeRun(node, state=state, log_path=str(row["log_path"] or ""), reused=True)
    nr.attempt = nr.base = int(row["attempts"] or 0)
    if state in (State.SUCCEEDED, State.CACHED):
        output_json = str(row["output_json"] or "null")
        nr.take(json.loads(output_json), output_json, row["outputs_json"])
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


def judged(node: Node, members: Sequence[NodeRun]) -> tuple[State, str]:
    """A group's state from its members', with its success policy if it has one, and the
    policy's note (why it failed, or how many failed when `partial`)."""
    state = group_state(members)
    if node.success is None:
        return state, ""
    ended = [(m.node.key or m.id, m.state) for m in members]
    return success_policy.decide(node.success, ended, state)


def group_output(
    nr: NodeRun, members: Sequence[NodeRun], render: Callable[[Any], Any]
) -> tuple[Any, dict[str, Any] | None]:
    """A group's output (and a fan-out's by key) from its members': a template's `outputs`
    rendered by `render` (raises TemplateError), its members' by inner id, or a fan-out's list
    and mapping by key (without its skipped instances)."""
    node = nr.node
    if node.group_kind not in INSTANCE_KINDS:
        # A skipped instance gave nothing: the fan-out's outputs leave it out (as Argo's do).
        # Nor does one that failed under a success policy (the fan-out is `partial`).
        ran = [m for m in members if m.state is not State.SKIPPED and m.state.ok]
        return [m.output for m in ran], {m.node.key or m.id: m.output for m in ran}
    if node.outputs is None:
        return {m.id.removeprefix(node.id + "."): m.output for m in members}, None
    out = render(node.outputs)  # also `steps.X.outputs.NAME`, as a GitHub job's outputs are read
    return out, out if isinstance(out, dict) else None
