"""`runner show` / `runner show --json` print the same bytes with the speed shortcut
(showfast.py: SQLite builds the rows) as without it (PIPELINE_RUNNER_NO_SHORTCUTS=1: the plain
version in showview.py), for a run with every kind of row, in and out of CI.

The run is real (failed, retried, skipped, cached and re-run steps, a fan-out with a success
policy, an answered approval gate, named outputs, a masked secret); then rows no pipeline
writes easily are added to its store file (ids and errors with quotes, non-ASCII and control
characters, floats at the edges of their printing, durations on a rounding tie, values of
unexpected types, positions shared by two steps, a JSON output and inputs to decode)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

WritePipeline = Callable[..., Path]
RUN_ID = re.compile(r"\brun (\d{8}T\d{6}-[0-9a-f]{6})\b")
SECRET = "s3cret-value"

PIPELINE = """
version: 1
name: every-row
secrets: [API_TOKEN]
steps:
  - id: build
    uses: shell
    cache: true
    with: {cmd: "echo token=$API_TOKEN; echo 'ver=1.2' >> $RUNNER_OUTPUT"}
  - id: flaky
    uses: shell
    retries: 1
    with: {cmd: "test -e flaky.ok || { touch flaky.ok; exit 1; }"}
  - id: deploy
    for_each: [eu, us]
    uses: shell
    with: {cmd: "test {{ item }} = eu"}
    success: {min: 1}
  - id: broken
    uses: shell
    with: {cmd: "echo \\"bad $API_TOKEN é\\" >&2; exit 3"}
  - id: after
    needs: [broken]
    uses: noop
  - id: skipped
    if: "{{ false }}"
    uses: noop
  - id: gate
    uses: approval
    with: {prompt: "Ship?", choices: ["yes", "no"]}
"""

# (step_id, kind, state, attempts, started, finished, error, worker, position, output_json,
#  inputs_json): rows added to the run's store
ODD_ROWS = [
    ("ünïcode.ß", "step", "succeeded", 1, 1.5, 2.25, None, "w0", 100, None, None),
    ('quote"d\\id', "step", "succeeded", 1, 1.0, 1.125, None, 'w"1', 101, "null", None),
    (
        "esc\x1b[31mred\x7f\u2028",
        "step",
        "failed",
        2,
        0.5,
        0.625,
        "line1\nline2\ttab é 😀",
        "w0",
        102,
        None,
        '{"x": 1}',
    ),
    (
        "::warning::ci",
        "step",
        "failed",
        1,
        1e-05,
        1e16,
        "##[group]x ::error::y",
        None,
        103,
        None,
        None,
    ),
    (
        "ci##[x]",
        "step",
        "succeeded",
        1,
        0.0,
        5.0,
        None,
        None,
        104,
        '[1.0, 1e-05, 12345678901234567890, "é"]',
        None,
    ),
    ("nostart", "step", "skipped", 0, None, None, None, None, 105, None, None),
    ("same.pos.b", "step", "succeeded", 1, 3.0, 2.0, None, "w0", 106, None, None),
    (
        "same.pos.a",
        "step",
        "succeeded",
        1,
        1796293383.9372733,
        1796293384.0,
        None,
        "w0",
        106,
        None,
        None,
    ),
    ("halfway", "step", "succeeded", 1.5, 10.0, 10.005, None, "w0", 107, None, None),
    ("hidden.group", "group", "failed", 0, 1.0, 2.0, "not a verdict", None, 108, None, None),
    (
        "verdict.group",
        "group",
        "failed",
        0,
        1.0,
        2.0,
        "success policy: 0 of 2",
        None,
        109,
        None,
        None,
    ),
    ("typed", "step", "succeeded", 1, "1.0", 2.0, "", "w0", 110, None, None),
    ("tab\tid", "step", "succeeded", 1, 1.0, 2.0, None, "w0", 111, None, None),
    ("bell\x07id", "step", "succeeded", 1, 1.0, 2.0, None, "w\x7f😀", 113, None, None),
    ("%s %d %%", "step", "succeeded", 1, 1.0, 2.0, None, "%s", 112, None, None),
]


@pytest.fixture(scope="module")
def every_row(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A state folder holding the runs, and their ids (the second has the cached step)."""
    tmp_path = tmp_path_factory.mktemp("every-row")
    run = _cli(tmp_path)
    (tmp_path / "p.yaml").write_text(PIPELINE.lstrip())
    first = run("run", "p.yaml", "--progress", "none")
    assert first.returncode == 75, first.stdout + first.stderr  # waiting at the gate
    run_id = RUN_ID.search(first.stdout + first.stderr)
    assert run_id, first.stdout + first.stderr
    rid = run_id.group(1)
    assert run("approve", rid, "gate", "--value", "yes").returncode == 0
    assert run("resume", rid, "--progress", "none").returncode == 1
    assert run("resume", rid, "--rerun", "build", "--progress", "none").returncode == 1
    second = run("run", "p.yaml", "--progress", "none")
    assert second.returncode == 75  # build cached
    cached = RUN_ID.search(second.stdout + second.stderr)
    assert cached, second.stdout + second.stderr
    db = sqlite3.connect(tmp_path / "state" / "runs.db")
    with db:
        db.executemany(
            "INSERT INTO steps (run_id, step_id, kind, state, attempts, started, finished, "
            "error, worker, position, output_json, inputs_json, log_path) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(rid, *r, f"/logs/{r[0]}.log") for r in ODD_ROWS],
        )
    db.close()
    return tmp_path, [rid, cached.group(1)]


def _cli(tmp_path: Path) -> Callable[..., Any]:
    import subprocess

    from conftest import runner_executable, user_env

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full = user_env()
        full.pop("GITHUB_ACTIONS", None)
        full.update(
            {"PIPELINE_RUNNER_STATE_DIR": str(tmp_path / "state"), "API_TOKEN": SECRET},
        )
        full.update(env or {})
        return subprocess.run(
            [runner_executable(), *args],
            cwd=tmp_path,
            env=full,
            capture_output=True,
            text=True,
            timeout=120,
            input="",
        )

    return run


@pytest.mark.parametrize("ci", [{}, {"GITHUB_ACTIONS": "true", "CI": "true"}], ids=["local", "ci"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_the_shortcut_prints_the_plain_bytes(
    every_row: tuple[Path, list[str]], ci: dict[str, str], as_json: bool
) -> None:
    folder, (rid, cached) = every_row
    run = _cli(folder)
    for shown in (cached, rid):
        args = ["show", shown, *(["--json"] if as_json else [])]
        # Both ways whatever the suite's own setting (`make test-plain` sets the switch).
        fast = run(*args, env={**ci, "PIPELINE_RUNNER_NO_SHORTCUTS": ""})
        plain = run(*args, env={**ci, "PIPELINE_RUNNER_NO_SHORTCUTS": "1"})
        assert (fast.returncode, fast.stderr) == (plain.returncode, plain.stderr) == (0, "")
        assert fast.stdout == plain.stdout
        assert SECRET not in fast.stdout
    assert '"cached"' in run("show", cached, "--json").stdout
    if as_json:
        steps = {s["step_id"]: s for s in json.loads(fast.stdout)["steps"]}
        assert steps["build"]["rerun"] and steps["gate"]["approval"]["value"] == "yes"
        assert "hidden.group" not in steps and "verdict.group" in steps
        assert steps["deploy"]["state"] == "partial"
    else:
        assert "\\x1b" in fast.stdout and "re-run: --rerun build" in fast.stdout


def test_a_big_run_read_in_chunks_prints_the_plain_bytes(tmp_path: Path) -> None:
    """A run of several chunks (showfast's CHUNK rows each) is read in rowid ranges while its
    rows are in plan order, and in lists of sorted rowids once two steps share a position."""
    run = _cli(tmp_path)
    tenants = "\n".join(f"    - t{t:03d}" for t in range(42))
    chain = "\n".join(
        f"      - id: s{s}\n        uses: noop" + (f"\n        needs: s{s - 1}" if s else "")
        for s in range(100)
    )
    (tmp_path / "big.yaml").write_text(
        f"version: 1\nname: big\nparams:\n  tenants:\n{tenants}\ntemplates:\n  etl:\n"
        f"    params:\n      tenant: {{}}\n    steps:\n{chain}\nsteps:\n  - id: etl\n"
        '    template: etl\n    for_each: "{{ params.tenants }}"\n'
        '    with: {tenant: "{{ item }}"}\n'
    )
    done = run("run", "big.yaml", "--progress", "none", "--workers", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    found = RUN_ID.search(done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    rid = found.group(1)
    db = sqlite3.connect(tmp_path / "state" / "runs.db")
    with db:  # one step fails with an error, one ran at a time stamp showfast leaves to Python
        db.execute(
            "UPDATE steps SET state = 'failed', error = 'boom é' WHERE step_id = 'etl.t020.s5'"
        )
        db.execute("UPDATE steps SET started = 1e9 WHERE step_id = 'etl.t030.s7'")
    _same_both_ways(run, rid)
    with db:  # the first and the last step share a position
        db.execute("UPDATE steps SET position = 7 WHERE step_id IN ('etl.t000.s0', 'etl.t041.s99')")
    db.close()
    _same_both_ways(run, rid)


def _same_both_ways(run: Callable[..., Any], rid: str) -> None:
    for args in (["show", rid], ["show", rid, "--json"]):
        fast = run(*args, env={"PIPELINE_RUNNER_NO_SHORTCUTS": ""})
        plain = run(*args, env={"PIPELINE_RUNNER_NO_SHORTCUTS": "1"})
        assert (fast.returncode, plain.returncode) == (0, 0), fast.stderr + plain.stderr
        assert fast.stdout == plain.stdout
        assert fast.stdout.count("etl.t") >= 4200


# Time stamps at the edges of sqlfloat's printing (2**30 <= t < 2**32, the fewest digits that
# read back, a value halfway between two 7-digit decimals), durations on a rounding tie, below
# zero, and too long for SQLite's line; strings to escape in every JSON field.
EDGE_TIMES = [
    (1796293383.0, 1796293383.5),
    (1796293383.00390625, 1796293383.125),  # 1/256: halfway at 7 digits; a 0.12 tie
    (1073741824.0, 1073741824.1),
    (2147483647.9999998, 2147483648.0000005),
    (2524608000.123, 4294967295.9999995),
    (999999999.5, 1796293384.25),
    (1796293383.9372733, 1796293383.9),
    (1796293383.005, 1796293383.01),
    (1796293383.0, 1796293383.0),
    (None, 1796293383.0),
    (1796293383.0, 1796303383.0),
    (1796293383.0, 1796294383.005),
]


def test_rows_in_plan_order_print_the_plain_bytes(tmp_path: Path) -> None:
    """A run whose rows are in plan order (read in rowid ranges) holding every kind of odd
    row: each is printed as the plain version prints it, text and JSON, in and out of CI."""
    run = _cli(tmp_path)
    (tmp_path / "p.yaml").write_text("version: 1\nname: odd\nsteps:\n  - id: a\n    uses: noop\n")
    done = run("run", "p.yaml", "--progress", "none")
    found = RUN_ID.search(done.stdout + done.stderr)
    assert done.returncode == 0 and found, done.stdout + done.stderr
    rid = found.group(1)
    rows = [(*r[:8], None, *r[9:]) for r in ODD_ROWS if r[1] != "group"]
    rows += [
        (f"t{i}", "step", "succeeded", 1, s, f, None, "w0", None, None, None)
        for i, (s, f) in enumerate(EDGE_TIMES)
    ]
    rows += [
        ("nested", "step", "succeeded", 1, 1796293383.0, 1796293384.0, None, "wé", None,
         '{"a": {"b": [1, 2.5, null, "ü"]}, "c": 1e-07}', '{"k": ["x", {"y": null}]}'),
        ('log"é', "step", "succeeded", 1, 1796293383.0, 1796293384.0, None, None, None, None,
         None),
    ]  # fmt: skip
    db = sqlite3.connect(tmp_path / "state" / "runs.db")
    with db:
        db.execute("DELETE FROM steps WHERE run_id = ?", (rid,))
        db.executemany(
            "INSERT INTO steps (run_id, step_id, kind, state, attempts, started, finished, "
            "error, worker, error_kind, output_json, inputs_json, log_path, position) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(rid, *r, f"/logs/{r[0]}\\é.log", 10 + i) for i, r in enumerate(rows)],
        )
    db.close()
    for ci in ({}, {"GITHUB_ACTIONS": "true", "CI": "true"}):
        for args in (["show", rid], ["show", rid, "--json"]):
            fast = run(*args, env={**ci, "PIPELINE_RUNNER_NO_SHORTCUTS": ""})
            plain = run(*args, env={**ci, "PIPELINE_RUNNER_NO_SHORTCUTS": "1"})
            assert (fast.returncode, fast.stderr) == (plain.returncode, plain.stderr) == (0, "")
            assert fast.stdout == plain.stdout
    steps = {s["step_id"]: s for s in json.loads(fast.stdout)["steps"]}
    assert steps["t3"]["finished"] == 2147483648.0000005 and steps["t0"]["started"] == 1796293383.0
    assert steps["nested"]["inputs"] == {"k": ["x", {"y": None}]}


@pytest.mark.parametrize("seed", [1, 2])
def test_sqlite_prints_floats_as_python(seed: int) -> None:
    """sqlfloat's expressions against Python's own printing, on random time stamps and
    durations and on the values near their edges (NULL: left to Python)."""
    import math
    import random

    from pipeline_runner.sqlfloat import fixed2_exact, float_repr

    rng = random.Random(seed)
    stamps = [rng.uniform(2**30, 2**32) for _ in range(100_000)]
    for _ in range(20_000):
        base = rng.randint(2**30, 2**32 - 2)
        stamps.append(base + rng.choice([0.0, 0.5, 0.25, 0.125, 0.1, 1e-6, 1e-7, 0.9999999]))
        stamps.append(round(rng.uniform(2**30, 2**32), rng.randint(0, 7)))
        near = rng.uniform(2**30, 2**32)
        stamps += [math.nextafter(near, 0), math.nextafter(near, math.inf)]
    stamps += [2.0**30, 2.0**31, math.nextafter(2.0**31, 0), math.nextafter(2.0**32, 0)]
    # Every fraction F / 2**22 halfway between two 7-digit decimals (F = 2**14 mod 2**15), and
    # a run of consecutive fractions, in both binades (sqlfloat checked all 2**22 of them once)
    for whole in (rng.randint(2**30, 2**31 - 1), rng.randint(2**31, 2**32 - 1)):
        stamps += [whole + (2**14 + j * 2**15) / 2**22 for j in range(128)]
        start = rng.randrange(2**22 - 40_000)
        stamps += [whole + f / 2**22 for f in range(start, start + 40_000)]
    spans = [rng.uniform(0, 20) for _ in range(50_000)] + [
        rng.uniform(0, 1e5) for _ in range(10_000)
    ]
    spans += [k / 8 for k in range(2000)] + [k / 1000 for k in range(20_000)] + [0.0, 1e-9]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (v REAL)")
    db.executemany("INSERT INTO t VALUES (?)", [(v,) for v in stamps + spans])
    fixed = f"CASE WHEN {fixed2_exact('v')} THEN printf('%.2f', v) END"
    printed = db.execute(f"SELECT v, {float_repr('v')}, {fixed} FROM t").fetchall()
    db.close()
    left = 0
    for value, as_repr, as_fixed in printed:
        assert as_repr is None or as_repr == repr(value), value
        assert as_fixed is None or as_fixed == f"{value:.2f}", value
        left += as_repr is None and 2**30 <= value < 2**32
    assert left == 0  # every time stamp in range is printed by SQLite


def test_a_verdict_is_known_by_the_states_of_the_plan() -> None:
    """verdicts.py spells the plan's state without importing it: the same string."""
    from pipeline_runner import success_policy, verdicts
    from pipeline_runner.model import State

    assert State.PARTIAL.value == verdicts.PARTIAL and success_policy.PREFIX == verdicts.PREFIX
    assert verdicts.is_verdict("partial", None) and not verdicts.is_verdict("failed", "boom")
