#!/usr/bin/env python3
"""Benchmark harness for `runner`: whole-process wall time and peak RSS against peers.

Generates workloads (pipelines and the equivalent peer/baseline programs) into a temporary
directory, runs every cell as a separate process (through a tiny launcher that measures the wall
time around the process and its peak RSS with ``os.wait4``), takes the median of N rounds, and
prints one table. In each round the cells of a workload run one after the other, in an order
rotated every round, so machine drift hits the runner and its peers alike.

Tools per workload:

- ``runner``: the project's CLI, ``runner run FILE --progress none --state-dir D --workers 2``.
- ``runner (dask)`` (W1-W5): the same with ``--executor dask``, which starts a local Dask
  cluster of that many worker processes (needs ``yaml-pipeline-runner[dask]`` in the runner's venv),
  compared with ``dask.distributed``: a plain script that starts the same ``LocalCluster`` the
  same way and runs the same graph on it (``Client.get``), on the runner's interpreter (the same
  Dask the executor uses).
- peers (installed on first use into ``bench/.venv-peers``): ``doit`` (parallel process mode)
  and ``dask`` (multiprocessing scheduler; the threaded scheduler as an extra row).
- baselines (plain Python, standard library): a serial loop and a ``ProcessPoolExecutor``
  running the DAG layer by layer.

W8 (100,000 steps: wall, peak RSS, the store's size, `runner show` of such a run, `runner resume`
of one SIGKILLed halfway) takes minutes a round and runs only when named (``--only W8``, or
``--only all``, which ``make bench`` uses), for ``--w8-runs`` rounds (default 1).

After the table, the speed targets of the scale issue: each ratio (or figure) measured within
this run, its limit, and whether it was met.

The harness itself uses the standard library only. See bench/README.md.

    python3 bench/run.py [--runs 5] [--only W1,W3|all] [--w8-runs 1] [--runner PATH] [--no-peers]
                         [--no-runner] [--markdown] [--json FILE] [--timeout 120] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PEERS_VENV = BENCH_DIR / ".venv-peers"
PEER_PACKAGES = ("doit", "dask")
DEFAULT_LOG = BENCH_DIR / "last-run.log"
DEFAULT_TIMEOUT = 120.0
STDERR_TAIL_LINES = 40
LEFTOVER_GRACE_S = 1.0  # processes of a run still alive this long after it exited are reported
NAP_SECONDS = 0.25
WORKERS = 2  # the benchmark machine has 2 cores
W4_WORKERS = 4
W4_STEPS = 32
WORKLOAD_NAMES = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "V1", "V2")
DEFAULT_WORKLOADS = frozenset(WORKLOAD_NAMES) - {"W8"}  # W8 takes minutes: only when named
W8_TENANTS, W8_CHAIN = 1000, 100  # 100,000 steps
W8_TIMEOUT = 1800.0  # seconds for one run of a W8 cell at least
ACCEPTANCE = {"V1": 2.0, "V2": 0.3}  # seconds: the loading issue's acceptance numbers

# Roles: the ratio column compares a "runner" row to the fastest row of the role it names
# (`Cell.vs`): `runner` to the fastest "peer", `runner (dask)` to the "cluster" row (plain
# dask.distributed on the same local cluster). "extra" peers (dask's threaded scheduler: no
# process isolation) and "baseline" rows are shown only.
RUNNER, PEER, CLUSTER, EXTRA, BASELINE = "runner", "peer", "cluster", "extra", "baseline"

# --------------------------------------------------------------------------- generated files

NOOP_MOD = '''\
"""No-op step functions for the benchmark (called by runner, doit, dask and the baselines)."""

import time


def noop():
    return None


def nap(seconds=0.25):
    time.sleep(seconds)
    return None
'''

BENCH_TASKS = '''\
"""One step of a benchmark DAG, by kind, for the peers and baselines."""

import subprocess

from noop_mod import nap, noop


def step(kind, *_needs):
    if kind == "noop":
        return noop()
    if kind == "nap":
        return nap(0.25)
    if kind == "true":
        subprocess.run(["true"], check=True)
        return None
    raise ValueError(kind)
'''

SERIAL_PY = '''\
"""Baseline: every step in file (topological) order, in one process."""

import json
from pathlib import Path

from bench_tasks import step

dag = json.loads((Path(__file__).resolve().parent / "dag.json").read_text())
for kind in dag["kinds"]:
    step(kind)
'''

PPE_PY = '''\
"""Baseline: concurrent.futures.ProcessPoolExecutor, one submit per step, layer by layer."""

import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench_tasks import step


def layers(needs):
    depth = []
    for deps in needs:
        depth.append(1 + max((depth[d] for d in deps), default=-1))
    out = [[] for _ in range(max(depth, default=-1) + 1)]
    for i, d in enumerate(depth):
        out[d].append(i)
    return out


def main():
    dag = json.loads((Path(__file__).resolve().parent / "dag.json").read_text())
    with ProcessPoolExecutor(max_workers=int(sys.argv[1])) as pool:
        for layer in layers(dag["needs"]):
            for future in [pool.submit(step, dag["kinds"][i]) for i in layer]:
                future.result()


if __name__ == "__main__":
    main()
'''

DASK_PY = '''\
"""Peer: a dask graph dict of the DAG, run by dask's multiprocessing or threaded scheduler."""

import json
import sys
from pathlib import Path

from bench_tasks import step


def main():
    scheduler, workers = sys.argv[1], int(sys.argv[2])
    dag = json.loads((Path(__file__).resolve().parent / "dag.json").read_text())
    keys = [f"n{i}" for i in range(len(dag["kinds"]))]
    graph = {
        keys[i]: (step, kind, *[keys[d] for d in dag["needs"][i]])
        for i, kind in enumerate(dag["kinds"])
    }
    if scheduler == "processes":
        import dask.multiprocessing

        dask.multiprocessing.get(graph, keys, num_workers=workers)
    else:
        import dask.threaded

        dask.threaded.get(graph, keys, num_workers=workers)


if __name__ == "__main__":
    main()
'''

DISTRIBUTED_PY = '''\
"""Peer of `runner --executor dask`: the same graph on a dask.distributed LocalCluster started
the way runner's dask executor starts it (N worker processes, one thread each)."""

import json
import logging
import sys
from pathlib import Path

from bench_tasks import step


def main():
    import distributed

    workers = int(sys.argv[1])
    dag = json.loads((Path(__file__).resolve().parent / "dag.json").read_text())
    keys = [f"n{i}" for i in range(len(dag["kinds"]))]
    graph = {
        keys[i]: (step, kind, *[keys[d] for d in dag["needs"][i]])
        for i, kind in enumerate(dag["kinds"])
    }
    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(workers, timeout=60)
        client.get(graph, keys, sync=True)
    finally:
        client.close(timeout=10)
        cluster.close(timeout=20)


if __name__ == "__main__":
    main()
'''

DODO_PY = '''\
"""Peer: doit tasks for the DAG (task_dep for needs, python-actions, cmd-actions for true)."""

import json
from pathlib import Path

from bench_tasks import step

DAG = json.loads((Path(__file__).resolve().parent / "dag.json").read_text())
DOIT_CONFIG = {"verbosity": 0}


def task_n():
    for i, kind in enumerate(DAG["kinds"]):
        action = ["true"] if kind == "true" else (step, [kind])
        yield {
            "name": str(i),
            "actions": [action],
            "task_dep": [f"n:{d}" for d in DAG["needs"][i]],
            "uptodate": [False],
        }
'''

YAML_LOAD_PY = '''\
"""Baseline for V1: only parse the pipeline file with PyYAML (safe_load)."""

import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    yaml.safe_load(f)
'''

# --------------------------------------------------------------------------- workload shapes


@dataclass(frozen=True)
class Dag:
    """A workload's DAG in file (topological) order: runner ids, step kinds, needs by index."""

    ids: list[str]
    kinds: list[str]
    needs: list[list[int]]

    def to_json(self) -> str:
        return json.dumps({"kinds": self.kinds, "needs": self.needs})


def independent(prefix: str, n: int, kind: str) -> Dag:
    width = len(str(n - 1))
    return Dag([f"{prefix}{i:0{width}d}" for i in range(n)], [kind] * n, [[] for _ in range(n)])


def dag_w1(n: int = 2000) -> Dag:
    dag = independent("s", n, "noop")
    return Dag([*dag.ids, "join"], [*dag.kinds, "noop"], [*dag.needs, list(range(n))])


def dag_w2(n: int = 500) -> Dag:
    return Dag([f"c{i:03d}" for i in range(n)], ["noop"] * n, [[]] + [[i - 1] for i in range(1, n)])


def dag_w3(layers: int = 20, width: int = 100) -> Dag:
    ids, needs = [], []
    for layer in range(layers):
        for i in range(width):
            ids.append(f"l{layer:02d}_n{i:03d}")
            base = (layer - 1) * width
            needs.append([] if layer == 0 else [base + i, base + (i + 1) % width])
    return Dag(ids, ["noop"] * len(ids), needs)


def dag_w7(tenants: int = 1000, chain: int = 10) -> Dag:
    ids, needs = [], []
    for t in range(tenants):
        for s in range(chain):
            ids.append(f"etl.t{t:04d}.s{s}")
            needs.append([] if s == 0 else [len(ids) - 2])
    return Dag(ids, ["noop"] * len(ids), needs)


# --------------------------------------------------------------------------- pipeline YAML

RUNNER_STEP_BODY = {
    "noop": ["uses: python", 'with: {call: "noop_mod:noop"}'],
    "nap": ["uses: python", f'with: {{call: "noop_mod:nap", args: [{NAP_SECONDS}]}}'],
    "true": ["uses: shell", 'with: {cmd: ["true"]}'],
}


def pipeline_yaml(name: str, dag: Dag) -> str:
    lines = ["version: 1", f"name: {name}", "steps:"]
    for sid, kind, deps in zip(dag.ids, dag.kinds, dag.needs, strict=True):
        lines.append(f"  - id: {sid}")
        lines.extend(f"    {line}" for line in RUNNER_STEP_BODY[kind])
        if deps:
            lines.append(f"    needs: [{', '.join(dag.ids[d] for d in deps)}]")
    return "\n".join(lines) + "\n"


def template_pipeline_yaml(name: str, tenants: int = 1000, chain: int = 10) -> str:
    """W7 (and W8): a template of `chain` chained noop steps, one instance per tenant."""
    lines = ["version: 1", f"name: {name}", "params:", "  tenants:"]
    lines += [f"    - t{t:04d}" for t in range(tenants)]
    lines += ["templates:", "  etl:", "    params:", "      tenant: {}", "    steps:"]
    for s in range(chain):
        lines += [f"      - id: s{s}", "        uses: noop"]
        if s:
            lines.append(f"        needs: s{s - 1}")
    lines += [
        "steps:",
        "  - id: etl",
        "    template: etl",
        '    for_each: "{{ params.tenants }}"',
        '    with: {tenant: "{{ item }}"}',
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- cells and results


@dataclass
class Sample:
    wall: float
    rss_mb: float
    leftovers: bool = False  # processes of the run's session outlived it (then killed)
    extra: dict[str, float] = field(default_factory=dict)  # a cell's probe: e.g. store MB


@dataclass
class Cell:
    """One tool on one workload: how to build its argv for a fresh run directory, and results."""

    tool: str
    role: str
    argv: Callable[[Path], list[str]]
    vs: str | None = None  # runner rows: the role whose fastest row the ratio divides by
    # After each run: figures read from its directory (e.g. {"store MB": 81.9}), for the notes.
    probe: Callable[[Path], dict[str, float]] | None = None
    needs_setup: bool = False  # uses what the workload's setup made (fails with it)
    per_step: bool = True  # False: runs no steps (`runner show`): no ms/step
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    leftovers: int = 0  # runs after which processes of the tool were still running

    def median_wall(self) -> float | None:
        return statistics.median(s.wall for s in self.samples) if self.ok else None

    def median_rss(self) -> float | None:
        return statistics.median(s.rss_mb for s in self.samples) if self.ok else None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples)


@dataclass
class Workload:
    name: str
    title: str
    steps: int | None  # None: not a step-running workload (no ms/step)
    ideal_s: float | None = None  # W4: ideal wall time for parallel efficiency
    cells: list[Cell] = field(default_factory=list)
    setup: Callable[[], None] | None = None  # once before the rounds; raises CellError
    min_timeout: float = 0.0  # a cell's run may take this long even under a lower --timeout


@dataclass(frozen=True)
class Tools:
    """Executables found for this session."""

    runner: Path | None
    python: str  # interpreter for the baselines
    peers_python: Path | None
    doit: Path | None
    doit_db_flag: str
    doit_help: list[str]
    yaml_python: str | None
    distributed_python: str | None  # for the dask.distributed row: the runner's, if it can
    peer_versions: str  # e.g. "doit 0.37.0, dask 2026.8.0", or "" without peers


# --------------------------------------------------------------------------- process measurement


class CellError(Exception):
    """A run of a cell failed; the message is short, details go to the log."""


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group (whatever is left of it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# Launcher run as `python -S -I -c LAUNCHER RESULT_FILE GRACE ARGV...`. It forks and execs ARGV,
# takes the wall time from fork to ARGV's exit, and gets peak RSS from os.wait4. Two reasons for
# this small process between the harness and the tool:
# - Linux carries the RSS high-water mark of the address space a process leaves at exec into its
#   ru_maxrss, so a tool started straight from the harness would report at least the harness's
#   own peak (vfork/posix_spawn even share the harness's memory). The launcher is a few MB.
# - As a child subreaper (prctl PR_SET_CHILD_SUBREAPER) it inherits the processes the tool
#   leaves behind (e.g. multiprocessing's forkserver and the workers it forked), reaps them for
#   up to GRACE seconds, and so counts their peak RSS too; those still running then are reported.
LAUNCHER = """\
import ctypes, os, sys, time
result, grace, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
try:
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except (OSError, AttributeError):
    pass
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, ("cannot start: %s\\n" % exc.strerror).encode())
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
maxrss, lingering, deadline = usage.ru_maxrss, 0, time.monotonic() + grace
while True:
    try:
        done, _, usage = os.wait4(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if done:
        maxrss = max(maxrss, usage.ru_maxrss)
    elif time.monotonic() < deadline:
        time.sleep(0.01)
    else:
        lingering = 1
        break
with open(result, "w") as f:
    f.write("%r %d %d %d" % (wall, maxrss, os.waitstatus_to_exitcode(status), lingering))
"""


def measure(argv: list[str], run_dir: Path, timeout: float) -> Sample:
    """Run argv once in its own session, through LAUNCHER; wall time and ru_maxrss of argv."""
    out_path, err_path = run_dir / "stdout.txt", run_dir / "stderr.txt"
    result_path = run_dir / "measure.txt"
    launcher = [sys.executable, "-S", "-I", "-c", LAUNCHER, str(result_path)]
    launcher += [str(LEFTOVER_GRACE_S), *argv]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            launcher,
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(proc.pid)

        timer = threading.Timer(timeout, on_timeout)
        timer.start()
        try:
            proc.wait()
        except BaseException:  # e.g. Ctrl-C: the tool is in its own session, stop it too
            _kill_group(proc.pid)
            raise
        finally:
            timer.cancel()
    _kill_group(proc.pid)  # whatever outlived the launcher's grace period
    if timed_out.is_set():
        raise CellError(f"timeout after {timeout:g} s\n{_tail(err_path)}")
    try:
        wall_s, maxrss_s, code_s, lingering_s = result_path.read_text().split()
    except (OSError, ValueError) as exc:
        raise CellError(f"launcher failed (exit {proc.returncode})\n{_tail(err_path)}") from exc
    code = int(code_s)
    if code != 0:
        first = _tail(err_path, 1) if code == 127 else ""
        reason = first if first.startswith("cannot start") else f"exit code {code}"
        raise CellError(f"{reason}\n{_tail(err_path)}\n{_tail(out_path, 10)}")
    return Sample(float(wall_s), int(maxrss_s) / 1024.0, lingering_s == "1")  # Linux: KiB


# --------------------------------------------------------------------------- environment setup


def _run_quiet(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def ensure_peers(log: Callable[[str], None]) -> Path | None:
    """Create bench/.venv-peers with doit and dask on first use; its python, or None."""
    python = PEERS_VENV / "bin" / "python"
    probe = [str(python), "-c", "import doit, dask, dask.multiprocessing, dask.threaded"]
    try:
        if python.exists() and _run_quiet(probe, 120).returncode == 0:
            return python
        note(f"setting up peers venv {PEERS_VENV} (pip install {' '.join(PEER_PACKAGES)}) ...")
        if not python.exists():
            made = _run_quiet([sys.executable, "-m", "venv", str(PEERS_VENV)], 300)
            if made.returncode != 0:
                raise RuntimeError(made.stderr)
        pip = _run_quiet([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], 900)
        if pip.returncode != 0:
            raise RuntimeError(pip.stderr[-4000:])
        if _run_quiet(probe, 120).returncode != 0:
            raise RuntimeError("doit/dask installed but not importable")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        log(f"peers venv setup failed: {exc}")
        note("peers skipped: could not set up bench/.venv-peers (details in the log)")
        return None
    return python


def doit_flags(doit: Path) -> tuple[str, list[str]]:
    """The dependency-file flag of `doit run` (renamed across versions) and the help argv."""
    run_help = _run_quiet([str(doit), "help", "run"], 60).stdout
    db_flag = "--db-file" if "--db-file" in run_help else "--dep-file"
    dash_help = _run_quiet([str(doit), "--help"], 60).returncode == 0
    return db_flag, [str(doit), "--help" if dash_help else "help"]


def find_python(candidates: Iterable[str | None], module: str) -> str | None:
    """The first interpreter of candidates that can import module."""
    for python in candidates:
        if python and Path(python).exists():
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                if _run_quiet([python, "-c", f"import {module}"], 60).returncode == 0:
                    return python
    return None


def discover_tools(args: argparse.Namespace, log: Callable[[str], None]) -> Tools:
    runner = None if args.no_runner else Path(args.runner).expanduser().absolute()
    if runner is not None and not os.access(runner, os.X_OK):
        note(f"runner not runnable at {runner}: its cells will show 'error'")
    peers_python = None if args.no_peers else ensure_peers(log)
    doit = peers_python.parent / "doit" if peers_python else None
    db_flag, doit_help = doit_flags(doit) if doit else ("--db-file", [])
    runner_python = str(runner.parent / "python") if runner else None
    if runner_python:
        compile_runner(runner_python, log)
    candidates = [runner_python, str(peers_python) if peers_python else None]
    yaml_python = find_python(candidates, "yaml")
    distributed_python = None if args.no_peers else find_python(candidates, "distributed")
    versions = peer_versions(peers_python) if peers_python else ""
    return Tools(
        runner,
        sys.executable,
        peers_python,
        doit,
        db_flag,
        doit_help,
        yaml_python,
        distributed_python,
        versions,
    )


def compile_runner(python: str, log: Callable[[str], None]) -> None:
    """Byte-compile the runner's package, as `pip install` does for the peers: an editable
    checkout (or PYTHONDONTWRITEBYTECODE) would otherwise compile every module on every run,
    and the table would measure the compiler."""
    code = (
        "import compileall, os, pipeline_runner; "
        "compileall.compile_dir(os.path.dirname(pipeline_runner.__file__), quiet=1)"
    )
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        _run_quiet([python, "-c", code], 120)
        log("byte-compiled the runner's package")


def peer_versions(python: Path) -> str:
    code = "from importlib.metadata import version as v; print(v('doit'), v('dask'))"
    try:
        doit_v, dask_v = _run_quiet([str(python), "-c", code], 60).stdout.split()
    except (ValueError, OSError, subprocess.TimeoutExpired):
        return ""
    return f"doit {doit_v}, dask {dask_v}"


# --------------------------------------------------------------------------- workload assembly


def write_workload_dir(root: Path, name: str, dag: Dag, pipeline: str) -> Path:
    wdir = root / name
    wdir.mkdir(parents=True)
    files = {
        "pipeline.yaml": pipeline,
        "dag.json": dag.to_json(),
        "noop_mod.py": NOOP_MOD,
        "bench_tasks.py": BENCH_TASKS,
        "serial.py": SERIAL_PY,
        "ppe.py": PPE_PY,
        "dask_run.py": DASK_PY,
        "distributed_run.py": DISTRIBUTED_PY,
        "dodo.py": DODO_PY,
        "yaml_load.py": YAML_LOAD_PY,
    }
    for fname, text in files.items():
        (wdir / fname).write_text(text, encoding="utf-8")
    return wdir


def runner_cells(
    tools: Tools, tool: str, args: Callable[[Path], list[str]], vs: str = PEER
) -> list[Cell]:
    """The runner row of a workload (compared with the fastest row of role `vs`), or none with
    --no-runner."""
    if tools.runner is None:
        return []
    runner = str(tools.runner)
    return [Cell(tool, RUNNER, lambda d: [runner, *args(d)], vs=vs)]


def dag_cells(
    tools: Tools,
    wdir: Path,
    workers: int,
    serial_label: str = "serial loop",
    with_dask: bool = False,
) -> list[Cell]:
    """runner (and runner on a local Dask cluster with plain dask.distributed beside it), doit,
    dask (processes, threads), serial loop and ProcessPoolExecutor cells."""
    py, ppy = tools.python, str(tools.peers_python) if tools.peers_python else None
    pipeline = str(wdir / "pipeline.yaml")
    run_opts = ["--progress", "none", "--workers", str(workers), "--state-dir"]
    cells = runner_cells(tools, "runner", lambda d: ["run", pipeline, *run_opts, str(d / "state")])
    if with_dask:
        dask_opts = ["--executor", "dask", *run_opts]
        cells += runner_cells(
            tools,
            "runner (dask)",
            lambda d: ["run", pipeline, *dask_opts, str(d / "state")],
            vs=CLUSTER,
        )
        if tools.distributed_python:
            dpy = tools.distributed_python
            cells.append(
                Cell(
                    "dask.distributed",
                    CLUSTER,
                    lambda d: [dpy, str(wdir / "distributed_run.py"), str(workers)],
                )
            )
    if tools.doit and ppy:
        doit_run = [str(tools.doit), "-f", str(wdir / "dodo.py"), "-n", str(workers)]
        doit_run += ["-P", "process", "--reporter", "zero", "--backend", "sqlite3"]
        doit_run += [tools.doit_db_flag]
        cells += [
            Cell("doit", PEER, lambda d: [*doit_run, str(d / "doit.db")]),
            Cell(
                "dask processes",
                PEER,
                lambda d: [ppy, str(wdir / "dask_run.py"), "processes", str(workers)],
            ),
            Cell(
                "dask threads",
                EXTRA,
                lambda d: [ppy, str(wdir / "dask_run.py"), "threads", str(workers)],
            ),
        ]
    cells += [
        Cell(serial_label, BASELINE, lambda d: [py, str(wdir / "serial.py")]),
        Cell(
            f"ProcessPoolExecutor({workers})",
            BASELINE,
            lambda d: [py, str(wdir / "ppe.py"), str(workers)],
        ),
    ]
    return cells


def help_cells(tools: Tools, with_peers: bool) -> list[Cell]:
    cells = runner_cells(tools, "runner --help", lambda d: ["--help"])
    if with_peers and tools.doit_help:
        doit_help = tools.doit_help
        cells.append(Cell(f"doit {doit_help[1]}", PEER, lambda d: doit_help))
    if with_peers:
        py = tools.python
        cells.append(Cell("python -c pass", BASELINE, lambda d: [py, "-c", "pass"]))
    return cells


@dataclass(frozen=True)
class DagSpec:
    """A workload whose steps are a DAG run by every tool."""

    name: str
    title: str
    dag: Callable[[], Dag]
    workers: int = WORKERS
    ideal_s: float | None = None
    serial_label: str = "serial loop"


DAG_SPECS = (
    DagSpec("W1", "2,000 independent python no-op steps + 1 join", dag_w1),
    DagSpec("W2", "chain of 500 python no-op steps", dag_w2),
    DagSpec("W3", "20 layers x 100 python no-ops, 2 needs each", dag_w3),
    DagSpec(
        "W4",
        f"{W4_STEPS} python steps sleeping {NAP_SECONDS} s, {W4_WORKERS} workers",
        lambda: independent("nap", W4_STEPS, "nap"),
        workers=W4_WORKERS,
        ideal_s=W4_STEPS * NAP_SECONDS / W4_WORKERS,
    ),
    DagSpec(
        "W5",
        "300 independent shell steps: argv ['true']",
        lambda: independent("t", 300, "true"),
        serial_label="subprocess.run loop",
    ),
)


def dag_workload(spec: DagSpec, root: Path, tools: Tools) -> Workload:
    dag = spec.dag()
    wdir = write_workload_dir(root, spec.name, dag, pipeline_yaml(spec.name.lower(), dag))
    cells = dag_cells(tools, wdir, spec.workers, spec.serial_label, with_dask=True)
    return Workload(spec.name, spec.title, len(dag.ids), spec.ideal_s, cells)


def template_workloads(root: Path, tools: Tools, wanted: set[str]) -> list[Workload]:
    """W7 (run the 10,000-step template file) and V1 (validate it)."""
    w7 = dag_w7()
    wdir = write_workload_dir(root, "W7", w7, template_pipeline_yaml("w7"))
    out = []
    if "W7" in wanted:
        title = "template of 10 noop steps x 1,000 tenants"
        out.append(Workload("W7", title, len(w7.ids), None, dag_cells(tools, wdir, WORKERS)))
    if "V1" in wanted:
        title = "validate the W7 file (10,000 planned steps)"
        out.append(Workload("V1", title, len(w7.ids), None, validate_cells(tools, wdir)))
    return out


def build_workloads(root: Path, tools: Tools, only: set[str] | None) -> list[Workload]:
    """Generate every selected workload's files under root and list its cells."""
    wanted = set(DEFAULT_WORKLOADS) if only is None else only
    out = [dag_workload(spec, root, tools) for spec in DAG_SPECS if spec.name in wanted]
    if "W6" in wanted:
        out.append(Workload("W6", "CLI start-up: --help", None, None, help_cells(tools, True)))
    if wanted & {"W7", "V1"}:
        out += template_workloads(root, tools, wanted)
    if "V2" in wanted:
        out.append(Workload("V2", "runner --help", None, None, help_cells(tools, False)))
    if "W8" in wanted:
        out.append(w8_workload(root, tools))
    return [wl for wl in out if wl.cells]


def store_mb(state: Path) -> dict[str, float]:
    """The size of the run store (SQLite file with its journal) in a state folder."""
    files = [state / f"runs.db{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]
    size = sum(f.stat().st_size for f in files if f.exists())
    return {"store MB": size / 1e6} if size else {}


def succeeded_steps(state: Path) -> int:
    """How many steps the store in `state` records as succeeded (0 before it has its tables)."""
    db_file = state / "runs.db"
    if not db_file.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT COUNT(*) FROM steps WHERE state = 'succeeded'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int(row[0])


def killed_run(argv: list[str], state: Path, at: int, timeout: float) -> str:
    """Start `argv` (a `runner run` into `state`), SIGKILL its process group once the store
    records `at` succeeded steps; the run's id."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while succeeded_steps(state) < at:
            if proc.poll() is not None:
                raise CellError(f"runner run ended (exit {proc.returncode}) before {at:,} steps")
            if time.monotonic() > deadline:
                raise CellError(f"runner run did not reach {at:,} steps in {timeout:g} s")
            time.sleep(0.05)
    finally:
        _kill_group(proc.pid)
        proc.wait()
    db = sqlite3.connect(str(state / "runs.db"))
    try:
        return str(db.execute("SELECT id FROM runs ORDER BY started DESC").fetchone()[0])
    finally:
        db.close()


def w8_workload(root: Path, tools: Tools) -> Workload:
    """W8: 1,000 tenants x a 100-step template of noops (100,000 steps); runner against dask's
    schedulers on the same graph, the store's size, `runner show` of such a run, and
    `runner resume` of a run SIGKILLed halfway (each round resumes a copy of it)."""
    dag = dag_w7(W8_TENANTS, W8_CHAIN)
    wdir = write_workload_dir(root, "W8", dag, template_pipeline_yaml("w8", W8_TENANTS, W8_CHAIN))
    pipeline = str(wdir / "pipeline.yaml")
    run_opts = ["--progress", "none", "--workers", str(WORKERS), "--state-dir"]
    cells = runner_cells(tools, "runner", lambda d: ["run", pipeline, *run_opts, str(d / "state")])
    for cell in cells:
        cell.probe = lambda d: store_mb(d / "state")
    shown = wdir / "show-state"  # one run of the file, made by the set-up, for `runner show`
    killed = wdir / "killed-state"  # one run SIGKILLed halfway, for `runner resume`
    run_id: list[str] = []
    killed_id: list[str] = []

    def setup() -> None:
        assert tools.runner is not None
        summary = wdir / "show-run.json"
        argv = [str(tools.runner), "run", pipeline, *run_opts, str(shown), "--json", str(summary)]
        try:
            done = _run_quiet(argv, W8_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CellError(f"runner run for runner show: {exc}") from exc
        if done.returncode != 0:
            raise CellError(f"runner run for runner show: exit code {done.returncode}")
        run_id.append(json.loads(summary.read_text())["run_id"])
        half = W8_TENANTS * W8_CHAIN // 2
        argv = [str(tools.runner), "run", pipeline, *run_opts, str(killed)]
        killed_id.append(killed_run(argv, killed, half, W8_TIMEOUT))

    def resume_argv(d: Path) -> list[str]:
        # The copy is made before the measured process starts (a fresh one each round).
        shutil.copytree(killed, d / "state")
        return ["resume", killed_id[0], *run_opts, str(d / "state")]

    for label, extra in (("runner show", []), ("runner show --json", ["--json"])):
        cells += runner_cells(
            tools,
            label,
            lambda d, extra=extra: ["show", run_id[0], *extra, "--state-dir", str(shown)],
            vs=None,
        )
        if cells and cells[-1].tool == label:
            cells[-1].needs_setup, cells[-1].per_step = True, False
    cells += runner_cells(tools, "runner resume (killed at 50%)", resume_argv, vs=None)
    if cells and cells[-1].tool == "runner resume (killed at 50%)":
        cells[-1].needs_setup, cells[-1].per_step = True, False
    if tools.peers_python:
        ppy = str(tools.peers_python)
        for label, role, scheduler in (
            ("dask processes", PEER, "processes"),
            ("dask threads", EXTRA, "threads"),
        ):
            cells.append(
                Cell(
                    label,
                    role,
                    lambda d, s=scheduler: [ppy, str(wdir / "dask_run.py"), s, str(WORKERS)],
                )
            )
    title = f"template of {W8_CHAIN} noop steps x {W8_TENANTS:,} tenants"
    setup_fn = setup if tools.runner is not None else None
    return Workload("W8", title, len(dag.ids), None, cells, setup_fn, W8_TIMEOUT)


def validate_cells(tools: Tools, wdir: Path) -> list[Cell]:
    pipeline = str(wdir / "pipeline.yaml")
    cells = runner_cells(tools, "runner validate", lambda d: ["validate", pipeline])
    if tools.yaml_python:
        ypy = tools.yaml_python
        cells.append(
            Cell(
                "yaml.safe_load only",
                BASELINE,
                lambda d: [ypy, str(wdir / "yaml_load.py"), pipeline],
            )
        )
    return cells


# --------------------------------------------------------------------------- running


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_workload(
    wl: Workload, root: Path, runs: int, timeout: float, log: Callable[[str], None], keep: bool
) -> None:
    """N rounds; each round runs every live cell once, starting one later each round."""
    cells = wl.cells
    timeout = max(timeout, wl.min_timeout)
    if wl.setup is not None:
        try:
            wl.setup()
        except CellError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "failed"
            log(f"== {wl.name} set-up failed: {first}\n{exc}\n")
            for cell in cells:
                if cell.needs_setup:
                    cell.error = f"set-up: {first}"
    for rnd in range(runs):
        order = cells[rnd % len(cells) :] + cells[: rnd % len(cells)]
        for cell in order:
            if cell.error is not None:
                continue
            run_cell_once(wl, cell, rnd, root, timeout, log, keep)
        done = ", ".join(f"{c.tool} {fmt_wall(c)}" for c in cells)
        note(f"{wl.name} round {rnd + 1}/{runs}: {done}")


def run_cell_once(
    wl: Workload,
    cell: Cell,
    rnd: int,
    root: Path,
    timeout: float,
    log: Callable[[str], None],
    keep: bool,
) -> None:
    """One measurement; its run directory (state, logs) is removed afterwards unless keep."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in cell.tool)
    run_dir = root / "runs" / wl.name / f"{safe}-{rnd}"
    run_dir.mkdir(parents=True)
    argv = cell.argv(run_dir)
    try:
        sample = measure(argv, run_dir, timeout)
        if cell.probe is not None:
            sample.extra = cell.probe(run_dir)
        cell.samples.append(sample)
        if sample.leftovers:
            cell.leftovers += 1
            if cell.leftovers == 1:
                log(
                    f"note: {wl.name} / {cell.tool}: processes still running "
                    f"{LEFTOVER_GRACE_S:g} s after the tool exited; killed them"
                )
    except CellError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "failed"
        cell.error = first
        log(
            f"== {wl.name} / {cell.tool} (round {rnd + 1}) failed: {first}\n"
            f"argv: {' '.join(argv)}\n{exc}\n"
        )
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


# --------------------------------------------------------------------------- reporting

HEADERS = ["workload", "tool", "wall s", "ms/step", "peak RSS MB", "vs peer", "notes"]


def fmt_wall(cell: Cell) -> str:
    wall = cell.median_wall()
    if cell.error is not None:
        return "error"
    return "-" if wall is None else f"{wall:.3f}"


def fastest(wl: Workload, role: str | None) -> float | None:
    """The median wall of the fastest row of `role` in the workload."""
    walls = [c.median_wall() for c in wl.cells if c.role == role and c.ok]
    return min((w for w in walls if w is not None), default=None)


def notes_for(wl: Workload, cell: Cell) -> str:
    wall = cell.median_wall()
    if cell.error is not None:
        return cell.error if len(cell.error) <= 50 else cell.error[:47] + "..."
    if wall is None:
        return ""
    parts = []
    for name in cell.samples[0].extra:
        values = [s.extra[name] for s in cell.samples if name in s.extra]
        what, _, unit = name.rpartition(" ")  # "store MB" -> "store 81.9 MB"
        parts.append(f"{what} {statistics.median(values):.1f} {unit}")
    if cell.role == RUNNER and cell.leftovers:
        parts.append(f"left processes behind in {cell.leftovers} runs")
    if wl.ideal_s is not None:
        parts.append(f"parallel efficiency {100 * wl.ideal_s / wall:.0f}%")
    if cell.role == RUNNER and wl.name in ACCEPTANCE:
        limit = ACCEPTANCE[wl.name]
        parts.append(f"target < {limit:g} s: {'ok' if wall < limit else 'MISSED'}")
    return "; ".join(parts)


def table_rows(workloads: list[Workload]) -> list[list[str]]:
    rows = []
    for wl in workloads:
        for cell in wl.cells:
            wall, rss = cell.median_wall(), cell.median_rss()
            steps = wl.steps if cell.per_step else None
            per_step = f"{1000 * wall / steps:.2f}" if wall and steps else "-"
            peer = fastest(wl, cell.vs)
            ratio = f"{wall / peer:.2f}x" if cell.role == RUNNER and wall and peer else "-"
            rows.append(
                [
                    wl.name,
                    cell.tool,
                    fmt_wall(cell),
                    per_step,
                    f"{rss:.0f}" if rss is not None else "-",
                    ratio,
                    notes_for(wl, cell),
                ]
            )
    return rows


# The scale issue's speed targets, each read within one run: (workload, what, limit, unit, at
# most?, how to read it). A ratio divides two rows of the same workload (median walls).
TARGET_HEADERS = ["workload", "target", "measured", "limit", "met"]


@dataclass(frozen=True)
class Target:
    workload: str
    what: str
    limit: float
    unit: str  # "x" (a ratio), "%", "MB" or "s"
    read: Callable[[Workload], float | None]
    at_most: bool = True  # False: the figure must reach the limit (parallel efficiency)


def row_of(wl: Workload, tool: str) -> Cell | None:
    return next((c for c in wl.cells if c.tool == tool and c.ok), None)


def wall_ratio(tool: str, other: str) -> Callable[[Workload], float | None]:
    def read(wl: Workload) -> float | None:
        a, b = row_of(wl, tool), row_of(wl, other)
        wa, wb = (a.median_wall() if a else None), (b.median_wall() if b else None)
        return wa / wb if wa and wb else None

    return read


def wall_of(tool: str) -> Callable[[Workload], float | None]:
    def read(wl: Workload) -> float | None:
        cell = row_of(wl, tool)
        return cell.median_wall() if cell else None

    return read


def rss_of(tool: str) -> Callable[[Workload], float | None]:
    def read(wl: Workload) -> float | None:
        cell = row_of(wl, tool)
        return cell.median_rss() if cell else None

    return read


def probe_of(tool: str, name: str) -> Callable[[Workload], float | None]:
    def read(wl: Workload) -> float | None:
        cell = row_of(wl, tool)
        values = [s.extra[name] for s in cell.samples if name in s.extra] if cell else []
        return statistics.median(values) if values else None

    return read


def efficiency_of(tool: str) -> Callable[[Workload], float | None]:
    def read(wl: Workload) -> float | None:
        wall = wall_of(tool)(wl)
        return 100 * wl.ideal_s / wall if wall and wl.ideal_s else None

    return read


PPE2 = f"ProcessPoolExecutor({WORKERS})"
TARGETS = [
    *(
        Target(w, f"runner / {PPE2}", 1.15, "x", wall_ratio("runner", PPE2))
        for w in ("W1", "W2", "W3")
    ),
    Target("W4", "runner: parallel efficiency", 95, "%", efficiency_of("runner"), at_most=False),
    Target(
        "W5", "runner / subprocess.run loop", 1.3, "x", wall_ratio("runner", "subprocess.run loop")
    ),
    Target("W7", "runner / dask processes", 1.0, "x", wall_ratio("runner", "dask processes")),
    Target("W7", "runner / dask threads", 1.5, "x", wall_ratio("runner", "dask threads")),
    *(
        Target(
            w,
            "runner (dask) / dask.distributed",
            1.2,
            "x",
            wall_ratio("runner (dask)", "dask.distributed"),
        )
        for w in ("W1", "W2", "W3", "W4", "W5")
    ),
    Target("W8", "runner / dask processes", 1.5, "x", wall_ratio("runner", "dask processes")),
    Target("W8", "runner: peak RSS", 250, "MB", rss_of("runner")),
    Target("W8", "runner: the store", 40, "MB", probe_of("runner", "store MB")),
    Target("W8", "runner show", 0.3, "s", wall_of("runner show")),
    Target("W8", "runner show --json", 0.3, "s", wall_of("runner show --json")),
    Target(
        "W8", "runner resume (killed at 50%)", 10, "s", wall_of("runner resume (killed at 50%)")
    ),
]


def _figure(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.0f}%"
    return f"{value:.3f} s" if unit == "s" else f"{value:.1f} {unit}"


def target_rows(workloads: list[Workload]) -> list[list[str]]:
    """One row per target whose rows ran (both rows of a ratio)."""
    by_name = {wl.name: wl for wl in workloads}
    rows = []
    for t in sorted(TARGETS, key=lambda t: WORKLOAD_NAMES.index(t.workload)):
        wl = by_name.get(t.workload)
        value = t.read(wl) if wl is not None else None
        if value is None:
            continue
        met = value <= t.limit if t.at_most else value >= t.limit
        limit = f"{'<=' if t.at_most else '>='} {_figure(t.limit, t.unit)}"
        rows.append([t.workload, t.what, _figure(value, t.unit), limit, "yes" if met else "MISSED"])
    return rows


def render_text(rows: list[list[str]], headers: list[str] = HEADERS) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    prev = None
    for r in rows:
        shown = [r[0] if r[0] != prev else "", *r[1:]]
        prev = r[0]
        lines.append("  ".join(c.ljust(w) for c, w in zip(shown, widths, strict=True)).rstrip())
    return "\n".join(lines)


def render_markdown(rows: list[list[str]], headers: list[str] = HEADERS) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def machine_line(runs: int, tools: Tools, w8_runs: int | None = None) -> str:
    peers = f"; {tools.peer_versions}" if tools.peer_versions else ""
    w8 = "" if w8_runs is None else f" (W8: {w8_runs})"
    return (
        f"{runs} runs each{w8}, median; {os.cpu_count()} CPUs; {platform.system()} "
        f"{platform.machine()}; Python {platform.python_version()}{peers}"
    )


def workload_legend(workloads: list[Workload]) -> str:
    return "\n".join(f"{wl.name}: {wl.title}" for wl in workloads)


def results_json(workloads: list[Workload]) -> list[dict[str, object]]:
    return [
        {
            "workload": wl.name,
            "tool": c.tool,
            "role": c.role,
            "compared_with": c.vs,
            "error": c.error,
            "wall_s": [s.wall for s in c.samples],
            "rss_mb": [s.rss_mb for s in c.samples],
            "extra": [s.extra for s in c.samples],
            "runs_with_leftover_processes": c.leftovers,
        }
        for wl in workloads
        for c in wl.cells
    ]


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=5, help="rounds per workload (median taken)")
    p.add_argument(
        "--only", default="", help="comma-separated workloads, e.g. W1,W3,V1; `all`: W8 too"
    )
    p.add_argument("--w8-runs", type=int, default=1, help="rounds of W8 (minutes each)")
    p.add_argument(
        "--runner",
        default=str(REPO_ROOT / ".venv" / "bin" / "runner"),
        help="runner executable (default: .venv/bin/runner in the repo)",
    )
    p.add_argument("--no-peers", action="store_true", help="skip doit/dask rows")
    p.add_argument("--no-runner", action="store_true", help="skip runner rows")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--json", type=Path, help="also write every sample to this JSON file")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per cell run")
    p.add_argument("--log", type=Path, default=DEFAULT_LOG, help="where failures are logged")
    p.add_argument("--keep", action="store_true", help="keep the generated temp dir")
    args = p.parse_args(argv)
    if args.runs < 1 or args.w8_runs < 1:
        p.error("--runs and --w8-runs must be at least 1")
    return args


def report(workloads: list[Workload], tools: Tools, args: argparse.Namespace) -> None:
    rows = table_rows(workloads)
    w8_runs = args.w8_runs if any(wl.name == "W8" for wl in workloads) else None
    print(machine_line(args.runs, tools, w8_runs))
    print(render_markdown(rows) if args.markdown else render_text(rows))
    if not args.markdown:
        print("\n" + workload_legend(workloads))
    targets = target_rows(workloads)
    if targets:
        print("\nTargets (each measured within this run):")
        render = render_markdown if args.markdown else render_text
        print(render(targets, TARGET_HEADERS))
    sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results_json(workloads), indent=1) + "\n")
    if any(c.error for wl in workloads for c in wl.cells):
        note(f"some cells failed: see {args.log}")


def selected(only: str) -> set[str] | None:
    """The workloads `--only` names (`all`: every one, W8 too); None: the default set."""
    names = {w.strip().upper() for w in only.split(",") if w.strip()} or None
    if names and "ALL" in names:
        names = (names - {"ALL"}) | set(WORKLOAD_NAMES)
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = selected(args.only)
    if only and only - set(WORKLOAD_NAMES):
        unknown = ", ".join(sorted(only - set(WORKLOAD_NAMES)))
        note(f"unknown workload(s) {unknown}; choose from {','.join(WORKLOAD_NAMES)}")
        return 2
    args.log.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="runner-bench-"))
    try:
        with args.log.open("w", encoding="utf-8") as log_file:

            def log(msg: str) -> None:
                log_file.write(msg.rstrip() + "\n")
                log_file.flush()

            tools = discover_tools(args, log)
            workloads = build_workloads(root, tools, only)
            if not workloads:
                note("nothing to run: every selected workload needs the runner or the peers")
                return 2
            interrupted = False
            try:
                for wl in workloads:
                    runs = args.w8_runs if wl.name == "W8" else args.runs
                    run_workload(wl, root, runs, args.timeout, log, keep=args.keep)
            except KeyboardInterrupt:
                interrupted = True
                note("interrupted: the table shows the rounds done so far")
        report(workloads, tools, args)
    finally:
        if args.keep:
            note(f"generated files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
