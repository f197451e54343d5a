"""Retries, their timers and the pools' circuit breakers: decisions over the run state.

A failed attempt with retries left waits on a timer heap (never in a worker) for its delay.
A pool with a breaker counts failures in a row; at its threshold the breaker opens and the
pool's steps fail at once, without being called, for the cooldown.  After it the breaker is
half-open: one step is let through (the trial) and the pool's other steps wait for its outcome.
"""

from __future__ import annotations

import heapq
import time
from enum import Enum
from typing import TYPE_CHECKING

from .kinds import FailureKind
from .model import Node, State
from .runstate import NodeRun, RunState

if TYPE_CHECKING:  # random is imported when a retry first needs jitter
    import random


def may_retry(nr: NodeRun, kind: str, now: float | None = None) -> bool:
    """Whether the step's retry policy gives it another attempt after this failure."""
    policy = nr.node.retries
    if nr.attempt - nr.base > policy.max or not policy.allows(kind, nr.exit_code):
        return False
    if policy.max_elapsed is not None and nr.attempts:
        elapsed = (time.time() if now is None else now) - nr.attempts[0].started
        return elapsed < policy.max_elapsed
    return True


def schedule_retry(state: RunState, nr: NodeRun, rng: random.Random) -> float:
    """Put the step's next attempt on the timer heap; the delay it waits."""
    delay = nr.node.retries.delay_before(nr.attempt - nr.base + 1, rng)
    heapq.heappush(state.timers, (time.monotonic() + delay, nr.id))
    return delay


MAX_TIMER_WAIT = 3600.0  # seconds the loop waits for a timer before it looks again


def retry_after_breaker(state: RunState, nr: NodeRun, until: float | None) -> bool:
    """A step its pool's open breaker rejected: when its `retries.on` names `breaker` and it
    has retries left, its next attempt waits on the timer heap until the cooldown ends
    (`until`, monotonic), when the breaker lets a trial through."""
    policy = nr.node.retries
    if until is None or FailureKind.BREAKER not in policy.on:
        return False
    if not may_retry(nr, FailureKind.BREAKER) or state.stopping(nr):
        return False
    heapq.heappush(state.timers, (max(until, time.monotonic()), nr.id))
    return True


def reject_by_breaker(state: RunState, nr: NodeRun, breakers: Breakers, pool: str) -> bool:
    """`nr` is rejected by its pool's open breaker without being called: the attempt is
    counted and fails with kind `breaker`.  True when it is retried after the cooldown
    (`retries.on: [breaker]`); False when that failure is final."""
    nr.attempt += 1
    nr.finished = time.time()
    nr.kind, nr.exit_code = FailureKind.BREAKER, None
    nr.error = breakers.open_message(pool)
    state.mark(nr, State.RUNNING)
    return retry_after_breaker(state, nr, breakers.open_until.get(pool))


def next_wait(state: RunState) -> float | None:
    """How long the loop may wait for the next retry: None when none is due.  A retry may wait
    longer than the operating system's waits can (2**31 ms, with a delay of up to 24 days plus
    jitter): the loop wakes each hour and looks again."""
    if not state.timers:
        return None
    return min(max(state.timers[0][0] - time.monotonic(), 0.0), MAX_TIMER_WAIT)


def due_retries(state: RunState, now: float) -> list[NodeRun]:
    """The steps whose retry delay has passed (taken off the timer heap), in time order."""
    due = []
    while state.timers and state.timers[0][0] <= now:
        _, nid = heapq.heappop(state.timers)
        due.append(state.runs[nid])
    return due


class Verdict(str, Enum):
    CLOSED = "closed"  # call the step
    TRIAL = "trial"  # half-open: call it, as the one trial
    WAIT = "wait"  # a trial runs: wait for its outcome
    OPEN = "open"  # fail it without calling it


class Breakers:
    """The state of each pool's breaker."""

    def __init__(self, breakers: dict[str, tuple[int, float]]) -> None:
        self.config = breakers  # pool -> (failures in a row, cooldown seconds)
        self.failures: dict[str, int] = {}
        self.open_until: dict[str, float] = {}
        self.trial: dict[str, str] = {}  # pool -> its half-open trial step

    def verdict(self, nr: NodeRun, now: float) -> Verdict:
        pool = nr.node.pool
        if pool is None or pool not in self.config:
            return Verdict.CLOSED
        if pool in self.trial:
            return Verdict.WAIT
        until = self.open_until.get(pool)
        if until is None:
            return Verdict.CLOSED
        if now >= until:
            self.trial[pool] = nr.id
            return Verdict.TRIAL
        return Verdict.OPEN

    def open_message(self, pool: str) -> str:
        failures, cooldown = self.config[pool]
        return (
            f"circuit breaker of pool '{pool}' is open after {failures} failures in a row; "
            f"not calling it for {cooldown:g}s"
        )

    def record(self, node: Node, ok: bool) -> None:
        """An attempt of a step of the pool ended: count it."""
        pool = node.pool
        if pool is None or pool not in self.config:
            return
        if ok:
            self.failures[pool] = 0
            self.open_until.pop(pool, None)
            return
        failures, cooldown = self.config[pool]
        self.failures[pool] = self.failures.get(pool, 0) + 1
        if self.failures[pool] >= failures:
            self.open_until[pool] = time.monotonic() + cooldown

    def end_trial(self, node: Node) -> str | None:
        """The attempt of `node` ended: if it was its pool's trial, the limit whose waiting
        steps go back to the ready queue (the breaker is closed or open again by now)."""
        pool = node.pool
        if pool is None or self.trial.get(pool) != node.id:
            return None
        del self.trial[pool]
        return "breaker:" + pool
