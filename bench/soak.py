"""Soak test: kill the runner with SIGKILL at random moments, resume, and check the promises.

Each round runs a 30-step pipeline (a few parallel chains; every step appends its id and the
attempt's pid to a journal, sleeps a little and returns a value), kills the runner with SIGKILL
at a random moment, checks that the store passes `PRAGMA quick_check` and that no process of the
run is left after a short grace, then `runner resume`s until the run ends.  At the end it checks
that the run succeeded with every output present and that no step that had been recorded as
succeeded ran again.

    python3 bench/soak.py [--rounds 50] [--runner .venv/bin/runner] [--seed N]

With `--kill workers` it kills WORKER processes instead (the runner lives on): each round runs
a pipeline of 80 steps (independent ones and chains, the chains queued as follow-ups on one
worker), every step retried on `crash` only, and SIGKILLs one of the run's worker processes at
a few random moments.  The run must succeed, and the ledger every attempt appends to (step,
attempt number) must show: every step succeeded exactly once, no attempt ran twice, and a step
ran more than once only when the runner recorded its earlier attempts as crashed (the
documented retry on `crash`).  A step whose worker was killed after the step had returned
may run again that way; a step whose result reached the runner never does.

Prints one line per round and a summary; exits 1 if any promise was broken.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 30
CHAINS = 5

PIPELINE_LIB = """
import os, time

def step(journal, name, value):
    with open(journal, "a") as f:
        f.write(f"{name} {os.getpid()}\\n")
    time.sleep(0.1)
    return value * 2
"""


def pipeline(journal: str) -> str:
    lines = ["version: 1", "name: soak", "steps:"]
    per_chain = STEPS // CHAINS
    for chain in range(CHAINS):
        for i in range(per_chain):
            sid = f"c{chain}s{i}"
            need = f"\n    needs: c{chain}s{i - 1}" if i else ""
            lines.append(
                f"  - id: {sid}\n    uses: python{need}\n"
                f"    with: {{call: 'soak_lib:step', "
                f"args: ['{journal}', '{sid}', {chain * 100 + i}]}}"
            )
    return "\n".join(lines) + "\n"


def alive(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def succeeded_steps(db: Path) -> set[str]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT step_id FROM steps WHERE state = 'succeeded' AND kind = 'step'"
        ).fetchall()
    except sqlite3.OperationalError:  # killed while the store's tables were being made
        rows = []
    finally:
        con.close()
    return {r[0] for r in rows}


def recorded_runs(db: Path) -> list[str]:
    """The ids of the runs the store holds (none if the runner died before recording one)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT id FROM runs ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # killed while the store's tables were being made
        rows = []
    finally:
        con.close()
    return [r[0] for r in rows]


def quick_check(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return str(con.execute("PRAGMA quick_check").fetchone()[0])
    finally:
        con.close()


def journal_counts(journal: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            name = line.split()[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def one_round(runner: str, rng: random.Random, number: int) -> list[str]:
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        folder = Path(tmp)
        journal = folder / "journal.txt"
        (folder / "soak_lib.py").write_text(PIPELINE_LIB)
        (folder / "p.yaml").write_text(pipeline(str(journal)))
        state = folder / "state"
        marker = f"SOAK_MARKER_{os.getpid()}_{number}"
        env = {**os.environ, "RUNNER_STATE_DIR": str(state), marker: "1"}
        cmd = [runner, "run", "p.yaml", "--progress", "none", "--workers", "2"]
        proc = subprocess.Popen(
            cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        db = state / "runs.db"
        deadline = time.monotonic() + 30
        while not db.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.8))  # the run takes about 2 s once it has started
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while alive(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(marker):
            problems.append(f"processes left after the kill: {alive(marker)}")
        if not db.exists():
            stderr = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
            problems.append(f"the store was never created (exit {proc.returncode}: {stderr})")
            print(f"round {number:3}: PROBLEMS: {problems[-1]}", flush=True)
            return problems
        check = quick_check(db)
        if check != "ok":
            problems.append(f"quick_check after the kill: {check}")
        done_before = succeeded_steps(db)
        counts_before = journal_counts(journal)
        run_ids = recorded_runs(db)
        if not run_ids:
            # Killed before the run was recorded (between the store's creation and the run's
            # row): nothing may have run, and there is nothing to resume.
            if counts_before:
                problems.append(f"steps ran but no run was recorded: {sorted(counts_before)}")
            verdict = "OK" if not problems else "PROBLEMS: " + "; ".join(problems)
            print(f"round {number:3}: killed before the run was recorded; {verdict}", flush=True)
            return problems
        for _ in range(3):
            resumed = subprocess.run(
                [runner, "resume", run_ids[0], "--progress", "none", "--workers", "2"],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if resumed.returncode == 0:
                break
        else:
            problems.append(f"resume failed: {resumed.returncode} {resumed.stderr[-300:]}")
        shown = subprocess.run(
            [runner, "show", run_ids[0], "--json"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        data = json.loads(shown.stdout)
        if data["run"]["status"] != "succeeded":
            problems.append(f"run ended {data['run']['status']}")
        missing = [s["step_id"] for s in data["steps"] if s["output"] is None]
        if missing:
            problems.append(f"outputs missing: {missing[:5]}")
        counts_after = journal_counts(journal)
        again = [s for s in done_before if counts_after.get(s, 0) > counts_before.get(s, 0)]
        if again:
            problems.append(f"succeeded steps ran again: {again}")
        print(
            f"round {number:3}: killed={killed!s:5} succeeded before kill={len(done_before):2} "
            f"quick_check={check} {'OK' if not problems else 'PROBLEMS: ' + '; '.join(problems)}",
            flush=True,
        )
    return problems


# -- killing workers -------------------------------------------------------------------------

WORKER_LIB = """
import os, random, time

def step(ledger, name, value, ctx):
    time.sleep(random.choice([0.0, 0.0, 0.001, 0.005, 0.02]))
    with open(ledger, "a") as f:
        f.write(f"{name} {ctx.attempt}\\n")
    return value * 2
"""

INDEPENDENT = 40
WORKER_CHAINS = 4
CHAIN_LENGTH = 10


def worker_pipeline(ledger: str) -> tuple[str, dict[str, int]]:
    """The pipeline, and each step's expected output."""
    lines = ["version: 1", "name: worker-soak", "steps:"]
    expected: dict[str, int] = {}

    def add(sid: str, value: int, need: str | None) -> None:
        needs = f"\n    needs: {need}" if need else ""
        lines.append(
            f"  - id: {sid}\n    uses: python{needs}\n"
            "    retries: {max: 20, on: [crash]}\n"
            f"    with: {{call: 'soak_lib:step', args: ['{ledger}', '{sid}', {value}]}}"
        )
        expected[sid] = value * 2

    for i in range(INDEPENDENT):
        add(f"i{i}", i, None)
    for chain in range(WORKER_CHAINS):
        for i in range(CHAIN_LENGTH):
            add(f"c{chain}s{i}", 100 * chain + i, f"c{chain}s{i - 1}" if i else None)
    return "\n".join(lines) + "\n", expected


def workers_of(runner_pid: int) -> list[int]:
    """The runner's worker processes: its children, bar multiprocessing's helpers."""
    found = []
    try:
        tids = os.listdir(f"/proc/{runner_pid}/task")
    except OSError:
        return []
    for tid in tids:
        try:
            with open(f"/proc/{runner_pid}/task/{tid}/children") as f:
                children = [int(p) for p in f.read().split()]
        except OSError:
            continue
        for pid in children:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"multiprocessing" in f.read():
                        continue  # the forkserver or the resource tracker
            except OSError:
                continue
            found.append(pid)
    return found


def attempts_of(db: Path) -> dict[str, dict[int, tuple[str, str | None]]]:
    """step -> attempt number -> (state, error kind), as the runner recorded them."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT step_id, attempt, state, error_kind FROM attempts").fetchall()
    finally:
        con.close()
    out: dict[str, dict[int, tuple[str, str | None]]] = {}
    for step, attempt, state, kind in rows:
        out.setdefault(step, {})[int(attempt)] = (state, kind)
    return out


def one_worker_round(runner: str, rng: random.Random, number: int) -> list[str]:
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        folder = Path(tmp)
        ledger = folder / "ledger.txt"
        (folder / "soak_lib.py").write_text(WORKER_LIB)
        text, expected = worker_pipeline(str(ledger))
        (folder / "p.yaml").write_text(text)
        state = folder / "state"
        marker = f"SOAK_MARKER_{os.getpid()}_{number}"
        env = {**os.environ, "RUNNER_STATE_DIR": str(state), marker: "1"}
        cmd = [
            runner,
            "run",
            "p.yaml",
            "--progress",
            "none",
            "--workers",
            "2",
            "--json",
            "out.json",
        ]
        proc = subprocess.Popen(
            cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        kills = 0
        wanted = rng.randint(2, 6)
        while proc.poll() is None and kills < wanted:
            time.sleep(rng.uniform(0.0, 0.15))
            workers = workers_of(proc.pid)
            if workers and proc.poll() is None:
                try:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    kills += 1
                except OSError:
                    pass
        try:
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            problems.append("the run did not end within 2 minutes")
        if proc.returncode != 0:
            problems.append(f"run exited {proc.returncode}: {stderr.decode()[-300:]}")
        report = folder / "out.json"
        if not report.exists():
            problems.append("no report")
            return _worker_line(number, kills, problems)
        steps = {s["id"]: s for s in json.loads(report.read_text())["steps"]}
        wrong = [sid for sid, value in expected.items() if steps[sid].get("output") != value]
        if wrong:
            problems.append(f"steps without their output: {wrong[:5]}")
        recorded = attempts_of(state / "runs.db")
        ran: dict[str, list[int]] = {}
        if ledger.exists():
            for line in ledger.read_text().splitlines():
                name, attempt = line.split()
                ran.setdefault(name, []).append(int(attempt))
        for sid in expected:
            attempts = ran.get(sid, [])
            mine = recorded.get(sid, {})
            succeeded = [a for a, (st, _) in mine.items() if st == "succeeded"]
            if len(succeeded) != 1:
                problems.append(f"{sid}: {len(succeeded)} successful attempts recorded")
            if len(attempts) != len(set(attempts)):
                problems.append(f"{sid}: an attempt ran twice {sorted(attempts)}")
            if not attempts:
                problems.append(f"{sid}: never ran")
            unrecorded = [a for a in attempts if a not in mine]
            if unrecorded:
                problems.append(f"{sid}: ran attempts the runner never recorded {unrecorded}")
            other = [a for a, (st, kind) in mine.items() if st != "succeeded" and kind != "crash"]
            if other:
                problems.append(f"{sid}: attempts that failed other than by crash {other}")
        return _worker_line(number, kills, problems, ran)


def _worker_line(
    number: int, kills: int, problems: list[str], ran: dict[str, list[int]] | None = None
) -> list[str]:
    again = sum(len(a) - 1 for a in (ran or {}).values())
    print(
        f"round {number:3}: workers killed={kills} steps run again by the crash retry={again} "
        f"{'OK' if not problems else 'PROBLEMS: ' + '; '.join(problems)}",
        flush=True,
    )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--runner", default=str(Path(".venv/bin/runner").resolve()))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--kill",
        choices=["runner", "workers"],
        default="runner",
        help="what is SIGKILLed at random moments (default: the runner)",
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"soak: {args.rounds} rounds, killing the {args.kill}, seed {seed}")
    started = time.monotonic()
    failures = 0
    play = one_round if args.kill == "runner" else one_worker_round
    for number in range(1, args.rounds + 1):
        if play(args.runner, rng, number):
            failures += 1
    took = time.monotonic() - started
    kept = args.rounds - failures
    print(f"soak: {kept} of {args.rounds} rounds kept every promise ({took:.0f}s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
