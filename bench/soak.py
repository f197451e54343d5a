"""Soak test: kill the runner with SIGKILL at random moments, resume, and check the promises.

Each round runs a 30-step pipeline (a few parallel chains; every step appends its id and the
attempt's pid to a journal, sleeps a little and returns a value), kills the runner with SIGKILL
at a random moment, checks that the store passes `PRAGMA quick_check` and that no process of the
run is left after a short grace, then `runner resume`s until the run ends.  At the end it checks
that the run succeeded with every output present and that no step that had been recorded as
succeeded ran again.

    python3 bench/soak.py [--rounds 50] [--runner .venv/bin/runner] [--seed N]

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
    finally:
        con.close()
    return {r[0] for r in rows}


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
            problems.append("the store was never created")
            return problems
        check = quick_check(db)
        if check != "ok":
            problems.append(f"quick_check after the kill: {check}")
        done_before = succeeded_steps(db)
        counts_before = journal_counts(journal)
        run_ids = sorted(p.name for p in (state / "runs").iterdir())
        if not run_ids:
            problems.append("no run was recorded")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--runner", default=str(Path(".venv/bin/runner").resolve()))
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"soak: {args.rounds} rounds, seed {seed}")
    started = time.monotonic()
    failures = 0
    for number in range(1, args.rounds + 1):
        if one_round(args.runner, rng, number):
            failures += 1
    took = time.monotonic() - started
    kept = args.rounds - failures
    print(f"soak: {kept} of {args.rounds} rounds kept every promise ({took:.0f}s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
