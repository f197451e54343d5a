"""`--otlp`: the run as OpenTelemetry spans, sent by the SDK's OTLP/HTTP exporter.

A reader of the change records (changes.py), like the store and the reporters: it never sees
the run state.  The tree is run > group (template instance, for_each, inlined pipeline, nested
as they are) > step > attempt.  The run's span starts when the sink is made (before the
scheduler, whose tasks need its trace id); an attempt's span is sent when its completion is
recorded; the spans of the steps and groups are sent at the end of the run, in their final
state.  Below the run, span ids are derived from the trace id (tracecontext.py), which is how a
step's `TRACEPARENT` names its attempt's span before that span exists.

The SDK reads the standard variables itself (OTEL_EXPORTER_OTLP_ENDPOINT and
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_SDK_DISABLED, OTEL_BSP_*): nothing here
overrides them; `runner` is only the service name when none is given.  A `TRACEPARENT` in the
runner's own environment (a CI job's span) becomes the parent of the run's span.

The SDK is imported here only, and only with `--otlp`: `runner --help` and a run without the
option never load it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import tracecontext
from .changes import RunInfo, RunResult, StepChanged
from .errors import UsageError
from .kinds import FailureKind, RunStatus
from .model import State
from .secrets import Masker

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

EXTRA = "otlp"
MISSING = (
    "--otlp needs the OpenTelemetry SDK and its OTLP/HTTP exporter, which are not installed "
    f"({{missing}}): install the `{EXTRA}` extra, e.g. "
    f"pip install 'yaml-pipeline-runner[{EXTRA}]'"
)
SERVICE_NAME = "runner"  # when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one
_FAILED = (State.FAILED, State.UPSTREAM_FAILED)  # the span's status is ERROR
_NOT_DONE = (*_FAILED, State.FAILED_ALLOWED, State.CANCELLED)  # the span says why


def check_installed() -> None:
    """UsageError (exit 2), naming the extra, when the SDK or the exporter is missing."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise UsageError(MISSING.format(missing=exc.name or exc)) from None


class _Forced:
    """The span id the SDK's id generator gives next, once (see the module)."""

    def __init__(self) -> None:
        self.next: int | None = None


def _provider(forced: _Forced) -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class Ids(RandomIdGenerator):
        def generate_span_id(self) -> int:
            given, forced.next = forced.next, None
            return given if given is not None else super().generate_span_id()

    resource = Resource.create()  # the OTEL_* variables, and the SDK's defaults
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource, id_generator=Ids())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OtlpSink:
    """Spans of one run (or resume), sent as the run goes and flushed at its end."""

    def __init__(self, run_id: str, pipeline: str, masker: Masker, resumed: bool) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        check_installed()
        self.masker = masker
        self.common = {"runner.pipeline": masker.text(pipeline), "runner.run.id": run_id}
        self.forced = _Forced()
        self.provider = _provider(self.forced)
        self.tracer: Tracer = self.provider.get_tracer("pipeline_runner")
        context = None
        incoming = tracecontext.parse(os.environ.get("TRACEPARENT"))
        if incoming is not None:  # the runner runs inside a traced job: under its span
            trace_id, parent, flags = incoming
            outer = SpanContext(
                int(trace_id, 16), int(parent, 16), True, TraceFlags(int(flags, 16))
            )
            context = trace.set_span_in_context(NonRecordingSpan(outer))
        self.run_span: Span = self.tracer.start_span(
            f"run {pipeline}",
            context=context,
            attributes={**self.common, "runner.resumed": resumed},
        )
        own = self.run_span.get_span_context()
        self.trace_id = f"{own.trace_id:032x}"
        self.flags = int(own.trace_flags)
        # None when the SDK is disabled (OTEL_SDK_DISABLED): the steps get no TRACEPARENT
        self.trace = f"{self.trace_id}-{self.flags:02x}" if own.is_valid else None
        self.running: dict[str, tuple[int, float]] = {}  # step -> its attempt running, since
        self.sent: set[tuple[str, int]] = set()  # attempts whose span is sent
        self.seen: dict[str, StepChanged] = {}  # nodes this invocation changed: their last record
        self.decided: dict[str, float] = {}  # when each of them last changed state

    # -- the Sink protocol ----------------------------------------------------------------------

    def run_started(self, run: RunInfo) -> None:
        self.run_span.set_attributes(
            {"runner.executor": run.executor, "runner.workers": run.workers}
        )

    def changed(self, change: StepChanged) -> None:
        # a node a resume keeps as it was gets no span: it did nothing in this invocation
        if change.old is not change.state:
            self.decided[change.id] = time.time()
        if change.id in self.decided:
            self.seen[change.id] = change
        if change.state is State.RUNNING and change.old is not State.RUNNING:
            self.running[change.id] = (change.attempt, time.time())
        done = change.last_attempt
        if done is not None and (change.id, change.attempt) not in self.sent:
            self._attempt(change, change.attempt, done.started, done.finished, done)

    def turn(self) -> None:
        pass

    def run_finished(self, result: RunResult) -> None:
        try:
            self._finish(result)
        finally:
            self.provider.shutdown()  # sends what the batch holds

    # -- spans ----------------------------------------------------------------------------------

    def _finish(self, result: RunResult) -> None:
        for sid, (attempt, since) in self.running.items():
            # an attempt that ended without a completion: refused by an open breaker, or
            # killed with the runner's workers
            change = self.seen.get(sid)
            if change is not None and (sid, attempt) not in self.sent:
                self._attempt(change, attempt, since, change.finished or result.finished, None)
        bounds = _bounds(result.nodes, self.decided)
        for nid, change in result.nodes.items():
            if nid in self.seen:
                self._node(change, *bounds.get(nid, (result.started, result.finished)))
        span = self.run_span
        span.set_attributes(
            {"runner.status": str(result.status), "runner.exit_code": result.exit_code}
        )
        if result.status is not RunStatus.SUCCEEDED:
            self._error(span, result.failure or f"the run {result.status}")
        span.end(end_time=_ns(result.finished))

    def _parent(self, change: StepChanged) -> str:
        if change.group is not None and change.group in self.seen:
            return tracecontext.node_span_id(self.trace_id, change.group)
        return f"{self.run_span.get_span_context().span_id:016x}"

    def _attempt(
        self, change: StepChanged, attempt: int, start: float, end: float, done: Any
    ) -> None:
        self.sent.add((change.id, attempt))
        if done is not None:
            kind = None if done.ok else done.kind or str(FailureKind.ERROR)
            message = done.message
        else:  # the step's last attempt says why, if it is this one
            last = change.attempt == attempt
            kind = (change.error_kind if last else None) or str(FailureKind.LOST)
            message = change.error if last and change.error else "the attempt never completed"
        attributes: dict[str, Any] = {
            **self.common,
            "runner.step.id": change.id,
            "runner.attempt": attempt,
            "runner.outcome": "succeeded" if kind is None else kind,
        }
        if done is not None:
            attributes["runner.worker"] = done.worker
            if done.exit_code is not None:
                attributes["runner.exit_code"] = done.exit_code
        if kind is not None:
            attributes["runner.failure.kind"] = kind
        span = self._start(
            f"{change.id} attempt {attempt}",
            tracecontext.node_span_id(self.trace_id, change.id),
            tracecontext.attempt_span_id(self.trace_id, change.id, attempt),
            start,
            attributes,
        )
        if kind is not None:
            self._error(span, message)
        span.end(end_time=_ns(max(end, start)))

    def _node(self, change: StepChanged, start: float, end: float) -> None:
        attributes: dict[str, Any] = {
            **self.common,
            "runner.step.id": change.id,
            "runner.node.kind": change.kind.value,
            "runner.state": change.state.value,
            "runner.attempts": change.attempt,
        }
        optional = {
            "runner.uses": change.uses,
            "runner.key": change.key,
            "runner.group": change.group,
            "runner.group.kind": change.group_kind,
            "runner.failure.kind": change.error_kind if change.state in _NOT_DONE else None,
            "runner.exit_code": change.exit_code,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        span = self._start(
            change.id,
            self._parent(change),
            tracecontext.node_span_id(self.trace_id, change.id),
            start,
            attributes,
        )
        if change.state in _FAILED:
            self._error(span, change.error or change.state.value)
        span.end(end_time=_ns(max(end, start)))

    def _start(
        self, name: str, parent: str, span_id: str, start: float, attributes: dict[str, Any]
    ) -> Span:
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        context = SpanContext(
            int(self.trace_id, 16), int(parent, 16), False, TraceFlags(self.flags)
        )
        self.forced.next = int(span_id, 16)
        return self.tracer.start_span(
            self.masker.text(name),
            context=trace.set_span_in_context(NonRecordingSpan(context)),
            attributes={
                k: self.masker.text(v) if isinstance(v, str) else v for k, v in attributes.items()
            },
            start_time=_ns(start),
        )

    def _error(self, span: Span, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, self.masker.text(message)))


def _bounds(
    nodes: Mapping[str, StepChanged], decided: Mapping[str, float]
) -> dict[str, tuple[float, float]]:
    """When each node this invocation changed began and ended: a step's own times (a step that
    never ran: the moment it was decided), a group's from its own or its members'."""
    bounds: dict[str, tuple[float, float]] = {}
    for nid, change in nodes.items():
        if nid not in decided or change.is_group:
            continue
        at = change.finished or change.started or decided[nid]
        bounds[nid] = (change.started or at, change.finished or at)
    members: dict[str, list[str]] = {}
    for nid, change in nodes.items():
        if change.group is not None:
            members.setdefault(change.group, []).append(nid)

    def group(nid: str) -> tuple[float, float] | None:
        if nid in bounds:
            return bounds[nid]
        change = nodes[nid]
        spans = [b for m in members.get(nid, ()) if (b := group(m)) is not None]
        start = change.started or min((b[0] for b in spans), default=None)
        end = change.finished or max((b[1] for b in spans), default=None)
        if start is None or end is None:
            return None
        bounds[nid] = (start, end)
        return bounds[nid]

    for nid in nodes:
        if nid in decided:
            group(nid)
    return bounds
