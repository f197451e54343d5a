"""What the core tells its readers: frozen records, nothing mutable of the run state.

The scheduler emits a `StepChanged` for each change of a step (a new state, or news such as its
process group) through the `Sink` protocol; the store, the reporters and the report files read
only these records, a `RunInfo` when the run starts and a `RunResult` when it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from .errors import Location
from .kinds import RunStatus
from .messages import Completion
from .model import NodeKind, Plan, State

NO_FILES: Mapping[str, str] = MappingProxyType({})


class StepChanged(NamedTuple):
    """A step (or group) as it is now, and the state it had before (`old` is `state` for news
    that changes no state: its process started).  A named tuple: immutable like a frozen
    dataclass, and made five times faster (one is made for every change of every step)."""

    id: str
    kind: NodeKind
    state: State
    old: State
    attempt: int
    started: float | None
    finished: float | None
    error_kind: str | None  # of the last failed attempt
    error: str
    exit_code: int | None
    worker: str | None
    output: Any
    output_json: str
    log_path: str
    group: str | None
    key: str | None
    uses: str | None
    location: Location
    process: tuple[int, str] | None = None  # the running attempt's process group and start
    last_attempt: Completion | None = None  # the completion of attempt `attempt`, if any
    attempts: tuple[Completion, ...] = ()  # the attempts this runner made
    cache_key: str | None = None
    cache_files: Mapping[str, str] = NO_FILES  # the outputs' fingerprint
    group_kind: str | None = None  # a group's: for_each, template or pipeline
    outputs_json: str | None = None  # a step's named outputs (a JSON object), if any
    inputs_json: str | None = None  # a failed step's rendered inputs (a JSON object)

    @property
    def is_step(self) -> bool:
        return self.kind is NodeKind.STEP

    @property
    def is_group(self) -> bool:
        return self.kind is NodeKind.GROUP


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the readers learn as a run starts: its id, plan, folder and every node's state."""

    run_id: str
    plan: Plan
    run_dir: Path
    executor: str
    workers: int
    nodes: Mapping[str, StepChanged]  # every node as the run starts, in file order
    started: float


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended: its status and exit code, every node's last state and the outputs."""

    run_id: str
    status: RunStatus  # succeeded | failed | cancelled | compensated | compensation_failed
    exit_code: int
    nodes: Mapping[str, StepChanged]
    outputs: dict[str, Any]
    started: float
    finished: float
    signal: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    failure: str | None = None  # why the run as a whole failed (the pipeline's timeout)


class Sink(Protocol):
    """Observers of a run: reporters and the store.  Called from the scheduler's thread."""

    def run_started(self, run: RunInfo) -> None: ...

    def changed(self, change: StepChanged) -> None: ...

    def turn(self) -> bool | None:
        """The end of a scheduler turn.  False: the changes so far are kept, not committed (the
        store's group commit); the readers after it are not told of them yet."""

    def run_finished(self, result: RunResult) -> None: ...
