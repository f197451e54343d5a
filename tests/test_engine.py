"""Acceptance tests of the engine: real `runner run` processes, real worker processes, real files.

Each test writes a small pipeline inline (plus `lib.py`, a module of step functions beside it, on
the import path of `python` steps) and asserts on what a user sees: the exit code, the plain
progress lines (one per state change), the summary and the `outputs:` section of stdout, and
files the steps wrote.  Nothing is mocked and nothing waits a fixed time: what has to happen
concurrently is synchronised through files, polled with generous deadlines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli, no_traceback, processes_with, runner_executable, user_env, wait_for

WritePipeline = Callable[..., Path]

# The step functions every pipeline here may call as `lib:<name>`.
LIB = r'''
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def double(x):
    return {"doubled": x * 2}


def combine(b, c):
    return {"total": b["doubled"] + 1, "label": c}


def chunks(n):
    return [f"p{i}" for i in range(1, n + 1)]


def three(item):
    return 3


def reduce(parts, by_key):
    return {"sum": sum(parts), "n": len(parts), "keys": sorted(by_key)}


def flaky(path, succeed_on):
    with open(path, "a") as f:
        f.write(f"{time.time()!r}\n")
    attempt = len(Path(path).read_text().splitlines())
    if attempt < succeed_on:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


def crash_once(marker):
    if not os.path.exists(marker):
        Path(marker).write_text("crashed")
        os._exit(1)
    return "recovered"


def publish(path, text):
    """Write a file atomically, so a poller never reads it half-written."""
    Path(path + ".tmp").write_text(text)
    os.replace(path + ".tmp", path)


def pid_then_sleep(pidfile):
    if os.path.exists(pidfile):
        return "second attempt"
    publish(pidfile, str(os.getpid()))
    time.sleep(120)
    return "first attempt"


def touch_and_sleep(path, seconds=300):
    publish(path, str(os.getpid()))
    time.sleep(seconds)


def stubborn(path, seconds=300):
    """Ignore SIGTERM (noting that it came), then sleep."""
    signal.signal(signal.SIGTERM, lambda *_: publish(path + ".term", "got SIGTERM"))
    publish(path, str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


def wait_for_file(path, seconds=60):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return "waited"


def interval(path, seconds):
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{start!r} {time.time()!r}\n")


def append(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def extract(tenant):
    if tenant == "globex":
        raise RuntimeError(f"{tenant} source is down")
    return [tenant, tenant]


def load(rows):
    return len(rows)


def fail(message="boom"):
    raise RuntimeError(message)


def noisy():
    print("\x1b[31mRED\x1b[0m \x1b]0;retitled\x07 \x1b[2J")
    print("::error::injected annotation")
    print("::add-mask::hidden")
    sys.stdout.flush()
    raise RuntimeError("\x1b[1Abad \x1b[2K")


def read_stdin():
    child = subprocess.run(["cat"], stdout=subprocess.PIPE, timeout=30)
    return {"py": sys.stdin.read(), "child": child.stdout.decode()}


def environment(names):
    return {name: os.environ.get(name) for name in names}


def swallow_everything(path):
    publish(path, str(os.getpid()))
    while True:
        try:
            time.sleep(60)
        except BaseException:
            pass


class Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")
        self.lock = __import__("threading").Lock()


def raise_unpicklable():
    raise Unpicklable("left", "right")


def not_json():
    return lambda: None
'''

STATE_LINE = re.compile(r"^\d\d:\d\d:\d\d \S+ ([a-z_]+)\s+(\S+)", re.M)


# -- helpers --------------------------------------------------------------------------------------


def states(stdout: str) -> dict[str, str]:
    """The last state of every step, from the plain progress lines."""
    return {step: state for state, step in STATE_LINE.findall(stdout)}


def started_order(stdout: str) -> list[str]:
    return [step for state, step in STATE_LINE.findall(stdout) if state == "running"]


def outputs_of(stdout: str) -> Any:
    """The JSON printed after `outputs:` at the end of a run."""
    _, sep, tail = stdout.partition("\noutputs:\n")
    assert sep, f"no outputs section in:\n{stdout}"
    return json.JSONDecoder().raw_decode(tail)[0]


def intervals(path: Path) -> list[tuple[float, float]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return sorted((float(a), float(b)) for a, b in rows)


def max_concurrency(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = best = 0
    for _, delta in events:  # an end sorts before a start at the same instant
        running += delta
        best = max(best, running)
    return best


def runner_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = user_env()
    env.pop("GITHUB_ACTIONS", None)
    env["PIPELINE_RUNNER_STATE_DIR"] = str(tmp_path / "state")
    env.update(extra or {})
    return env


def start_runner(
    tmp_path: Path, pipeline: Path, *args: str, env: dict[str, str] | None = None, stdin: Any = None
) -> subprocess.Popen[str]:
    """`runner run` in the background, in a session of its own (signals go where we send them).
    Every process of the run inherits `TEST_RUN` (see the `popen` fixture)."""
    run_id = f"test-run-{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [runner_executable(), "run", str(pipeline), "--progress", "plain", *args],
        cwd=tmp_path,
        env=runner_env(tmp_path, {"TEST_RUN": run_id, **(env or {})}),
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _RUN_IDS[proc.pid] = run_id
    return proc


_RUN_IDS: dict[int, str] = {}  # runner pid -> the TEST_RUN its processes carry


@pytest.fixture
def popen() -> Iterator[list[subprocess.Popen[str]]]:
    """Runners started by a test: whatever of theirs is still alive at its end (a failed test)
    is killed, the runner and every process carrying its `TEST_RUN`."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in processes_with(_RUN_IDS.pop(proc.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait(timeout=30)


@pytest.fixture
def marker() -> str:
    """A unique value put in the environment of a run's processes, to find them afterwards."""
    return f"prt-{uuid.uuid4().hex}"


def run(run_cli: RunCli, path: Path, *args: str, **kw: Any) -> Any:
    result = run_cli("run", str(path), "--progress", "plain", "--workers", "2", *args, **kw)
    assert no_traceback(runner_text(result.output)), result.output
    return result


def runner_text(output: str) -> str:
    """What the runner wrote itself: without the step log lines it quotes behind `| `."""
    return "\n".join(line for line in output.splitlines() if not line.lstrip().startswith("| "))


# -- data flow ------------------------------------------------------------------------------------

DIAMOND = """
version: 1
name: diamond
steps:
  - id: a
    uses: shell
    with:
      cmd: >-
        printf '{"x": 3, "name": "alpha"}'
      parse: json
  - id: b
    needs: a
    uses: python
    with:
      call: lib:double
      args: ["{{ steps.a.output.x }}"]
  - id: c
    needs: a
    uses: shell
    with:
      cmd: "echo {{ steps.a.output.name }}-c"
  - id: d
    needs: [b, c]
    uses: python
    with:
      call: lib:combine
      kwargs:
        b: "{{ steps.b.output }}"
        c: "{{ steps.c.output }}"
outputs:
  total: "{{ steps.d.output.total }}"
  label: "{{ steps.d.output.label }}"
  b: "{{ steps.b.output }}"
"""


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_diamond_outputs_flow_between_shell_and_python(
    run_cli: RunCli, write_pipeline: WritePipeline, executor: str
) -> None:
    path = write_pipeline(DIAMOND, files={"lib.py": LIB})
    result = run(run_cli, path, "--executor", executor)
    assert result.code == 0, result.output
    assert outputs_of(result.stdout) == {"total": 7, "label": "alpha-c", "b": {"doubled": 6}}
    assert states(result.stdout) == dict.fromkeys("abcd", "succeeded")
    order = started_order(result.stdout)
    assert order[0] == "a" and order[-1] == "d"


def test_map_reduce_with_a_dynamic_fan_out(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        """
        version: 1
        name: mapreduce
        params:
          n: 5
        steps:
          - id: map
            uses: python
            with:
              call: lib:chunks
              args: ["{{ params.n }}"]
          - id: fan
            needs: map
            for_each: "{{ steps.map.output }}"
            uses: python
            with:
              call: lib:three
              args: ["{{ item }}"]
          - id: reduce
            needs: fan
            uses: python
            with:
              call: lib:reduce
              args: ["{{ steps.fan.output }}", "{{ steps.fan.outputs }}"]
        outputs:
          parts: "{{ steps.fan.output }}"
          by_key: "{{ steps.fan.outputs }}"
          reduced: "{{ steps.reduce.output }}"
        """,
        files={"lib.py": LIB},
    )
    result = run(run_cli, path)
    assert result.code == 0, result.output
    keys = [f"p{i}" for i in range(1, 6)]
    assert outputs_of(result.stdout) == {
        "parts": [3, 3, 3, 3, 3],
        "by_key": dict.fromkeys(keys, 3),
        "reduced": {"sum": 15, "n": 5, "keys": keys},
    }
    seen = states(result.stdout)
    assert {f"fan.{k}" for k in keys} <= set(seen)
    assert set(seen.values()) == {"succeeded"}
    assert re.search(r"succeeded\s+7\b", result.stdout), result.stdout  # map + 5 + reduce


# -- retries --------------------------------------------------------------------------------------


def test_retries_wait_delay_times_backoff(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: retries
        params:
          dir: .
        steps:
          - id: flaky
            uses: python
            retries: {max: 2, delay: 200ms, backoff: 2, jitter: false}
            with:
              call: lib:flaky
              args: ["{{ params.dir }}/attempts.txt", 3]
        outputs:
          attempt: "{{ steps.flaky.output }}"
        """,
        files={"lib.py": LIB},
    )
    result = run(run_cli, path, "--param", f"dir={tmp_path}")
    assert result.code == 0, result.output
    assert outputs_of(result.stdout) == {"attempt": 3}
    assert "(attempt 3)" in result.stdout
    assert result.stdout.count("retrying") == 2
    times = [float(t) for t in (tmp_path / "attempts.txt").read_text().split()]
    assert len(times) == 3
    first, second = times[1] - times[0], times[2] - times[1]
    # Each gap is the delay plus the cost of one attempt and a dispatch: never less than the
    # delay, and (generously, on a loaded machine) not much more.
    assert 0.19 <= first <= 0.2 + 1.5, times
    assert 0.39 <= second <= 0.4 + 1.5, times


def test_retries_on_timeout_only_do_not_retry_an_error(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: retry-on
        params:
          dir: .
        steps:
          - id: flaky
            uses: python
            retries: {max: 3, delay: 10ms, on: [timeout]}
            with:
              call: lib:flaky
              args: ["{{ params.dir }}/attempts.txt", 2]
        """,
        files={"lib.py": LIB},
    )
    result = run(run_cli, path, "--param", f"dir={tmp_path}")
    assert result.code == 1, result.output
    assert len((tmp_path / "attempts.txt").read_text().split()) == 1
    assert states(result.stdout) == {"flaky": "failed"}
    assert "retrying" not in result.stdout
    assert "RuntimeError: attempt 1 fails" in result.stdout


# -- timeouts and crashes -------------------------------------------------------------------------


@pytest.mark.fault(3)
def test_timeout_stops_the_step_and_its_background_grandchild(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, marker: str
) -> None:
    path = write_pipeline(
        f"""
        version: 1
        name: timeout
        steps:
          - id: slow
            uses: shell
            timeout: 1s
            env:
              MARK: {marker}
            with:
              cmd: 'echo "$MARK" > mark.txt; sleep 300 & sleep 300'
          - id: after
            needs: slow
            uses: noop
        """
    )
    began = time.monotonic()
    result = run(run_cli, path, timeout=60)
    elapsed = time.monotonic() - began
    assert result.code == 1, result.output
    assert states(result.stdout) == {"slow": "failed", "after": "upstream_failed"}
    assert re.search(r"slow.*timed out after 1s", result.stdout), result.stdout
    assert elapsed < 1 + 3 + 5, elapsed  # timeout + default grace + start-up, generously
    assert (tmp_path / "mark.txt").read_text().strip() == marker  # the sleeps carried it
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)


@pytest.mark.fault(6)
def test_a_crashed_worker_fails_the_attempt_as_a_crash_and_is_retried(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: crash
        params:
          dir: .
        steps:
          - id: crashy
            uses: python
            retries: {max: 1, delay: 100ms}
            with:
              call: lib:crash_once
              args: ["{{ params.dir }}/crashed"]
          - id: sibling
            uses: shell
            with:
              cmd: echo fine
        outputs:
          crashy: "{{ steps.crashy.output }}"
          sibling: "{{ steps.sibling.output }}"
        """,
        files={"lib.py": LIB},
    )
    result = run(run_cli, path, "--param", f"dir={tmp_path}")
    assert result.code == 0, result.output
    assert (tmp_path / "crashed").exists()
    assert re.search(r"retrying\s+crashy.*exit code 1 \[crash\]", result.stdout), result.stdout
    assert outputs_of(result.stdout) == {"crashy": "recovered", "sibling": "fine"}


@pytest.mark.fault(1)
@pytest.mark.fault(6)
def test_a_step_killed_with_sigkill_is_a_crash_and_siblings_go_on(
    write_pipeline: WritePipeline, tmp_path: Path, popen: list[subprocess.Popen[str]]
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: killed
        params:
          dir: .
        steps:
          - id: victim
            uses: python
            retries: {max: 1, delay: 100ms}
            with:
              call: lib:pid_then_sleep
              args: ["{{ params.dir }}/victim.pid"]
          - id: sibling
            uses: python
            with:
              call: lib:wait_for_file
              args: ["{{ params.dir }}/go"]
          - id: after
            needs: victim
            uses: python
            with:
              call: lib:append
              args: ["{{ params.dir }}/after.txt", "ran"]
        outputs:
          victim: "{{ steps.victim.output }}"
          sibling: "{{ steps.sibling.output }}"
          after: "{{ steps.after.output }}"
        """,
        files={"lib.py": LIB},
    )
    proc = start_runner(tmp_path, path, "--workers", "2", "--param", f"dir={tmp_path}")
    popen.append(proc)
    pidfile = tmp_path / "victim.pid"
    assert wait_for(pidfile.exists, timeout=60), "the victim step never started"
    pid = int(pidfile.read_text())
    assert pid != proc.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
    (tmp_path / "go").write_text("")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout + stderr
    assert re.search(r"retrying\s+victim.*killed by SIGKILL \[crash\]", stdout), stdout
    assert outputs_of(stdout) == {"victim": "second attempt", "sibling": "waited", "after": "ran"}
    assert "first attempt" not in stdout


@pytest.mark.fault(5)
def test_a_python_step_swallowing_every_exception_still_times_out(
    write_pipeline: WritePipeline, tmp_path: Path, popen: list[subprocess.Popen[str]]
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: swallow
        params:
          dir: .
        steps:
          - id: stubborn
            uses: python
            timeout: 1s
            with:
              call: lib:swallow_everything
              args: ["{{ params.dir }}/pid"]
          - id: sibling
            uses: shell
            with:
              cmd: echo fine
        """,
        files={"lib.py": LIB},
    )
    proc = start_runner(tmp_path, path, "--grace", "1", "--param", f"dir={tmp_path}")
    popen.append(proc)
    assert wait_for((tmp_path / "pid").exists, timeout=60)
    began = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - began
    assert proc.returncode == 1, stdout + stderr
    assert states(stdout) == {"stubborn": "failed", "sibling": "succeeded"}
    assert re.search(r"stubborn.*timed out after 1s.*\[timeout\]", stdout), stdout
    assert took <= 1 + 1 + 1.5, took  # timeout + grace + 1 s (and the poll)
    pid = int((tmp_path / "pid").read_text())
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)


@pytest.mark.fault(7)
@pytest.mark.fault(8)
def test_an_exception_that_cannot_be_pickled_fails_only_its_step(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: unpicklable
        steps:
          - id: bad
            uses: python
            with:
              call: lib:raise_unpicklable
          - id: lambda
            uses: python
            with:
              call: lib:not_json
          - id: good
            needs: bad
            uses: shell
            with:
              cmd: echo never
          - id: other
            uses: shell
            with:
              cmd: echo fine
        """,
        files={"lib.py": LIB},
    )
    result = run(run_cli, path)
    assert result.code == 1, result.output
    assert states(result.stdout) == {
        "bad": "failed",
        "lambda": "failed",
        "good": "upstream_failed",
        "other": "succeeded",
    }
    assert "Unpicklable: left and right" in result.stdout
    assert re.search(r"lambda.*not JSON-serialisable \(function\)", result.stdout), result.stdout


# -- failures, tenants, flags ---------------------------------------------------------------------

TENANTS = """
version: 1
name: tenants
params:
  dir: .
  tenants: [acme, globex, initech]
templates:
  etl:
    params:
      tenant: {}
    steps:
      - id: extract
        uses: python
        with:
          call: lib:extract
          args: ["{{ tenant }}"]
      - id: transform
        needs: extract
        uses: python
        with:
          call: lib:append
          args: ["{{ params.dir }}/ran.txt", "{{ tenant }}.transform"]
      - id: load
        needs: transform
        uses: python
        with:
          call: lib:load
          args: ["{{ steps.extract.output }}"]
steps:
  - id: prepare
    uses: python
    with:
      call: lib:append
      args: ["{{ params.dir }}/ran.txt", "prepare"]
  - id: etl
    needs: prepare
    for_each: "{{ params.tenants }}"
    template: etl
    with:
      tenant: "{{ item }}"
  - id: report
    needs: etl
    uses: python
    with:
      call: lib:append
      args: ["{{ params.dir }}/ran.txt", "report"]
  - id: other
    uses: python
    with:
      call: lib:append
      args: ["{{ params.dir }}/ran.txt", "other"]
"""


def test_one_tenant_failing_does_not_stop_the_others(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TENANTS, files={"lib.py": LIB})
    result = run(run_cli, path, "--param", f"dir={tmp_path}")
    assert result.code == 1, result.output
    seen = states(result.stdout)
    for tenant in ("acme", "initech"):
        for step in ("extract", "transform", "load"):
            assert seen[f"etl.{tenant}.{step}"] == "succeeded", result.stdout
    assert seen["etl.globex.extract"] == "failed"
    assert seen["etl.globex.transform"] == "upstream_failed"
    assert seen["etl.globex.load"] == "upstream_failed"
    assert seen["report"] == "upstream_failed"
    assert seen["other"] == "succeeded"
    summary = result.stdout[result.stdout.rindex("state") :]
    assert re.search(r"etl\.globex\.extract .*globex source is down", summary), summary
    assert re.search(r"run \S+ failed in", summary)


def test_only_runs_the_selection_and_what_it_needs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TENANTS, files={"lib.py": LIB})
    result = run(
        run_cli, path, "--param", f"dir={tmp_path}", "--param", "tenants=[acme, initech]",
        "--only", "etl.*.load",
    )  # fmt: skip
    assert result.code == 0, result.output
    ran = sorted((tmp_path / "ran.txt").read_text().split())
    assert ran == ["acme.transform", "initech.transform", "prepare"]
    assert set(states(result.stdout)) == {
        "prepare",
        *(f"etl.{t}.{s}" for t in ("acme", "initech") for s in ("extract", "transform", "load")),
    }


def test_dry_run_prints_the_plan_and_runs_nothing(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TENANTS, files={"lib.py": LIB})
    result = run(run_cli, path, "--param", f"dir={tmp_path}", "--dry-run")
    assert result.code == 0, result.output
    assert not (tmp_path / "ran.txt").exists()
    assert not (tmp_path / "state" / "runs").exists() or not any(
        (tmp_path / "state" / "runs").iterdir()
    )
    lines = result.stdout.splitlines()

    def position(step: str) -> int:
        return next(i for i, line in enumerate(lines) if re.match(rf"- {re.escape(step)}\b", line))

    assert position("prepare") < position("etl.acme.extract") < position("etl.acme.load")
    assert position("etl.globex.load") < position("report")


def test_fail_fast_cancels_the_rest(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, marker: str
) -> None:
    path = write_pipeline(
        f"""
        version: 1
        name: failfast
        steps:
          - id: slow
            uses: shell
            env:
              MARK: {marker}
            with:
              cmd: 'echo "$MARK" > started; sleep 300'
          - id: bad
            uses: shell
            with:
              cmd: "while [ ! -e started ]; do sleep 0.02; done; exit 3"
          - id: later
            needs: slow
            uses: shell
            with:
              cmd: touch LATER
          - id: waiting
            uses: shell
            with:
              cmd: touch WAITING
        """
    )
    began = time.monotonic()
    result = run(run_cli, path, "--fail-fast", timeout=60)
    elapsed = time.monotonic() - began
    assert result.code == 1, result.output
    seen = states(result.stdout)
    assert seen["bad"] == "failed"
    assert seen["slow"] == "cancelled"
    assert seen["later"] in ("cancelled", "upstream_failed")
    assert not (tmp_path / "LATER").exists()
    assert (tmp_path / "started").read_text().strip() == marker
    assert "exited with code 3" in result.stdout
    assert elapsed < 20, elapsed
    assert wait_for(lambda: not processes_with(marker), timeout=10), processes_with(marker)


def test_continue_on_error_is_failed_allowed_and_the_run_succeeds(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: allowed
        steps:
          - id: lint
            uses: shell
            continue_on_error: true
            with:
              cmd: "echo complaining >&2; exit 4"
          - id: build
            needs: lint
            uses: shell
            with:
              cmd: echo built
        outputs:
          build: "{{ steps.build.output }}"
        """
    )
    result = run(run_cli, path)
    assert result.code == 0, result.output
    assert states(result.stdout) == {"lint": "failed_allowed", "build": "succeeded"}
    assert "exited with code 4" in result.stdout
    assert outputs_of(result.stdout) == {"build": "built"}


def test_false_conditions_skip_steps_and_their_dependents(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: conditions
        params:
          deploy: false
        steps:
          - id: build
            uses: shell
            with:
              cmd: echo ok
          - id: deploy
            needs: build
            if: params.deploy
            uses: shell
            with:
              cmd: touch DEPLOYED
          - id: never
            if: false
            uses: shell
            with:
              cmd: touch NEVER
          - id: checked
            needs: build
            if: "steps.build.output == 'ok'"
            uses: shell
            with:
              cmd: touch CHECKED
          - id: notify
            needs: deploy
            uses: noop
          - id: report
            needs: deploy
            trigger: none_failed
            uses: noop
        """
    )
    result = run(run_cli, path)
    assert result.code == 0, result.output
    assert states(result.stdout) == {
        "build": "succeeded",
        "deploy": "skipped",
        "never": "skipped",
        "checked": "succeeded",
        "notify": "skipped",
        "report": "succeeded",
    }
    assert not (tmp_path / "DEPLOYED").exists() and not (tmp_path / "NEVER").exists()
    assert (tmp_path / "CHECKED").exists()
    result = run(run_cli, path, "--param", "deploy=true")
    assert result.code == 0, result.output
    assert states(result.stdout)["deploy"] == "succeeded"
    assert (tmp_path / "DEPLOYED").exists()


# -- concurrency ----------------------------------------------------------------------------------


def test_a_pool_of_size_one_never_runs_two_steps_at_once(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    steps = "".join(
        f"""
          - id: {name}
            uses: python
            {"pool: db" if name.startswith("db") else ""}
            with:
              call: lib:interval
              args: ["{{{{ params.dir }}}}/{"db" if name.startswith("db") else "free"}.txt", 0.3]
        """
        for name in ("db1", "db2", "db3", "db4", "free1", "free2")
    )
    path = write_pipeline(
        "version: 1\nname: pools\nparams: {dir: .}\npools: {db: 1}\nsteps:" + steps,
        files={"lib.py": LIB},
    )
    result = run(run_cli, path, "--param", f"dir={tmp_path}", "--workers", "4")
    assert result.code == 0, result.output
    db = intervals(tmp_path / "db.txt")
    assert len(db) == 4
    assert max_concurrency(db) == 1, db
    # The limit is the pool's, not the machine's: other steps did run beside the pool's.
    assert max_concurrency(db + intervals(tmp_path / "free.txt")) >= 2


def test_max_parallel_limits_a_fan_out(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: limited
        params:
          dir: .
        steps:
          - id: fan
            for_each: [a, b, c, d, e]
            max_parallel: 2
            uses: python
            with:
              call: lib:interval
              args: ["{{ params.dir }}/spans.txt", 0.3]
        """,
        files={"lib.py": LIB},
    )
    result = run(run_cli, path, "--param", f"dir={tmp_path}", "--workers", "4")
    assert result.code == 0, result.output
    spans = intervals(tmp_path / "spans.txt")
    assert len(spans) == 5
    assert max_concurrency(spans) <= 2, spans


def test_higher_priority_runs_first(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    steps = "".join(
        f"""
          - id: {name}
            uses: python
            priority: {priority}
            with:
              call: lib:append
              args: ["{{{{ params.dir }}}}/order.txt", {name}]
        """
        for name, priority in (("low", 1), ("high", 5), ("plain", 0), ("mid", 3))
    )
    path = write_pipeline(
        "version: 1\nname: prio\nparams: {dir: .}\nsteps:" + steps, files={"lib.py": LIB}
    )
    result = run(run_cli, path, "--param", f"dir={tmp_path}", "--workers", "1")
    assert result.code == 0, result.output
    assert (tmp_path / "order.txt").read_text().split() == ["high", "mid", "low", "plain"]


# -- security and output --------------------------------------------------------------------------

INJECT = """
version: 1
name: inject
params:
  v: ""
steps:
  - id: s
    uses: shell
    with:
      cmd: "echo {{ params.v }}"
outputs:
  out: "{{ steps.s.output }}"
"""


@pytest.mark.fault(32)
@pytest.mark.parametrize(
    "value",
    [
        "x; touch INJECTED",
        "$(touch INJECTED)",
        "`touch INJECTED`",
        "a' ; touch INJECTED; echo 'b",
        "x && touch INJECTED || touch INJECTED",
        "> INJECTED",
    ],
)
def test_parameter_values_never_inject_commands(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, value: str
) -> None:
    path = write_pipeline(INJECT)
    result = run(run_cli, path, "--param", f"v={value}")
    assert result.code == 0, result.output
    assert not (tmp_path / "INJECTED").exists()
    assert outputs_of(result.stdout) == {"out": value}


@pytest.mark.fault(32)
def test_step_outputs_never_inject_commands(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """The same quoting holds for values known only at run time (another step's output)."""
    path = write_pipeline(
        """
        version: 1
        name: inject-late
        steps:
          - id: gen
            uses: shell
            with:
              cmd: >-
                printf '%s' '$(touch INJECTED); `touch INJECTED`'
          - id: s
            needs: gen
            uses: shell
            with:
              cmd: "echo {{ steps.gen.output }}"
        outputs:
          out: "{{ steps.s.output }}"
        """
    )
    result = run(run_cli, path)
    assert result.code == 0, result.output
    assert not (tmp_path / "INJECTED").exists()
    assert outputs_of(result.stdout) == {"out": "$(touch INJECTED); `touch INJECTED`"}


def test_raw_opts_out_of_quoting(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(INJECT.replace("params.v }}", "params.v | raw }}"))
    result = run(run_cli, path, "--param", "v=trusted; touch RAN")
    assert result.code == 0, result.output
    assert (tmp_path / "RAN").exists()
    assert outputs_of(result.stdout) == {"out": "trusted"}


def test_plain_output_has_no_escape_codes_and_ends_with_the_summary(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(DIAMOND, files={"lib.py": LIB})
    for progress in ("plain", "auto"):  # auto: stdout is a pipe here, so plain lines
        result = run_cli("run", str(path), "--progress", progress)
        assert result.code == 0, result.output
        assert "\x1b" not in result.output
        assert states(result.stdout) == dict.fromkeys("abcd", "succeeded")
        before_outputs = result.stdout.partition("\noutputs:\n")[0]
        assert re.search(r"run \S+ succeeded in [\d.]+s$", before_outputs), before_outputs


@pytest.mark.fault(35)
@pytest.mark.parametrize("github", [False, True])
def test_terminal_escapes_and_ci_commands_from_a_step_are_not_interpreted(
    run_cli: RunCli, write_pipeline: WritePipeline, github: bool
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: noisy
        steps:
          - id: noisy
            uses: python
            with:
              call: lib:noisy
        """,
        files={"lib.py": LIB},
    )
    env = {"GITHUB_ACTIONS": "true"} if github else {}
    result = run(run_cli, path, env=env)
    assert result.code == 1, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    for line in result.output.splitlines():
        if line.startswith("::"):  # only the runner's own annotations, never the step's
            assert re.match(r"::(error file=|group::log of noisy|endgroup::)", line), line
    assert not re.search(r"^\s*::(error|add-mask)::", result.output, re.M)
    assert "::error::injected annotation" in result.stdout  # shown, behind `| `
    assert "\\x1b[31mRED" in result.stdout  # escaped, visible
    assert "RuntimeError" in result.stdout


@pytest.mark.fault(10)
@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_steps_read_an_empty_stdin(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    popen: list[subprocess.Popen[str]],
    executor: str,
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: stdin
        steps:
          - id: cat
            uses: shell
            timeout: 30s
            with:
              cmd: "cat; echo cat-done"
          - id: read
            uses: shell
            timeout: 30s
            with:
              cmd: "if read line; then echo got-a-line; else echo eof; fi"
          - id: py
            uses: python
            timeout: 30s
            with:
              call: lib:read_stdin
        outputs:
          cat: "{{ steps.cat.output }}"
          read: "{{ steps.read.output }}"
          py: "{{ steps.py.output }}"
        """,
        files={"lib.py": LIB},
    )
    # The runner's own stdin is a pipe that stays open: a step reading it would hang.
    began = time.monotonic()
    proc = start_runner(tmp_path, path, "--executor", executor, stdin=subprocess.PIPE)
    popen.append(proc)
    proc.wait(timeout=60)  # not communicate(): it would close the runner's stdin
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, stdout + stderr
    assert outputs_of(stdout) == {
        "cat": "cat-done",
        "read": "eof",
        "py": {"py": "", "child": ""},
    }
    assert time.monotonic() - began < 20


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_steps_see_the_runner_environment_and_their_env(
    run_cli: RunCli, write_pipeline: WritePipeline, executor: str
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: environment
        env:
          FROM_PIPELINE: pipe
        steps:
          - id: sh
            uses: shell
            env:
              FROM_STEP: step
            with:
              cmd: 'echo "$FROM_RUNNER $FROM_PIPELINE $FROM_STEP"'
          - id: py
            uses: python
            env:
              FROM_STEP: step
            with:
              call: lib:environment
              args: [[FROM_RUNNER, FROM_PIPELINE, FROM_STEP]]
        outputs:
          sh: "{{ steps.sh.output }}"
          py: "{{ steps.py.output }}"
        """,
        files={"lib.py": LIB},
    )
    result = run(run_cli, path, "--executor", executor, env={"FROM_RUNNER": "runner"})
    assert result.code == 0, result.output
    assert outputs_of(result.stdout) == {
        "sh": "runner pipe step",
        "py": {"FROM_RUNNER": "runner", "FROM_PIPELINE": "pipe", "FROM_STEP": "step"},
    }


def yaml_quoted(text: str) -> str:
    """`text` as a YAML double-quoted scalar that reads back exactly (escapes what YAML 1.1
    would refuse raw or fold: control characters, line breaks, a BOM)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif (
            0x20 <= code <= 0x7E
            or (0xA0 <= code <= 0xFFFD and code not in (0x2028, 0x2029, 0xFEFF))
            or code >= 0x10000
        ):
            out.append(ch)
        else:
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def test_a_json_params_file_with_astral_characters_is_read(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(INJECT)
    (tmp_path / "params.json").write_text(json.dumps({"v": "smile \U0001f600"}))
    result = run(run_cli, path, "--params-file", str(tmp_path / "params.json"))
    assert result.code == 0, result.output
    assert outputs_of(result.stdout) == {"out": "smile \U0001f600"}


# -- property: any text is one literal shell word -------------------------------------------------

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    given = None


if given is not None:
    ROUND_TRIP = """
version: 1
name: roundtrip
steps:
  - id: gen
    uses: python
    with:
      call: gen:text
  - id: planned
    uses: shell
    with:
      cmd: "printf '%s|' {{ params.v }}"
  - id: late
    needs: gen
    uses: shell
    with:
      cmd: "printf '%s|' {{ steps.gen.output }}"
params:
  v: ""
outputs:
  planned: "{{ steps.planned.output }}"
  late: "{{ steps.late.output }}"
"""
    GEN = """
import json
from pathlib import Path


def text():
    return json.loads((Path(__file__).parent / "value.json").read_text())
"""
    # Every character but NUL (which no argv can hold) and lone surrogates (not text).
    TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))

    @pytest.mark.fault(32)
    @settings(
        max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(value=TEXT)
    def test_any_text_round_trips_byte_exact_through_a_shell_command(
        tmp_path: Path, value: str
    ) -> None:
        (tmp_path / "p.yaml").write_text(ROUND_TRIP)
        (tmp_path / "gen.py").write_text(GEN)
        (tmp_path / "value.json").write_text(json.dumps(value))
        (tmp_path / "params.yaml").write_text(f"v: {yaml_quoted(value)}\n")
        proc = subprocess.run(
            [runner_executable(), "run", "p.yaml", "--executor", "inline",
             "--progress", "plain", "--params-file", "params.yaml"],
            cwd=tmp_path,
            env=runner_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert outputs_of(proc.stdout) == {"planned": value + "|", "late": value + "|"}
        left = {p.name for p in tmp_path.iterdir()} - {"state", "__pycache__"}
        assert left == {"gen.py", "p.yaml", "params.yaml", "value.json"}  # nothing injected
