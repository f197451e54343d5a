"""The resolved plan: frozen data that the engine consumes unchanged.  No I/O here.

A `Plan` is a DAG of `Node`s keyed by qualified id, in file order.  Three kinds of node:

- `STEP`: one attempt-running unit (a plugin call);
- `GROUP`: the instances of a `for_each`, a template instance or an inlined `pipeline`; it needs
  its members, runs nothing, and its output is assembled from theirs (list + mapping for a
  `for_each`, the template's `outputs` for an instance), so `needs: [etl]` waits for all of `etl`;
- `MAPPED`: a `for_each` whose list is only known at run time; the scheduler expands it into
  STEP instances when its needs are done, and it then behaves like a GROUP.  A step with a
  `loop` is MAPPED too: its instances are its iterations, made one at a time (loops.py).

Values that can only be rendered at run time (they read `steps`, `run` or `secrets`) stay in the
plan as `Deferred` leaves, with the `Scope` (template parameters, the `for_each` item, the
step-name aliases) they must be rendered in.
"""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import Location

if TYPE_CHECKING:
    import random

EMPTY: Mapping[str, Any] = MappingProxyType({})


class NodeKind(enum.Enum):
    STEP = "step"
    GROUP = "group"
    MAPPED = "mapped"


class State(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FAILED_ALLOWED = "failed_allowed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"
    CACHED = "cached"
    COMPENSATED = "compensated"  # succeeded, then undone by its compensation (a saga)
    WAITING = "waiting"  # an approval gate waiting for its answer (approvals.py)
    PARTIAL = "partial"  # a fan-out with failed instances whose `success` policy holds

    @property
    def finished(self) -> bool:
        return self not in (State.PENDING, State.RUNNING, State.RETRYING, State.WAITING)

    @property
    def ok(self) -> bool:
        """Dependents may run after this state."""
        return self in (
            State.SUCCEEDED,
            State.SKIPPED,
            State.FAILED_ALLOWED,
            State.CACHED,
            State.PARTIAL,
        )


class IfRunning(enum.Enum):
    """What a run does when another run of its concurrency group is going (`if_running`)."""

    SKIP = "skip"  # not started: exit EXIT_SKIPPED
    QUEUE = "queue"  # waits until the group is free
    CANCEL = "cancel"  # the running one is cancelled (as `runner cancel`), then this starts


@dataclass(frozen=True, slots=True)
class Concurrency:
    """`concurrency:`: at most one run of the group at a time on one state folder."""

    group: str
    if_running: IfRunning = IfRunning.QUEUE


@dataclass(frozen=True, slots=True)
class Schedule:
    """`schedule:`: when `runner schedule` starts runs; exactly one of `cron` and `interval`."""

    cron: str | None = None
    interval: float | None = None  # seconds
    timezone: str | None = None  # an IANA name; None is UTC
    params_from_previous: bool = False


@dataclass(frozen=True, slots=True)
class Deferred:
    """A template value rendered at run time (it reads upstream outputs, `run` or secrets)."""

    source: str
    shell: bool = False


def has_deferred(value: Any) -> bool:
    """Whether a value holds a Deferred anywhere (so it must be rendered at run time)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None or value is EMPTY:
        return False  # most leaves (and steps' `with`): no look at the Mapping protocol (ABC)
    if isinstance(value, Deferred):
        return True
    if kind is dict or isinstance(value, Mapping):
        return any(has_deferred(v) for v in value.values())
    if isinstance(value, list):
        return any(has_deferred(v) for v in value)
    return False


@dataclass(frozen=True, slots=True, eq=False)
class Scope:
    """What a node's templates see besides the run-wide names."""

    vars: Mapping[str, Any] = field(
        default_factory=lambda: EMPTY
    )  # template params, the `as` name; may hold Deferred
    aliases: Mapping[str, str] = field(
        default_factory=lambda: EMPTY
    )  # step name as written -> qualified node id
    parent: Scope | None = None  # where Deferred template params are rendered


DURATION = {"duration": True}  # field metadata: written as a duration (`30s`, `1h30m`, 2.5)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A step's `retries`.  Each field is one key of the pipeline file's `retries` mapping, and
    its default here is the only one (the planner builds a policy from the keys given; a test
    holds the schema's documented defaults to these)."""

    max: int = 0
    delay: float = field(default=1.0, metadata=DURATION)
    backoff: float = 2.0
    max_delay: float = field(default=300.0, metadata=DURATION)
    jitter: bool = True
    on: frozenset[str | int] = frozenset()  # empty: retry any failure
    # No retry starts once this long has passed since the first attempt started (Argo's
    # retryStrategy.backoff.maxDuration); None: no limit.
    max_elapsed: float | None = field(default=None, metadata=DURATION)

    def allows(self, kind: str, exit_code: int | None = None) -> bool:
        if not self.on:
            return True
        return kind in self.on or (exit_code is not None and exit_code in self.on)

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before `attempt` (2 is the first retry)."""
        base = min(self.delay * self.backoff ** max(attempt - 2, 0), self.max_delay)
        if self.jitter:
            if rng is None:
                import random

                rng = random.Random()
            base *= rng.uniform(0.5, 1.5)
        return float(base)


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """Globs as planned: rendered text, or Deferred where they read what only a run knows."""

    inputs: tuple[str | Deferred, ...] = ()
    outputs: tuple[str | Deferred, ...] = ()


@dataclass(frozen=True, slots=True)
class Compensation:
    """A step's `compensate`: the plugin that undoes it, and its parameters."""

    uses: str
    with_: Any = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class SuccessPolicy:
    """A fan-out's `success`: when its instances count as a success although some failed.
    Every condition given must hold (success_policy.py)."""

    min: int | None = None  # at least this many instances succeeded
    ratio: float | None = None  # at least this share of the instances succeeded
    critical: tuple[str, ...] = ()  # the instances with these keys succeeded


@dataclass(frozen=True, slots=True)
class ForEach:
    """The run-time fan-out of a MAPPED node."""

    items: Any  # a Deferred list, or a matrix mapping with Deferred in it
    as_name: str = "item"
    key: str | None = None
    max_parallel: int | None = None


@dataclass(frozen=True, slots=True)
class Loop:
    """A step's or template instance's `loop`: iterations run one after the other until
    `until` (a Jinja expression over the last iteration's output) holds (loops.py)."""

    until: str
    max_iterations: int


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One node of the plan: a step, a group (fan-out, template or pipeline instance) or a
    MAPPED fan-out expanded at run time; immutable once planned."""

    id: str
    kind: NodeKind
    order: int
    location: Location
    path: str  # where it was written (`steps[2]`, `templates.etl.steps[0]`)
    uses: str | None = None
    with_: Any = field(default_factory=lambda: EMPTY)
    needs: tuple[str, ...] = ()
    condition: str | bool | None = None
    trigger: str = "all_success"  # when its needs let it run (triggers.py)
    status_if: bool = False  # its `if` calls a status function: the `if` alone decides
    on_cancel: bool = False  # its `if` calls always() or cancelled(): it runs when cancelled
    retries: RetryPolicy = RetryPolicy()
    timeout: float | None = None
    continue_on_error: bool = False
    skip_exit_codes: frozenset[int] = frozenset()  # exit codes that make it `skipped`
    pool: str | None = None
    priority: int = 0
    env: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    scope: Scope = Scope()
    group: str | None = None  # the enclosing GROUP/MAPPED node
    key: str | None = None  # instance key within its for_each
    item: Any = None
    has_item: bool = False
    members: tuple[str, ...] = ()  # GROUP: members in item/file order
    group_kind: str | None = None  # "for_each" | "template" | "pipeline"
    outputs: Any = None  # GROUP of a template/pipeline: the outputs spec (with Deferred)
    for_each: ForEach | None = None  # MAPPED only
    # MAPPED of a template: its instance planned once (ids `<id>.<inner>`), copied per item
    body: tuple[Node, ...] = ()
    max_parallel: int | None = None  # GROUP of a for_each: limit on running members
    fail_fast: bool = False  # GROUP of a matrix: a failed member cancels its siblings
    success: SuccessPolicy | None = None  # GROUP/MAPPED of a for_each: its success policy
    compensate: Compensation | None = None
    cache: CacheSpec | None = None
    resources: Mapping[str, float] = field(default_factory=lambda: EMPTY)
    is_finally: bool = False
    loop: Loop | None = None  # MAPPED only: its instances are the iterations `<id>.1`, ...


@dataclass(frozen=True)
class Plan:
    """A planned pipeline: its nodes in file order and what the run needs to know of the file."""

    name: str
    file: str
    pipeline_dir: str
    params: Mapping[str, Any]
    env: Mapping[str, str]
    secrets: tuple[str, ...]
    pools: Mapping[str, int]
    breakers: Mapping[str, tuple[int, float]]
    nodes: Mapping[str, Node]  # in file order
    outputs: Mapping[str, Any]  # name -> value (with Deferred)
    description: str = ""
    aliases: Mapping[str, str] = field(default_factory=lambda: EMPTY)  # top-level step names
    dependents: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: EMPTY)
    timeout: float | None = None  # seconds the main steps may take, from the run's start
    schedule: Schedule | None = None
    concurrency: Concurrency | None = None

    def steps(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind is not NodeKind.GROUP]

    def folder_of(self, node: Node) -> str:
        """The folder of the file the step was written in (an inlined pipeline's steps run in
        theirs, with it on the import path); the pipeline's folder for steps of no file."""
        return _folder(node.location.file, self.pipeline_dir)


@functools.lru_cache(maxsize=64)
def _folder(file: str, default: str) -> str:
    folder = os.path.dirname(os.path.abspath(file)) if file else ""
    return folder if folder and os.path.isdir(folder) else default
