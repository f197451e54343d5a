"""`--otlp` and `--metrics`, through the `runner` command: a real OTLP/HTTP receiver on
127.0.0.1 (the protocol's own protobuf classes decode what the SDK's exporter sends), real
workers reading their `TRACEPARENT`, and the Prometheus textfile read by prometheus_client's
parser."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, RunCli, no_traceback, user_env, wait_for
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    error: bool
    start: int
    end: int


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


@dataclass
class Receiver:
    """What an OTLP/HTTP collector received: the spans of every request to /v1/traces."""

    url: str
    spans: list[Span] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        Span(
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            {a.key: _value(a.value) for a in s.attributes},
                            resource,
                            s.status.code == s.status.STATUS_CODE_ERROR,
                            s.start_time_unix_nano,
                            s.end_time_unix_nano,
                        )
                    )

    def named(self, name: str) -> Span:
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, (name, [s.name for s in self.spans])
        return found[0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            got.paths.append(self.path)
            got.take(body)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


PIPELINE = """
version: 1
name: traced
templates:
  build:
    params: {target: {}}
    steps:
      - id: compile
        uses: shell
        with: {cmd: 'printf %s "$TRACEPARENT" > tp-{{ target }}.txt'}
      - id: check
        needs: compile
        uses: python
        with: {call: "lib:check"}
steps:
  - id: prepare
    uses: python
    retries: {max: 1, delay: 10ms}
    with: {call: "lib:flaky"}
  - id: app
    needs: prepare
    template: build
    with: {target: app}
  - id: broken
    uses: shell
    continue_on_error: true
    with: {cmd: "exit 3"}
"""

LIB = """
import os
import shutil
from pathlib import Path

def flaky():
    marker = Path("flaky-once")
    if not marker.exists():
        marker.write_text("x")
        raise RuntimeError("first attempt fails")
    return "ok"

def check():
    return os.environ.get("TRACEPARENT")
"""

OUTER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def otel_env(receiver: Receiver, **more: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100", **more}


@pytest.fixture
def traced(tmp_path: Path, write_pipeline: Any) -> Path:
    return write_pipeline(PIPELINE, files={"lib.py": LIB})  # type: ignore[no-any-return]


def run_traced(run_cli: RunCli, path: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    summary = path.parent / "summary.json"
    result = run_cli(
        "run", str(path), "--progress", "plain", "--json", str(summary), *args, env=env
    )
    assert result.code == 0 and no_traceback(result.output), result.output
    return json.loads(summary.read_text())  # type: ignore[no-any-return]


def test_spans_of_run_instance_step_and_attempt_with_parents_and_attributes(
    traced: Path, run_cli: RunCli, receiver: Receiver
) -> None:
    env = otel_env(
        receiver,
        OTEL_SERVICE_NAME="ci-pipelines",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
        TRACEPARENT=OUTER,  # the runner runs in a traced CI job
    )
    summary = run_traced(run_cli, traced, env, "--otlp")
    run_id = summary["run_id"]
    assert set(receiver.paths) == {"/v1/traces"}
    spans = receiver.spans
    # every span once: run, group app, 4 steps, 5 attempts (prepare failed once)
    assert len(spans) == 11, [s.name for s in spans]
    assert len({s.span_id for s in spans}) == 11
    assert {s.trace_id for s in spans} == {OUTER.split("-")[1]}
    for span in spans:
        assert span.resource["service.name"] == "ci-pipelines"
        assert span.resource["deployment.environment"] == "test"
        assert span.attributes["runner.pipeline"] == "traced"
        assert span.attributes["runner.run.id"] == run_id
        assert span.start <= span.end

    run = receiver.named("run traced")
    assert run.parent == OUTER.split("-")[2]
    assert run.attributes["runner.status"] == "succeeded"
    assert run.attributes["runner.exit_code"] == 0
    assert run.attributes["runner.resumed"] is False
    assert not run.error

    group = receiver.named("app")
    assert group.parent == run.span_id
    assert group.attributes["runner.group.kind"] == "template"
    assert group.attributes["runner.state"] == "succeeded"
    for sid in ("app.compile", "app.check"):
        step = receiver.named(sid)
        assert step.parent == group.span_id
        assert step.attributes["runner.state"] == "succeeded"
        assert step.attributes["runner.step.id"] == sid
        attempt = receiver.named(f"{sid} attempt 1")
        assert attempt.parent == step.span_id
        assert attempt.attributes["runner.outcome"] == "succeeded"
        assert group.start <= step.start <= attempt.start <= attempt.end <= step.end
    assert run.start <= group.start and group.end <= run.end

    prepare = receiver.named("prepare")
    assert prepare.parent == run.span_id
    assert prepare.attributes["runner.attempts"] == 2
    assert prepare.attributes["runner.uses"] == "python"
    first, second = receiver.named("prepare attempt 1"), receiver.named("prepare attempt 2")
    assert first.parent == second.parent == prepare.span_id
    assert first.error and first.attributes["runner.failure.kind"] == "error"
    assert first.attributes["runner.attempt"] == 1 and second.attributes["runner.attempt"] == 2
    assert not second.error and "runner.failure.kind" not in second.attributes

    broken = receiver.named("broken")
    assert broken.attributes["runner.state"] == "failed_allowed"
    attempt = receiver.named("broken attempt 1")
    assert attempt.error and attempt.attributes["runner.exit_code"] == 3
    assert attempt.attributes["runner.failure.kind"] == "error"

    # the steps saw their attempt's span as TRACEPARENT: a shell step and a python step
    seen = (traced.parent / "tp-app.txt").read_text()
    compile_attempt = receiver.named("app.compile attempt 1")
    assert seen == f"00-{compile_attempt.trace_id}-{compile_attempt.span_id}-01"
    check_attempt = receiver.named("app.check attempt 1")
    by_id = {s["id"]: s for s in summary["steps"]}
    assert by_id["app.check"]["output"] == f"00-{check_attempt.trace_id}-{check_attempt.span_id}-01"


def test_resume_sends_its_own_trace_and_counts_attempts_on(
    run_cli: RunCli, write_pipeline: Any, receiver: Receiver
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: gated
        steps:
          - id: first
            uses: shell
            with: {cmd: "true"}
          - id: gate
            needs: first
            uses: shell
            with: {cmd: 'test -f open && printf %s "$TRACEPARENT" > tp.txt'}
        """
    )
    env = otel_env(receiver)
    first = run_cli("run", str(path), "--progress", "plain", "--otlp", env=env)
    assert first.code == 1 and no_traceback(first.output), first.output
    run_id = first.output.split("runner resume ")[1].split()[0]
    assert {s.name for s in receiver.spans} == {
        "run gated",
        "first",
        "first attempt 1",
        "gate",
        "gate attempt 1",
    }
    before = receiver.spans[:]
    receiver.spans.clear()
    (path.parent / "open").write_text("")
    again = run_cli("resume", run_id, "--progress", "plain", "--otlp", env=env)
    assert again.code == 0 and no_traceback(again.output), again.output
    # `first` is kept as it was: this invocation did nothing with it, and sends no span of it
    assert {s.name for s in receiver.spans} == {"run gated", "gate", "gate attempt 2"}
    run = receiver.named("run gated")
    assert run.attributes["runner.resumed"] is True and run.attributes["runner.run.id"] == run_id
    assert run.parent == ""  # no TRACEPARENT around the runner: the run is the root
    assert run.resource["service.name"] == "runner"  # no OTEL_SERVICE_NAME given
    assert run.trace_id != before[0].trace_id
    attempt = receiver.named("gate attempt 2")
    version, trace_id, parent, flags = (path.parent / "tp.txt").read_text().split("-")
    assert (version, trace_id, parent) == ("00", run.trace_id, attempt.span_id)
    assert int(flags, 16) & 1  # sampled (the SDK may set the random-trace-id bit too)
    failed = next(s for s in before if s.name == "run gated")
    assert failed.error and failed.attributes["runner.status"] == "failed"


def test_without_otlp_nothing_is_sent_and_steps_get_no_traceparent(
    traced: Path, run_cli: RunCli, receiver: Receiver
) -> None:
    env = otel_env(receiver)
    summary = run_traced(run_cli, traced, env)
    assert (traced.parent / "tp-app.txt").read_text() == ""
    assert {s["id"]: s for s in summary["steps"]}["app.check"]["output"] is None
    assert receiver.spans == []


def test_an_unreachable_collector_does_not_fail_the_run(traced: Path, run_cli: RunCli) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    run_traced(run_cli, traced, env, "--otlp")


def test_metrics_textfile(traced: Path, run_cli: RunCli) -> None:
    metrics = traced.parent / "runner.prom"
    metrics.write_text("old\n")
    inode = metrics.stat().st_ino
    run_traced(run_cli, traced, {}, "--metrics", str(metrics))
    # replaced by a rename, never rewritten in place: a collector reads the old file or the new
    assert metrics.stat().st_ino != inode
    assert [p.name for p in traced.parent.iterdir() if p.name.startswith("runner.prom")] == [
        "runner.prom"
    ]
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pipeline"))): s.value
        for f in families.values()
        for s in f.samples
    }
    for f in families.values():
        assert all(s.labels["pipeline"] == "traced" for s in f.samples)
    assert samples["runner_steps", (("state", "succeeded"),)] == 3
    assert samples["runner_steps", (("state", "failed_allowed"),)] == 1
    assert samples["runner_steps", (("state", "failed"),)] == 0
    assert samples["runner_attempts", (("kind", "succeeded"),)] == 3
    assert samples["runner_attempts", (("kind", "error"),)] == 2
    assert samples["runner_attempts", (("kind", "timeout"),)] == 0
    assert families["runner_step_duration_seconds"].type == "histogram"
    assert samples["runner_step_duration_seconds_count", ()] == 4
    assert samples["runner_step_duration_seconds_bucket", (("le", "+Inf"),)] == 4
    assert samples["runner_step_duration_seconds_sum", ()] > 0
    assert samples["runner_run_duration_seconds", ()] > 0
    assert samples["runner_run_status", (("status", "succeeded"),)] == 1
    assert samples["runner_run_status", (("status", "failed"),)] == 0
    assert samples["runner_run_exit_code", ()] == 0


def test_a_metrics_file_that_cannot_be_written_is_refused_before_the_run(
    traced: Path, run_cli: RunCli
) -> None:
    result = run_cli("run", str(traced), "--metrics", str(traced.parent / "no" / "m.prom"))
    assert result.code == 2 and "--metrics" in result.stderr and "nothing was run" in result.stderr
    assert not (traced.parent / "flaky-once").exists()


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = user_env()
    env["PIPELINE_RUNNER_STATE_DIR"] = str(cwd / "state")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_otlp_without_the_extra_is_a_usage_error_naming_it(traced: Path) -> None:
    # The runner as it is, in a Python where the opentelemetry packages cannot be imported
    # (`None` in sys.modules is how Python blocks an import: ModuleNotFoundError, as when the
    # extra is not installed).
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "from pipeline_runner.cli import main\n"
        f"main(['run', {str(traced)!r}, '--otlp', '--progress', 'plain'], prog_name='runner')\n"
    )
    done = _python(code, traced.parent)
    assert done.returncode == 2, done.stderr
    assert no_traceback(done.stderr)
    assert "--otlp needs the OpenTelemetry SDK" in done.stderr
    assert "yaml-pipeline-runner[otlp]" in done.stderr
    assert not (traced.parent / "flaky-once").exists()  # nothing ran


def test_help_and_a_plain_run_do_not_import_opentelemetry(traced: Path) -> None:
    code = (
        "import sys\n"
        "from pipeline_runner.cli import main\n"
        "for args in (['--help'], ['run', '--help'],"
        f" ['run', {str(traced)!r}, '--progress', 'none', '--executor', 'inline',"
        " '--metrics', 'm.prom']):\n"
        "    try:\n"
        "        main(args, prog_name='runner')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = _python(code, traced.parent)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
    assert wait_for(lambda: (traced.parent / "m.prom").exists(), timeout=5)
    assert os.path.getsize(traced.parent / "m.prom") > 0


def test_template_instances_of_a_for_each_nest_under_their_fan_out(
    tmp_path: Path, run_cli: RunCli, receiver: Receiver
) -> None:
    shutil.copytree(PIPELINES, tmp_path / "pipelines")
    path = tmp_path / "pipelines" / "etl.yaml"
    result = run_cli("run", str(path), "--progress", "plain", "--otlp", env=otel_env(receiver))
    assert result.code == 0 and no_traceback(result.output), result.output
    by_id = {s.span_id: s for s in receiver.spans}
    run = receiver.named("run etl")
    assert all(s.parent in by_id for s in receiver.spans if s is not run)
    fan_out = receiver.named("etl")
    assert fan_out.attributes["runner.group.kind"] == "for_each"
    for tenant in ("acme", "globex", "initech"):
        instance = receiver.named(f"etl.{tenant}")
        assert instance.parent == fan_out.span_id
        assert instance.attributes["runner.group.kind"] == "template"
        assert instance.attributes["runner.key"] == tenant
        for step in ("extract", "transform", "load"):
            span = receiver.named(f"etl.{tenant}.{step}")
            assert span.parent == instance.span_id
            assert receiver.named(f"etl.{tenant}.{step} attempt 1").parent == span.span_id
    assert receiver.named("report").parent == run.span_id


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_python_step_finds_its_traceparent_with_each_executor(
    executor: str, run_cli: RunCli, write_pipeline: Any, receiver: Receiver
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: py
        steps:
          - id: look
            uses: python
            with: {call: "seen:look"}
        """,
        files={
            "seen.py": """
            import os

            def look(ctx):
                return {"environ": os.environ.get("TRACEPARENT"), "ctx": ctx.env["TRACEPARENT"]}
            """
        },
    )
    summary = run_traced(run_cli, path, otel_env(receiver), "--otlp", "--executor", executor)
    attempt = receiver.named("look attempt 1")
    output = summary["steps"][0]["output"]
    assert output["ctx"].split("-")[1:3] == [attempt.trace_id, attempt.span_id]
    # the process executor sets the worker's environment; a thread shares the runner's
    assert output["environ"] == (output["ctx"] if executor == "process" else None)


def test_an_attempt_an_open_breaker_refused_has_its_span_and_kind(
    run_cli: RunCli, write_pipeline: Any, receiver: Receiver
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: brk
        pools:
          api: {size: 1, breaker: {failures: 1, cooldown: 60s}}
        steps:
          - id: one
            pool: api
            uses: shell
            with: {cmd: "exit 4"}
          - id: two
            needs: one
            trigger: all_done
            pool: api
            uses: shell
            with: {cmd: "true"}
        """
    )
    result = run_cli("run", str(path), "--progress", "plain", "--otlp", env=otel_env(receiver))
    assert result.code == 1 and no_traceback(result.output), result.output
    one = receiver.named("one")
    assert one.error and one.attributes["runner.exit_code"] == 4
    refused = receiver.named("two attempt 1")  # no process ran: no completion, still a span
    assert refused.parent == receiver.named("two").span_id
    assert refused.error and refused.attributes["runner.failure.kind"] == "breaker"
    assert receiver.named("two").attributes["runner.failure.kind"] == "breaker"
    assert receiver.named("run brk").attributes["runner.status"] == "failed"
