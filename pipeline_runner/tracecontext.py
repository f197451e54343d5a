"""W3C trace context for `--otlp`: the `TRACEPARENT` a step's attempt sees, and span ids.

A step's attempt runs in a worker before its span exists (the span ends when the attempt does),
so the ids of the spans below the run are not drawn at random: they are derived from the
run's trace id and the step's id (and the attempt's number).  The worker computes the
`TRACEPARENT` of an attempt and the exporter (otlp.py) the id of its span by the same
function, and neither has to tell the other.  The trace id itself is random, one per
invocation of `runner run` or `runner resume`.

This module imports nothing of the project's, and nothing of OpenTelemetry's: the worker uses
it, and a run without `--otlp` must not import the SDK.
"""

from __future__ import annotations

import hashlib
import re

# version 00: trace id (32 hex), parent span id (16 hex), flags (2 hex); none of them all zeros
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
SAMPLED = "01"


def span_id(trace_id: str, *parts: object) -> str:
    """A span id (16 hex digits, never all zeros) derived from the trace and `parts`."""
    text = "\0".join([trace_id, *(str(p) for p in parts)])
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return digest if digest.strip("0") else "0000000000000001"


def node_span_id(trace_id: str, node_id: str) -> str:
    """The span of a step or a group (a template instance, a fan-out)."""
    return span_id(trace_id, "node", node_id)


def attempt_span_id(trace_id: str, node_id: str, attempt: int) -> str:
    """The span of attempt `attempt` (counted from 1 over the run's life) of a step."""
    return span_id(trace_id, "attempt", node_id, attempt)


def traceparent(trace: str, node_id: str, attempt: int) -> str:
    """The `TRACEPARENT` of an attempt; `trace` is `TRACE_ID-FLAGS` as a task carries it."""
    trace_id, _, flags = trace.partition("-")
    return f"00-{trace_id}-{attempt_span_id(trace_id, node_id, attempt)}-{flags or SAMPLED}"


def parse(header: str | None) -> tuple[str, str, str] | None:
    """A `traceparent` value as (trace id, parent span id, flags), or None if it is not one
    (absent, another version, or an all-zeros id, which the recommendation makes invalid)."""
    if not header:
        return None
    found = _TRACEPARENT.match(header.strip().lower())
    if found is None:
        return None
    trace_id, parent, flags = found.groups()
    if not trace_id.strip("0") or not parent.strip("0"):
        return None
    return trace_id, parent, flags
