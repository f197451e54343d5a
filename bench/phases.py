#!/usr/bin/env python3
"""Where the time of one `runner run` goes: interpreter start, imports, loading and planning
the file, the store, the workers, the scheduler's loop and the way out.

Runs `runner run FILE --progress none --workers N --state-dir D` N times, each in a fresh
interpreter (the runner's own, from its venv) with timers around a few functions of the
package, and prints the median wall and CPU (this process only: the workers are not in it)
time of each phase.  The timers are installed by wrapping the functions from outside; the
run itself is unchanged.  Standard library only.

    python3 bench/phases.py FILE [--runs 5] [--workers 2] [--python .venv/bin/python]

Phases (milliseconds):
- `start`: from `exec` to the first line of the measuring script (the interpreter's start);
- `imports`: the modules `runner run` imports before it reads the file;
- `load`: reading and composing the YAML; `plan`: validating and planning, without `load`;
- `fingerprint`: the plan as JSON, as stored with the run;
- `store: open + run row`: the store opened and the run and its pending steps recorded;
- `workers: start`: the worker processes started;
- `loop: waiting`: the scheduler waiting for the workers (idle);
- `loop: store turns`: the turns' rows written and committed;
- `loop: the rest`: the scheduler's own work (dispatch, completions, change records);
- `end`: the run's end recorded, the workers stopped, the store closed, the summary;
- `exit`: from the end of `main` to the process's end (interpreter shutdown);
- `other`: the rest of the process's time (option parsing, secrets, the concurrency lock...).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Runs inside the measured interpreter: argv = [script, FILE, WORKERS, STATE_DIR, OUT].
PROBE = r"""
import time
first = time.time()
t0, c0 = time.perf_counter(), time.thread_time()
import atexit, json, sys
marks = {"first": first}
totals = {}

def add(name, wall, cpu):
    w, c = totals.get(name, (0.0, 0.0))
    totals[name] = (w + wall, c + cpu)

def timed(owner, attr, name):
    inner = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        w, c = time.perf_counter(), time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            add(name, time.perf_counter() - w, time.thread_time() - c)

    setattr(owner, attr, wrapper)

from pipeline_runner import cli, engine, loader, planner, scheduler, store, storesink
from pipeline_runner.executors import process
add("imports", time.perf_counter() - t0, time.thread_time() - c0)
timed(planner, "load_file", "load")
timed(planner.Planner, "plan_file", "plan+load")
timed(engine, "plan_fingerprint", "fingerprint")
timed(storesink.StoreSink, "run_started", "store: open + run row")
timed(storesink.StoreSink, "turn", "loop: store turns")
timed(storesink.StoreSink, "run_finished", "end")
timed(store.Store, "close", "end")
timed(process.ProcessExecutor, "start", "workers: start")
timed(process.ProcessExecutor, "wait", "loop: waiting")
timed(process.ProcessExecutor, "close", "end")
timed(scheduler.Scheduler, "run", "scheduler.run")
timed(store, "open_store", "store: open + run row")

def done():
    marks["exit"] = time.time()
    totals["process"] = (time.perf_counter() - t0, time.thread_time() - c0)
    with open(sys.argv[4], "w") as f:
        json.dump({"marks": marks, "totals": totals}, f)

atexit.register(done)
try:
    cli.main(["run", sys.argv[1], "--progress", "none", "--workers", sys.argv[2],
              "--state-dir", sys.argv[3]], standalone_mode=False)
finally:
    marks["main_end"] = time.time()
"""

ORDER = (
    "start",
    "imports",
    "load",
    "plan",
    "fingerprint",
    "store: open + run row",
    "workers: start",
    "loop: waiting",
    "loop: store turns",
    "loop: the rest",
    "end",
    "exit",
    "other",
)


def one_run(python: str, file: Path, workers: int, work: Path) -> dict[str, tuple[float, float]]:
    out = work / "phases.json"
    state = work / "state"
    began = time.time()
    proc = subprocess.run(
        [python, "-c", PROBE, str(file), str(workers), str(state), str(out)],
        cwd=file.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"runner run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    data = json.loads(out.read_text())
    marks, totals = data["marks"], {k: tuple(v) for k, v in data["totals"].items()}
    phases: dict[str, tuple[float, float]] = {}
    phases["start"] = (marks["first"] - began, 0.0)
    phases["exit"] = (ended - marks["exit"], 0.0)
    for name in ("imports", "load", "fingerprint", "store: open + run row", "workers: start"):
        phases[name] = totals.get(name, (0.0, 0.0))
    plan_load = totals.get("plan+load", (0.0, 0.0))
    phases["plan"] = (plan_load[0] - phases["load"][0], plan_load[1] - phases["load"][1])
    for name in ("loop: waiting", "loop: store turns"):
        phases[name] = totals.get(name, (0.0, 0.0))
    run = totals.get("scheduler.run", (0.0, 0.0))
    end = totals.get("end", (0.0, 0.0))
    inside = ("loop: waiting", "loop: store turns", "workers: start")
    # run_started is called inside Scheduler.run too; `end` partly (run_finished, close)
    rest_wall = run[0] - sum(phases[n][0] for n in inside) - totals.get("store: open + run row")[0]
    rest_cpu = run[1] - sum(phases[n][1] for n in inside) - totals.get("store: open + run row")[1]
    phases["loop: the rest"] = (rest_wall, rest_cpu)
    phases["end"] = end
    process_total = totals["process"]
    known = [n for n in ORDER if n not in ("start", "exit", "other")]
    phases["other"] = (
        process_total[0] - sum(phases[n][0] for n in known),
        process_total[1] - sum(phases[n][1] for n in known),
    )
    phases["total"] = (ended - began, process_total[1])
    return phases


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", type=Path)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--python", default=str(REPO_ROOT / ".venv" / "bin" / "python"))
    args = p.parse_args()
    file = args.file.resolve()
    samples: list[dict[str, tuple[float, float]]] = []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="runner-phases-") as work:
            samples.append(one_run(args.python, file, args.workers, Path(work)))
        print(f"run {index + 1}/{args.runs}: {samples[-1]['total'][0]:.3f} s", file=sys.stderr)
    print(f"{file.name}: median of {args.runs} runs, milliseconds (cpu: the runner process only)")
    print(f"{'phase':24s} {'wall':>8s} {'cpu':>8s}")
    for name in (*ORDER, "total"):
        wall = statistics.median(s[name][0] for s in samples) * 1000
        cpu = statistics.median(s[name][1] for s in samples) * 1000
        print(f"{name:24s} {wall:8.1f} {cpu:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
