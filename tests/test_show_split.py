"""`runner show` of a big run reads it in two processes (forkread.py, a speed shortcut): the
bytes are the plain version's, to a pipe and to a file, in and out of CI, whichever half holds
the odd rows or no shown row at all; and the two halves are one moment of the store, or the
result is not used."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import runner_executable, user_env
from test_show_fast import ODD_ROWS, RUN_ID

from pipeline_runner import forkread, showfast
from pipeline_runner.store import Store, open_store

ROWS = 20_000  # about 20 chunks: more than showfast.TWO_READERS
T0 = 1796293383.0


# `runner` whose two-process reads are noted in the file $SPLIT_NOTES: "halves" for each
# that gave both halves (the CLI as installed, with a wrapper around forkread.read_in_two).
NOTING = """
import os, sys
from pipeline_runner import forkread
from pipeline_runner.cli import main
read_in_two = forkread.read_in_two
def noted(*args, **kw):
    got = read_in_two(*args, **kw)
    with open(os.environ["SPLIT_NOTES"], "a") as notes:
        notes.write("halves\\n" if got is not None else "none\\n")
    return got
forkread.read_in_two = noted
sys.exit(main(prog_name="runner"))
"""


def _cli(folder: Path, *args: str, env: dict[str, str] | None = None, **kw: Any) -> Any:
    full = {**user_env(), "PIPELINE_RUNNER_STATE_DIR": str(folder / "state")}
    full.pop("GITHUB_ACTIONS", None)
    full.update(env or {})
    command = [runner_executable()]
    if "SPLIT_NOTES" in full:
        command = [sys.executable, "-c", NOTING]
    return subprocess.run([*command, *args], cwd=folder, env=full, timeout=120, input="", **kw)


def _fast(
    folder: Path, notes: Path, *args: str, ci: dict[str, str], reads: int = 1, **kw: Any
) -> Any:
    """`runner ARGS` with the shortcuts on, which must have read in two processes `reads`
    times."""
    notes.unlink(missing_ok=True)
    env = {**ci, "PIPELINE_RUNNER_NO_SHORTCUTS": "", "SPLIT_NOTES": str(notes)}
    done = _cli(folder, *args, env=env, **kw)
    assert notes.read_text() == "halves\n" * reads
    return done


def _big_run(folder: Path, hidden_first: int = 0) -> str:
    """A real one-step run whose store then holds ROWS steps in plan order: the odd rows of
    test_show_fast at both ends and in the middle, time stamps on 7-digit ties, and the first
    `hidden_first` rows groups that `runner show` does not list."""
    (folder / "p.yaml").write_text("version: 1\nname: big\nsteps:\n  - id: a\n    uses: noop\n")
    done = _cli(folder, "run", "p.yaml", "--progress", "none", capture_output=True, text=True)
    found = RUN_ID.search(done.stdout + done.stderr)
    assert done.returncode == 0 and found, done.stdout + done.stderr
    rid = found.group(1)
    odd = [r for r in ODD_ROWS if r[1] != "group"]
    rows = []
    for i in range(ROWS):
        if i < hidden_first:
            rows.append((f"g{i:05d}", "group", "succeeded", 0, T0, T0 + 1, None, None, None))
        elif i % 6_000 < len(odd):  # odd rows in each half
            o = odd[i % 6_000]
            rows.append((f"{o[0]}.{i}", *o[1:7], o[7], o[10]))
        else:
            tie = (2**14 + (i % 128) * 2**15) / 2**22  # halfway between 7-digit decimals
            start = T0 + i + (tie if i % 3 else 0.1234567)
            sid = f"t.{i:05d}" + ("-ü" if i % 1_000 == 999 else "")  # SQLite's, escaped after
            rows.append((sid, "step", "succeeded", 1, start, start + 0.25, None, "w0", None))
    db = sqlite3.connect(folder / "state" / "runs.db")
    with db:
        db.execute("DELETE FROM steps WHERE run_id = ?", (rid,))
        db.executemany(
            "INSERT INTO steps (run_id, step_id, kind, state, attempts, started, finished, "
            "error, worker, inputs_json, position, log_path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(rid, *r, i, f"/logs/{r[0]}.log") for i, r in enumerate(rows)],
        )
    db.close()
    return rid


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("big-show")
    return folder, _big_run(folder)


@pytest.mark.skipif(not forkread.two_cpus(), reason="one CPU: show reads in one process")
@pytest.mark.parametrize("ci", [{}, {"GITHUB_ACTIONS": "true", "CI": "true"}], ids=["local", "ci"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_two_readers_print_the_plain_bytes(
    big: tuple[Path, str], ci: dict[str, str], as_json: bool, tmp_path: Path
) -> None:
    folder, rid = big
    args = ["show", rid, *(["--json"] if as_json else [])]
    plain = _cli(
        folder, *args, env={**ci, "PIPELINE_RUNNER_NO_SHORTCUTS": "1"}, capture_output=True
    )
    fast = _fast(folder, tmp_path / "notes", *args, ci=ci, capture_output=True)
    assert (fast.returncode, fast.stderr) == (plain.returncode, plain.stderr) == (0, b"")
    assert fast.stdout == plain.stdout  # through a pipe
    assert plain.stdout.count(b"t.1") > 5_000 and b"\\u00fc" * as_json in plain.stdout
    with open(tmp_path / "out", "wb") as out:  # into a file (the kernel copies the child's)
        written = _fast(folder, tmp_path / "notes", *args, ci=ci, stdout=out)
    assert written.returncode == 0
    assert (tmp_path / "out").read_bytes() == plain.stdout


@pytest.mark.skipif(not forkread.two_cpus(), reason="one CPU: show reads in one process")
def test_a_first_half_with_no_shown_row(tmp_path: Path) -> None:
    """The child's text follows the head of the JSON directly when this process's half shows
    no row (the separator before its first chunk is left out)."""
    rid = _big_run(tmp_path, hidden_first=ROWS // 2 + 2_000)
    for args in (["show", rid], ["show", rid, "--json"]):
        plain = _cli(
            tmp_path, *args, env={"PIPELINE_RUNNER_NO_SHORTCUTS": "1"}, capture_output=True
        )
        fast = _fast(tmp_path, tmp_path / "notes", *args, ci={}, capture_output=True)
        assert (fast.returncode, plain.returncode) == (0, 0), fast.stderr + plain.stderr
        assert fast.stdout == plain.stdout and b"g0" not in fast.stdout


@pytest.mark.skipif(not forkread.two_cpus(), reason="one CPU: show reads in one process")
def test_rows_out_of_plan_order_are_read_in_two_as_sorted_lists(tmp_path: Path) -> None:
    """A run whose rows are not in plan order (two steps share a position, one moved to the
    end) is read again by lists of sorted rowids, still by two processes."""
    rid = _big_run(tmp_path)
    db = sqlite3.connect(tmp_path / "state" / "runs.db")
    with db:
        db.execute("UPDATE steps SET position = 7 WHERE step_id IN ('t.00100', 't.19990')")
        db.execute("UPDATE steps SET position = 30000 WHERE step_id = 't.00200'")
    db.close()
    for args in (["show", rid], ["show", rid, "--json"]):
        plain = _cli(
            tmp_path, *args, env={"PIPELINE_RUNNER_NO_SHORTCUTS": "1"}, capture_output=True
        )
        fast = _fast(tmp_path, tmp_path / "notes", *args, ci={}, reads=2, capture_output=True)
        assert (fast.returncode, plain.returncode) == (0, 0), fast.stderr + plain.stderr
        assert fast.stdout == plain.stdout
        out = fast.stdout
        assert out.index(b"t.00100") < out.index(b"t.19990") < out.index(b"t.00150")
        assert out.index(b"t.00200") > out.index(b"t.19999")
    # A second run of the store with a row added after a third run's: its rows are in plan
    # order, but that one is not where a count from its first rowid puts them.
    second = _big_run(tmp_path)
    _big_run(tmp_path)
    db = sqlite3.connect(tmp_path / "state" / "runs.db")
    with db:
        db.execute(
            "INSERT INTO steps (run_id, step_id, kind, state, attempts, position) "
            "VALUES (?, 't.late', 'step', 'succeeded', 1, ?)",
            (second, ROWS),
        )
    db.close()
    args = ("show", second)
    plain = _cli(tmp_path, *args, env={"PIPELINE_RUNNER_NO_SHORTCUTS": "1"}, capture_output=True)
    fast = _fast(tmp_path, tmp_path / "notes", *args, ci={}, reads=2, capture_output=True)
    assert fast.stdout == plain.stdout and fast.stdout.rstrip().endswith(b"1")
    assert b"t.late" in fast.stdout.splitlines()[-1]


def _count(store: Store, item: int) -> int:
    return int(store.tuples("SELECT count(*) FROM steps WHERE position <= ?", (item,))[0][0])


def _facts(got: int) -> int:
    return got


def test_the_halves_are_one_moment_of_the_store(big: tuple[Path, str], tmp_path: Path) -> None:
    """Both halves read the store as it was: the child's facts come back and it writes its
    half when told (or exits when not); a commit by another connection while they read, or a
    child that fails to read, gives no result; a child that fails to write is an error."""
    folder, _ = big
    out = tmp_path / "out"

    def write(got: list[int], lead: str) -> None:  # the child's part, in the items' order
        if lead == "raise":
            raise RuntimeError("the child fails to write")
        if lead == "gone":
            raise BrokenPipeError
        with open(out, "a") as file:
            file.write(lead + ",".join(map(str, got)))

    store = open_store(folder / "state", create=False)
    try:
        items = list(range(0, ROWS, 1_000))
        counting = forkread.Reader(_count, _facts, write)
        halves = forkread.read_in_two(store, items, counting, store.data_version())
        assert halves is not None and not out.exists()
        assert halves.mine + halves.facts == [i + 1 for i in items]  # each read once, in order
        mine = len(halves.mine)
        halves.child.write("after: ")
        assert out.read_text() == "after: " + ",".join(str(i + 1) for i in items[mine:])
        out.unlink()
        halves = forkread.read_in_two(store, items, counting, store.data_version())
        assert halves is not None and halves.child.discard() == 0 and not out.exists()
        for lead, error in (("raise", forkread.ChildFailed), ("gone", BrokenPipeError)):
            version = store.data_version()
            halves = forkread.read_in_two(store, items, counting, version)
            assert halves is not None
            with pytest.raises(error):
                halves.child.write(lead)

        def commits_meanwhile(store: Store, item: int) -> int:
            if os.getpid() == parent:  # another connection writes while this one reads
                other = sqlite3.connect(store.path)
                with other:  # a change (an UPDATE that changes nothing writes nothing)
                    other.execute("CREATE TABLE IF NOT EXISTS probe (x)")
                    other.execute("INSERT INTO probe VALUES (1)")
                other.close()
            return _count(store, item)

        def fails_in_the_child(store: Store, item: int) -> int:
            if os.getpid() != parent:
                raise RuntimeError("the child fails")
            return _count(store, item)

        parent = os.getpid()
        for read in (commits_meanwhile, fails_in_the_child):
            version = store.data_version()
            reader = forkread.Reader(read, _facts, write)
            assert forkread.read_in_two(store, items, reader, version) is None
        assert not out.exists()
        with pytest.raises(ChildProcessError):  # every child was reaped
            os.waitpid(-1, os.WNOHANG)
    finally:
        store.close()


def test_a_small_run_is_read_in_one_process(big: tuple[Path, str]) -> None:
    """Under TWO_READERS chunks, show does not fork; its chunks come from this process."""
    folder, rid = big
    store = open_store(folder / "state", create=False)
    try:
        render = showfast._Render(showfast._TEXT_OK, showfast._LINE, "\n", str)
        params = {**showfast._params(rid, []), "sep": "\n", "missing": "\0"}
        shown = showfast._read_in_two(store, render, params)
        assert shown is not None and shown.child is not None and shown.child.discard() == 0
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(showfast, "TWO_READERS", len(showfast._ranges(store, rid)[1]) + 1)
            assert showfast._read_in_two(store, render, params) is None
    finally:
        store.close()


def test_the_two_readers_take_each_item_once() -> None:
    """From the front and from the back until they meet: every index once, then None."""
    counters = forkread._Counters(5)
    try:
        taken = [counters.take(front=f) for f in (True, False, False, True, True, True, False)]
    finally:
        counters.close()
    assert taken == [0, 4, 3, 1, 2, None, None]


def test_a_reader_that_dies_holding_the_lock_does_not_stop_the_other() -> None:
    """The counters' lock is the kernel's: released when its holder dies."""
    import fcntl

    counters = forkread._Counters(3)
    try:
        pid = os.fork()
        if pid == 0:  # takes the lock and dies with it
            fcntl.lockf(counters.lock, fcntl.LOCK_EX)
            os._exit(0)
        os.waitpid(pid, 0)
        assert [counters.take(front=True) for _ in range(4)] == [0, 1, 2, None]
    finally:
        counters.close()
