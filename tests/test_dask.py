"""`--executor dask`: steps on a real Dask cluster (a scheduler and two workers on 127.0.0.1,
started with the `dask` command line as a user would), and on a local cluster the runner starts.

The module's cluster is shared by its tests: worker `wA`, and worker `wB`, which offers the
resource `gpu=1`.  Tests wait until both are connected before they use it (one of them kills a
worker; its nanny starts it again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import (
    PIPELINES,
    RunCli,
    no_traceback,
    processes_with,
    runner_executable,
    user_env,
    wait_for,
)

pytest.importorskip(
    "distributed", reason="dask[distributed] is not installed (pip install -e '.[dev]')"
)

# One worker of `pytest -n` runs them all, so the module's cluster is started once.
pytestmark = [pytest.mark.dask, pytest.mark.xdist_group("dask")]

WORKERS = {"wA": [], "wB": ["--resources", "gpu=1"]}
STARTUP_TIMEOUT = 60.0


# -- the cluster ----------------------------------------------------------------------------------


@dataclass
class Cluster:
    folder: Path
    marker: str  # in the environment of every cluster process (and the hosts they start)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    address: str = ""

    def start(self, name: str, argv: list[str]) -> None:
        env = {**os.environ, "DASK_TEST_CLUSTER": self.marker}
        env["PYTHONPATH"] = os.pathsep.join([str(PIPELINES), env.get("PYTHONPATH", "")])
        log = (self.folder / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=self.folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def registrations(self, worker: str) -> int:
        """How many times the worker (re)connected to the scheduler."""
        text = (self.folder / f"{worker}.log").read_text(errors="replace")
        return text.count("Registered to:")

    def total_registrations(self) -> int:
        return sum(self.registrations(w) for w in WORKERS)

    def wait_ready(self, registrations: int | None = None) -> None:
        """Until every worker is connected (and, given a count, has connected that often)."""

        def ready() -> bool:
            each = all(self.registrations(w) >= 1 for w in WORKERS)
            return each and (registrations is None or self.total_registrations() >= registrations)

        if not wait_for(ready, timeout=STARTUP_TIMEOUT, interval=0.1):
            logs = {w: (self.folder / f"{w}.log").read_text()[-2000:] for w in WORKERS}
            pytest.fail(f"Dask workers did not connect in {STARTUP_TIMEOUT}s: {logs}")
        time.sleep(0.5)  # the scheduler registers the worker a moment after the worker says so

    def stop(self) -> None:
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _dask_cli() -> list[str]:
    return [sys.executable, "-m", "dask"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("dask-cluster")
    found = Cluster(folder, f"dask-test-{uuid.uuid4().hex}")
    scheduler_file = folder / "scheduler.json"
    found.start(
        "scheduler",
        [*_dask_cli(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)],
    )  # fmt: skip
    try:
        if not wait_for(scheduler_file.exists, timeout=STARTUP_TIMEOUT, interval=0.05):
            pytest.fail(f"no Dask scheduler: {(folder / 'scheduler.log').read_text()[-2000:]}")
        wait_for(lambda: bool(scheduler_file.read_text().strip()), timeout=5)
        found.address = json.loads(scheduler_file.read_text())["address"]
        for name, extra in WORKERS.items():
            found.start(
                name,
                [*_dask_cli(), "worker", found.address, "--nworkers", "1", "--nthreads", "1",
                 "--name", name, "--no-dashboard", "--local-directory", str(folder / "scratch"),
                 *extra],
            )  # fmt: skip
        found.wait_ready()
        yield found
    finally:
        found.stop()
    # Nothing of the cluster outlives it: no worker, no host process, no step.
    assert wait_for(lambda: not processes_with(found.marker), timeout=10), processes_with(
        found.marker
    )


def summary(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


def steps_by_id(data: dict[str, object]) -> dict[str, dict[str, object]]:
    return {str(s["id"]): s for s in data["steps"]}  # type: ignore[attr-defined]


def pipeline(folder: Path, text: str, modules: dict[str, str] | None = None) -> Path:
    path = folder / "p.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    for name, code in (modules or {}).items():
        (folder / name).write_text(textwrap.dedent(code).lstrip())
    return path


# -- on a cluster ---------------------------------------------------------------------------------


def test_etl_runs_on_both_workers(cluster: Cluster, run_cli: RunCli, tmp_path: Path) -> None:
    cluster.wait_ready()
    out = tmp_path / "out.json"
    result = run_cli(
        "run", str(PIPELINES / "etl.yaml"), "--executor", "dask", "--scheduler", cluster.address,
        "--json", str(out), "--progress", "plain",
    )  # fmt: skip
    assert result.code == 0, result.output
    data = summary(out)
    report = data["outputs"]["report"]  # type: ignore[index]
    assert report["grand_total"] == 72
    assert report["totals"] == {"acme": 6, "globex": 30, "initech": 36}
    workers = {s["worker"] for s in data["steps"]}  # type: ignore[attr-defined]
    assert {"wA", "wB"} <= workers, workers
    # The step's log is in the run's folder, once.
    logs = run_cli("logs", str(data["run_id"]), "prepare")
    assert logs.code == 0, logs.output
    assert "preparing 3 tenants" in logs.stdout
    assert logs.stdout.count("--- attempt 1 of prepare") == 1


def test_resources_choose_the_worker(cluster: Cluster, run_cli: RunCli, tmp_path: Path) -> None:
    cluster.wait_ready()
    path = pipeline(
        tmp_path,
        """
        version: 1
        name: gpu
        steps:
          - id: train
            for_each: [a, b, c]
            uses: shell
            resources: {gpu: 1}
            with: {cmd: "echo trained {{ item }}"}
          - id: quantum
            uses: noop
            resources: {qpu: 1}
        """,
    )
    out = tmp_path / "out.json"
    result = run_cli(
        "run", str(path), "--executor", "dask", "--scheduler", cluster.address,
        "--json", str(out), "--progress", "plain",
    )  # fmt: skip
    assert result.code == 1, result.output
    steps = steps_by_id(summary(out))
    for key in "abc":
        assert steps[f"train.{key}"]["state"] == "succeeded"
        assert steps[f"train.{key}"]["worker"] == "wB"  # the only worker with a gpu
    assert steps["quantum"]["state"] == "failed"
    assert "no Dask worker offers the resources this step needs (qpu=1)" in str(
        steps["quantum"]["error"]
    )


def test_commands_outlasting_the_start_report(
    cluster: Cluster, run_cli: RunCli, tmp_path: Path
) -> None:
    """A command still running when its host reports the process group (a few ms after the
    start) arrives in a later message than that report: the attempt waits for its completion
    and takes its output."""
    cluster.wait_ready()
    path = pipeline(
        tmp_path,
        """
        version: 1
        name: slow-commands
        steps:
          - id: wait
            for_each: [a, b, c, d]
            uses: shell
            with: {cmd: "sleep 0.3; echo waited {{ item }}"}
        """,
    )
    out = tmp_path / "out.json"
    result = run_cli(
        "run", str(path), "--executor", "dask", "--scheduler", cluster.address,
        "--json", str(out), "--progress", "plain", timeout=60,
    )  # fmt: skip
    assert result.code == 0, result.output
    steps = steps_by_id(summary(out))
    for key in "abcd":
        assert steps[f"wait.{key}"]["output"] == f"waited {key}"


KILL_MODULE = """
import os
import time
from pathlib import Path


def slow_once(folder):
    # The host running this attempt is a child of the Dask worker: its parent is the worker.
    pids = Path(folder) / "pids"
    first = not pids.exists()
    with open(pids, "a") as f:
        f.write(f"{os.getppid()}\\n")
    if first:
        time.sleep(120)
    return "done"
"""


@pytest.mark.slow
def test_killed_worker_reruns_the_step(cluster: Cluster, run_cli: RunCli, tmp_path: Path) -> None:
    cluster.wait_ready()
    before = cluster.total_registrations()
    path = pipeline(
        tmp_path,
        f"""
        version: 1
        name: kill
        steps:
          - id: quick
            uses: shell
            with: {{cmd: "echo quick"}}
          - id: victim
            uses: python
            with: {{call: "killmod:slow_once", args: ["{tmp_path}"]}}
          - id: after
            needs: [victim, quick]
            uses: python
            with: {{call: "killmod:slow_once", args: ["{tmp_path}"]}}
        """,
        {"killmod.py": KILL_MODULE},
    )
    out = tmp_path / "out.json"
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            run_cli,
            "run", str(path), "--executor", "dask", "--scheduler", cluster.address,
            "--json", str(out), "--progress", "plain",
        )  # fmt: skip
        pids = tmp_path / "pids"
        assert wait_for(lambda: pids.exists() and pids.read_text().strip(), timeout=60)
        victim_worker = int(pids.read_text().split()[0])
        os.kill(victim_worker, signal.SIGKILL)
        result = running.result(timeout=90)
    assert result.code == 0, result.output
    ran_on = [int(p) for p in pids.read_text().split()]
    assert len(ran_on) == 3 and ran_on[1] != victim_worker, ran_on  # again, elsewhere; then after
    run_id = str(summary(out)["run_id"])
    shown = run_cli("show", run_id, "--json")
    assert shown.code == 0, shown.output
    steps = [s for s in json.loads(shown.stdout)["steps"] if s["kind"] == "step"]
    assert {s["step_id"]: s["state"] for s in steps} == dict.fromkeys(
        ["quick", "victim", "after"], "succeeded"
    )
    assert next(s for s in steps if s["step_id"] == "victim")["attempts"] == 1
    cluster.wait_ready(before + 1)  # the nanny brought the worker back for the next tests


STUBBORN_MODULE = """
import os
import signal
import time


def stubborn(pidfile):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops this one
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    print("stubborn started", flush=True)
    while True:
        try:
            time.sleep(100)
        except BaseException:
            pass
"""


@pytest.mark.slow
def test_timeouts_stop_process_trees_and_logs_come_back(
    cluster: Cluster, run_cli: RunCli, tmp_path: Path
) -> None:
    cluster.wait_ready()
    path = pipeline(
        tmp_path,
        f"""
        version: 1
        name: timeouts
        steps:
          - id: stubborn
            uses: python
            timeout: 2s
            with: {{call: "stubmod:stubborn", args: ["{tmp_path / "py.pid"}"]}}
          - id: background
            uses: shell
            timeout: 2s
            with:
              cmd: "sleep 300 & echo $! > {tmp_path / "bg.pid"}; echo shell started; wait"
        """,
        {"stubmod.py": STUBBORN_MODULE},
    )
    out = tmp_path / "out.json"
    started = time.monotonic()
    result = run_cli(
        "run", str(path), "--executor", "dask", "--scheduler", cluster.address,
        "--json", str(out), "--progress", "plain",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.code == 1, result.output
    assert elapsed < 2 + 3 + 8, elapsed  # timeout + grace + a few seconds
    steps = steps_by_id(summary(out))
    assert steps["stubborn"]["error_kind"] == "timeout"
    assert steps["background"]["error_kind"] == "timeout"
    for pidfile in ("py.pid", "bg.pid"):
        pid = int((tmp_path / pidfile).read_text())
        assert wait_for(lambda pid=pid: not _alive(pid), timeout=3), f"{pidfile}: {pid} survived"
    run_id = str(summary(out)["run_id"])
    stubborn = run_cli("logs", run_id, "stubborn")
    assert "stubborn started" in stubborn.stdout, stubborn.output
    background = run_cli("logs", run_id, "background")
    assert "shell started" in background.stdout, background.output


SIGNAL_MODULE = """
import os
import subprocess
import time


def slow(folder):
    child = subprocess.Popen(["sleep", "300"])  # in the attempt's process group
    with open(os.path.join(folder, "py.pid"), "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    time.sleep(300)
"""


def test_sigterm_stops_the_attempts_on_the_workers(cluster: Cluster, tmp_path: Path) -> None:
    cluster.wait_ready()
    path = pipeline(
        tmp_path,
        f"""
        version: 1
        name: stop
        steps:
          - id: py
            uses: python
            with: {{call: "sigmod:slow", args: ["{tmp_path}"]}}
          - id: sh
            uses: shell
            with: {{cmd: "sleep 300 & echo $! > {tmp_path / "sh.pid"}; wait"}}
        """,
        {"sigmod.py": SIGNAL_MODULE},
    )
    env = user_env()
    env["PIPELINE_RUNNER_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.Popen(
        [runner_executable(), "run", str(path), "--executor", "dask",
         "--scheduler", cluster.address, "--progress", "plain"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        started = [tmp_path / "py.pid", tmp_path / "sh.pid"]
        assert wait_for(lambda: all(p.exists() and p.read_text() for p in started), timeout=60)
        os.kill(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, output
    assert "cancelled" in output
    pids = [int(p) for f in started for p in f.read_text().split()]
    assert wait_for(lambda: not any(_alive(p) for p in pids), timeout=5), [
        p for p in pids if _alive(p)
    ]


def test_secret_is_masked_on_the_worker(cluster: Cluster, run_cli: RunCli, tmp_path: Path) -> None:
    cluster.wait_ready()
    secret = "s3cr3t-" + uuid.uuid4().hex[:8]
    path = pipeline(
        tmp_path,
        """
        version: 1
        name: secret
        secrets: [API_TOKEN]
        steps:
          - id: tell
            uses: python
            with: {call: "tellmod:tell", args: ["{{ secrets.API_TOKEN }}"]}
          - id: echo
            uses: shell
            with: {cmd: "echo the token is $API_TOKEN"}
        """,
        {"tellmod.py": "def tell(secret):\n    print(f'the token is {secret}')\n"},
    )
    out = tmp_path / "out.json"
    result = run_cli(
        "run", str(path), "--executor", "dask", "--scheduler", cluster.address,
        "--json", str(out), "--progress", "plain", env={"API_TOKEN": secret},
    )  # fmt: skip
    assert result.code == 0, result.output
    assert secret not in result.output
    run_id = str(summary(out)["run_id"])
    for step in ("tell", "echo"):
        told = run_cli("logs", run_id, step)
        assert "the token is ***" in told.stdout, told.output
        assert secret not in told.stdout
    log_files = list((tmp_path / "state" / "runs" / run_id / "logs").glob("*.log"))
    assert len(log_files) == 2 and all(secret not in f.read_text() for f in log_files)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- the log travels back ------------------------------------------------------------------------


def test_log_comes_back_when_the_run_folder_is_not_on_the_worker(tmp_path: Path) -> None:
    """What a worker on another machine does: no run folder there, so the attempt logs to a
    temporary file whose (masked) bytes travel back and land in the run's log."""
    from pipeline_runner.executors.dask import _store_log
    from pipeline_runner.executors.dask_worker import retire_hosts, run_attempt
    from pipeline_runner.messages import Task

    secret = "hunter2-" + uuid.uuid4().hex[:6]
    elsewhere = tmp_path / "not-on-this-worker" / "logs" / "say.log"
    task = Task(
        attempt_id=1, node_id="say", uses="shell", with_={"cmd": ["echo", f"hi {secret}"]},
        env={"PATH": os.environ["PATH"]}, timeout=None, log_path=str(elsewhere), run_id="r1",
        attempt=1, key=None, item=None, pipeline_dir=str(tmp_path),
        scratch_dir=str(tmp_path / "scratch"),
    )  # fmt: skip
    token = uuid.uuid4().hex
    try:
        shipped = run_attempt(task, [secret], token, 0.0)
        assert shipped.completion.ok, shipped.completion
        assert shipped.log_offset is None
        assert b"hi ***" in shipped.log and secret.encode() not in shipped.log
        assert not elsewhere.parent.exists()

        here = tmp_path / "run" / "say.log"
        here.parent.mkdir()
        _store_log(str(here), shipped)
        assert here.read_bytes() == shipped.log

        # A worker that can write the run's folder writes the log in place; the runner then
        # finds the bytes already there and does not append them a second time.
        in_place = run_attempt(task._replace(attempt_id=2, log_path=str(here)), [secret], token, 0)
        assert in_place.log_offset == len(shipped.log)
        _store_log(str(here), in_place)
        assert here.read_bytes() == shipped.log + in_place.log
    finally:
        retire_hosts(token)


# -- a local cluster ------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_cluster_without_scheduler(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = run_cli(
        "run", str(PIPELINES / "hello.yaml"), "--executor", "dask", "--workers", "2",
        "--json", str(out), "--progress", "plain",
    )  # fmt: skip
    assert result.code == 0, result.output
    data = summary(out)
    assert data["outputs"] == {"greetings": 3}
    assert all(str(s["worker"]).startswith("tcp://127.0.0.1:") for s in data["steps"])  # type: ignore[attr-defined]


def test_without_distributed_the_error_names_the_extra(
    run_cli: RunCli, tmp_path: Path, write_pipeline: Callable[..., Path]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys


            class BlockDistributed:
                def find_spec(self, name, path=None, target=None):
                    if name == "distributed" or name.startswith("distributed."):
                        raise ImportError(f"No module named {name!r} (blocked by the test)")
                    return None


            sys.meta_path.insert(0, BlockDistributed())
            """
        )
    )
    path = write_pipeline("version: 1\nname: x\nsteps:\n  - {id: a, uses: noop}\n")
    result = run_cli(
        "run", str(path), "--executor", "dask", env={"PYTHONPATH": str(blocker)}
    )  # fmt: skip
    assert result.code == 2, result.output
    assert "pip install 'yaml-pipeline-runner[dask]'" in result.stderr
    assert no_traceback(result.output)
