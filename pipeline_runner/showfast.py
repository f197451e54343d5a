"""The speed shortcut of `runner show` (shortcuts.py): the same bytes as showview.py's plain
version, with SQLite writing the steps' text.

A 100,000-step run prints 6 MB of lines or 55 MB of JSON.  The plain version makes a dict per
row and encodes it in Python.  Here each query renders CHUNK rows: SQLite builds each row's
text (its floats too: sqlfloat.py) and joins them with `group_concat`, so Python receives one
string per chunk, not an object per value.  A run of TWO_READERS chunks or more is read by two
processes on a machine with two CPUs (forkread.py): each writes the chunks it read, this one
first.  The most common row, a step that succeeded at its first attempt, has its state and
attempts written into the format (SQLite's cost is per value).

SQLite renders a row only when its text is exactly what the plain version prints (the `ok`
conditions below: no error, no approval gate, no re-run note, values of the expected types,
floats that sqlfloat.py prints; for a line, text that printable() leaves as it is, checked on
the chunk); any other row makes its chunk read again row by row, and that row is rendered by
showview's own functions, so the shortcut only decides *who* renders a row, never *what* it
looks like.

Rows come in the plain order (position, step id).  A run's rows are written as it is planned,
in that order, so the chunks are first read as rowid ranges (no sort); each also returns the
least and the greatest `position - rowid` of its rows, and when that is one number for the
whole run the rowid order is the plain order.  Otherwise (rows added later) SQLite sorts the
rowids and the chunks are read again as lists of them.  Nothing is written before the order
is known, and all chunks show the store as one moment left it (one read transaction; with two
processes, forkread.py checks that no commit came between theirs).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import click

from .escape import ci_report, in_ci
from .forkread import Child, Reader, read_in_two, two_cpus
from .jsonout import ENCODER
from .showview import header, json_run, json_step, step_line
from .sqlfloat import fixed2_exact, float_repr
from .store import Store
from .verdicts import PARTIAL, PREFIX

# The steps table as the JSON template knows it; another column (a later migration) makes
# the JSON the plain version's until the template learns it.
STEP_COLUMNS = (
    "run_id", "step_id", "kind", "state", "attempts", "started", "finished", "error_kind",
    "error", "exit_code", "worker", "output_json", "log_path", "position", "outputs_json",
    "cache_key", "inputs_json",
)  # fmt: skip
CHUNK = 1024  # rows a query renders
TWO_READERS = 16  # chunks from which two processes read them (forkread.py), given two CPUs
_Chunk = tuple[tuple[Any, ...], str]  # a chunk's facts (rows, the order's check) and text

# Rows `runner show` lists: steps, and the groups whose record is a policy's verdict
# (verdicts.is_verdict).
_SHOWN = (
    f"(kind != 'group' OR state = '{PARTIAL}' OR "
    "(state = 'failed' AND substr(error, 1, :plen) = :prefix))"
)
# Where a chunk's rows come from, and their order: a rowid range, or a list of rowids.
_RANGE = ("steps WHERE rowid BETWEEN :first AND :last AND +run_id = :rid", "steps.rowid")
_LISTED = (
    "json_each(:ids) AS listed CROSS JOIN steps ON steps.rowid = listed.value WHERE +run_id = :rid",
    "listed.key",
)
# What SQLite's json_quote leaves as it is and json.dumps escapes (ensure_ascii); compiled
# when first met (compiling the class takes longer than a small run's show).
_NOT_ASCII = "[\x7f-\U0010ffff]"
# An INTEGER (a column of INTEGER affinity holds an integral REAL as an INTEGER, and a value of
# another type is not equal to its CAST); printf("%d") and `||` print it as Python does.
_INT = "{0} = CAST({0} AS INTEGER)"
# Floats or NULL in the REAL columns (their only other values are text that is not a number,
# which `+ 0` changes); float_repr checks its own.
_REALS = "started + 0 IS started AND finished + 0 IS finished"
# printf("%s") stops at a NUL.
_TEXT_OK = (
    f"error IS NULL AND {_INT.format('attempts')} AND {_REALS} "
    "AND instr(step_id, :missing) = 0 AND instr(state, :missing) = 0"
)
# Named outputs and inputs are JSON objects or NULL, never 'null' (that row is Python's).
_JSON_OK = (
    "coalesce(error, error_kind, exit_code, cache_key, outputs_json, inputs_json) IS NULL "
    f"AND coalesce(output_json, 'null') = 'null' AND {_INT.format('attempts')} "
    f"AND {_INT.format('position')}"
)
_NOTED = " AND step_id NOT IN (SELECT value FROM json_each(:noted))"
_CI = " AND instr(step_id, '::') = 0 AND instr(step_id, '##') = 0"

# A line as step_line prints it (NULL where sqlfloat leaves the duration to Python).
# The most common row, a step that succeeded at its first attempt, has its state and attempts
# written into the format (as `%-16s %2d` writes them): a row costs SQLite per value.
_USUAL = ("succeeded", 1)
_USUAL_IF = f"state = '{_USUAL[0]}' AND attempts = {_USUAL[1]}"
_USUAL_LINE = f"  %-32s {_USUAL[0]:<16} {_USUAL[1]:>2} %7.2fs"
_LINE = (
    "CASE WHEN coalesce(started, 0) = 0 OR coalesce(finished, 0) = 0 "
    "THEN printf('  %-32s %-16s %2d         ', step_id, state, attempts) "
    f"WHEN {fixed2_exact('finished - started')} THEN CASE WHEN {_USUAL_IF} "
    f"THEN printf('{_USUAL_LINE}', step_id, finished - started) "
    "ELSE printf('  %-32s %-16s %2d %7.2fs', step_id, state, attempts, finished - started) END END"
)
# printable() leaves a line as it is when it is printable ASCII or tabs: one line each.
_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\n"
_I = "\n      "
# A row as json_step encodes it, at its depth (inside `"steps": [`); :p0 holds the run id.
# (:usual: :p1 to :p4 with the usual kind, state and attempts between them)
_JSON_ROW = (
    f":p0 || json_quote(step_id) || CASE WHEN kind = 'step' AND {_USUAL_IF} THEN :usual "
    "ELSE :p1 || json_quote(kind) || :p2 || json_quote(state) || :p3 || attempts || :p4 END "
    f"|| {float_repr('started')} || :p5 || {float_repr('finished')} || :p6 "
    "|| json_quote(worker) || :p7 || json_quote(log_path) || :p8 || position || :p9"
)
_JSON_PIECES = (
    f'    {{{_I}"run_id": %s,{_I}"step_id": ',
    f',{_I}"kind": ',
    f',{_I}"state": ',
    f',{_I}"attempts": ',
    f',{_I}"started": ',
    f',{_I}"finished": ',
    f',{_I}"error_kind": null,{_I}"error": null,{_I}"exit_code": null,{_I}"worker": ',
    f',{_I}"log_path": ',
    f',{_I}"position": ',
    f',{_I}"cache_key": null,{_I}"output": null,{_I}"rerun": null,{_I}"outputs": null,'
    f'{_I}"inputs": null\n    }}',
)
# A chunk: its shown rows' text (:missing, a NUL, for a row left to Python), how many rows are
# shown, the least and greatest `position - rowid` and the type of the positions' sum (integer:
# every one is), and how many rows of the run it holds. The rows are joined in the order the
# query visits them: a rowid range in rowid order, a list of rowids (CROSS JOIN: the list is the
# outer loop) in the list's order; group_concat leaves out the rows not shown (NULL).
_CHUNK = (
    "SELECT group_concat(CASE WHEN {shown} THEN coalesce(CASE WHEN {ok} THEN {text} END, "
    ":missing) END, :sep), count(CASE WHEN {shown} THEN 1 END), "
    "min(position - steps.rowid), max(position - steps.rowid), typeof(sum(position)), count(*) "
    "FROM {source}"
)


@dataclass(frozen=True)
class _Render:
    """How the rows of one kind of output are rendered: by SQLite (`text` where `ok`, when
    `exact` holds for the text of that many rows: no NUL, the mark of a row left to Python),
    or by `plain` (a step row as a dict), joined with `sep`; `write` prints a child's chunks
    (forkread.py)."""

    ok: str
    text: str
    sep: str
    plain: Callable[[dict[str, Any]], str]
    exact: Callable[[str, int], bool] = lambda text, count: "\0" not in text
    write: Callable[[list[_Chunk], str], None] = lambda done, lead: None  # a child's chunks


@dataclass
class _Shown:
    """The text of a run's shown rows: the chunks read here (each with a shown row), then
    those a child read (forkread.py), which it writes when told, if it has any."""

    texts: list[str]
    child: Child | None = None
    child_rows: bool = False


def show_fast(store: Store, row: dict[str, Any], as_json: bool) -> bool:
    """Print the run as showview.show_plain would; False (nothing printed) when this version
    does not know the store's steps table."""
    if as_json:
        columns = tuple(r["name"] for r in store.query("PRAGMA table_info(steps)"))
        if columns != STEP_COLUMNS:
            return False
        _json(store, row)
    else:
        _text(store, row)
    return True


def _params(run_id: str, noted: list[str]) -> dict[str, Any]:
    return {"rid": run_id, "plen": len(PREFIX), "prefix": PREFIX, "noted": json.dumps(noted)}


def _text(store: Store, row: dict[str, Any]) -> None:
    run_id = row["id"]
    reruns = store.reruns(run_id)
    ci = in_ci()  # once: a run's steps may be 100,000 lines
    ok = _TEXT_OK + (_NOTED if reruns else "") + (_CI if ci else "")
    plain = partial(step_line, reruns=reruns, ci=ci)
    render = _Render(ok, _LINE, "\n", plain, _printable, write=_write_lines)
    shown = _chunks(store, render, _params(run_id, list(reruns)))
    text = "\n".join([header(row), *shown.texts])  # as the plain version prints it, at once
    if shown.child is None:
        click.echo(text)
        return
    click.echo(text, nl=False)
    shown.child.write("\n")  # _write_lines: its lines, each after a line break
    click.echo("")


def _printable(text: str, count: int) -> bool:
    """Whether `count` lines joined are printable() as they are (and none is left to
    Python: a NUL is not printable)."""
    if not text.isascii() or text.count("\n") != count - 1:
        return False
    return not text.encode("ascii").translate(None, _PRINTABLE)


def _json(store: Store, row: dict[str, Any]) -> None:
    run_id = row["id"]
    reruns = store.reruns(run_id)
    gates: dict[str, dict[str, Any]] = {}
    if store.query("SELECT 1 FROM approvals WHERE run_id = ? LIMIT 1", (run_id,)):
        from .gatebook import gate_rows  # its imports are a tenth of a small show's time

        gates = gate_rows(store, run_id)
    noted = [*reruns, *gates]
    pieces = dict(enumerate(_JSON_PIECES))
    pieces[0] %= json.dumps(run_id)
    params = {**_params(run_id, noted), **{f"p{i}": p for i, p in pieces.items()}}
    values = (json.dumps("step"), *map(json.dumps, _USUAL))
    params["usual"] = "".join(pieces[i + 1] + v for i, v in enumerate(values)) + pieces[4]

    def plain(step: dict[str, Any]) -> str:
        text = ENCODER.encode(json_step(step, gates.get(step["step_id"]), reruns))
        return "    " + text.replace("\n", "\n    ")  # line breaks in JSON text are its own

    ok = _JSON_OK + (_NOTED if noted else "")
    render = _Render(ok, _JSON_ROW, ",\n", plain, write=_write_json)
    head = ENCODER.encode({"run": json_run(row), "steps": []})
    out = sys.stdout
    before = head[: -len("[]\n}")] + "[\n"  # what the next chunk follows
    shown = _chunks(store, render, params)
    before = _write_rows(shown.texts, before)
    if shown.child is not None:
        lead = ",\n"  # what the child's first chunk follows: a chunk, or the head
        if shown.child_rows and before != ",\n":
            out.write(ci_report(before))
            lead, before = "", ",\n"
        out.flush()
        if shown.child_rows:
            shown.child.write(lead)  # _write_json
        else:
            shown.child.discard()
    out.write(ci_report("\n  ]\n}\n" if before == ",\n" else head + "\n"))
    out.flush()


def _json_final(text: str) -> str:
    """A chunk of JSON rows as printed: ASCII, as json.dumps writes it, and safe in CI."""
    if not text.isascii() or "\x7f" in text:  # only inside strings: JSON's own text is ASCII
        text = re.sub(_NOT_ASCII, _escaped, text)
    return ci_report(text)


def _write_lines(done: list[_Chunk], lead: str) -> None:
    """A child's chunks of lines, each after `lead` (a line break), as _text writes its own."""
    click.echo("".join(lead + text for facts, text in done if facts[0]), nl=False)


def _write_json(done: list[_Chunk], lead: str) -> None:
    """A child's chunks of JSON rows, the first after `lead`, as _json writes its own."""
    _write_rows([text for facts, text in done if facts[0]], lead)
    sys.stdout.flush()


def _write_rows(texts: list[str], before: str) -> str:
    """Chunks of JSON rows, the first after `before`, each after the one before; what the
    next one follows."""
    out = sys.stdout
    for text in texts:
        out.write(ci_report(before))  # apart: `before + text` would copy the chunk
        out.write(_json_final(text))
        before = ",\n"
    return before


def _forkable(out: Any) -> bool:
    """Whether a forked child can write to `out` as this process does: a file descriptor."""
    try:
        return bool(out.fileno() >= 0)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation too
        return False


def _escaped(found: re.Match[str]) -> str:
    """A character as json.dumps spells it in a string (ensure_ascii): `\\u00e9`."""
    return json.encoder.encode_basestring_ascii(found.group())[1:-1]


def _chunks(store: Store, render: _Render, params: Mapping[str, Any]) -> _Shown:
    """The text of the run's shown rows in chunks, in the plain order (chunks without a
    shown row left out), all read as the store was at one moment."""
    params = {**params, "sep": render.sep, "missing": "\0"}
    if two_cpus() and threading.active_count() == 1 and _forkable(sys.stdout):
        shown = _read_in_two(store, render, params)
        if shown is not None:
            return shown
    with store.snapshot():
        total, chunks = _ranges(store, params["rid"])
        done = _read(store, render, _RANGE, params, chunks)
        if done is None or not _in_plan_order(done, total):
            done = _read(store, render, _LISTED, params, _listed(store, params["rid"]))
    assert done is not None  # a list of rowids is in the plain order
    return _Shown([text for facts, text in done if facts[0]])


def _listed(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The run's rowids in the plain order, in chunks of CHUNK (SQLite sorts them)."""
    sort = "SELECT rowid FROM steps WHERE run_id = ? ORDER BY position, step_id"
    ids = [r[0] for r in store.tuples(sort, (run_id,))]
    return [{"ids": json.dumps(ids[a : a + CHUNK])} for a in range(0, len(ids), CHUNK)]


def _read_in_two(store: Store, render: _Render, params: dict[str, Any]) -> _Shown | None:
    """The chunks of a big run read by two processes (forkread.py): by rowid ranges, or
    when its rows are not in plan order (or not all in the guessed ranges) by lists of
    sorted rowids; None for a small run or one changed meanwhile."""
    version = store.data_version()
    total, chunks = _ranges(store, params["rid"])
    if len(chunks) < TWO_READERS:
        return None
    for source in (_RANGE, _LISTED):
        if source is _LISTED:
            chunks = _listed(store, params["rid"])  # before `version` is checked again
        read = partial(_read_chunk, render, _query(render, source), params, source=source)
        halves = read_in_two(store, chunks, Reader(read, _facts, render.write), version)
        if halves is None:
            return None
        done = [*halves.mine, *((facts, "") for facts in halves.facts)]
        if source is _LISTED or _in_plan_order(done, total):
            child_rows = any(facts[0] for facts in halves.facts)
            mine = [text for facts, text in halves.mine if facts[0]]
            return _Shown(mine, halves.child, child_rows)
        halves.child.discard()
    return None


def _facts(chunk: _Chunk) -> tuple[Any, ...]:
    """What a child tells of a chunk it read: its facts."""
    return chunk[0]


def _ranges(store: Store, run_id: str) -> tuple[int, list[dict[str, Any]]]:
    """How many rows the run has, and the rowids they take, in chunks of CHUNK, if its rows
    are in plan order (`rowid - position` the same for all, positions from 0): found by
    counting the run's keys and looking at one row, faster than the least and greatest rowid
    (which read every key's rowid).  _in_plan_order checks that the chunks held every row."""
    total = store.tuples("SELECT count(*) FROM steps WHERE run_id = ?", (run_id,))[0][0]
    one = store.tuples("SELECT rowid - position FROM steps WHERE run_id = ? LIMIT 1", (run_id,))
    if not total or not isinstance(one[0][0], int):
        return total, []
    first = one[0][0]
    return total, [{"first": a, "last": a + CHUNK - 1} for a in range(first, first + total, CHUNK)]


def _read(
    store: Store,
    render: _Render,
    source: tuple[str, str],
    params: Mapping[str, Any],
    chunks: Sequence[dict[str, Any]],
) -> list[_Chunk] | None:
    """Each chunk's facts and text; None as soon as a chunk read by rowid shows its rows
    are not in the plain order."""
    query = _query(render, source)
    done = []
    for chunk in chunks:
        one = _read_chunk(render, query, params, store, chunk, source=source)
        if source is _RANGE and not _in_plan_order([one]):
            return None
        done.append(one)
    return done


def _read_chunk(
    render: _Render,
    query: str,
    params: Mapping[str, Any],
    store: Store,
    chunk: dict[str, Any],
    *,
    source: tuple[str, str] = _RANGE,
) -> _Chunk:
    """A chunk's facts (how many rows, the least and greatest `position - rowid`, the type
    of the positions' sum) and text."""
    chunk_params = {**params, **chunk}
    found = store.tuples(query, chunk_params)[0]
    facts = found[1:]
    text = _chunk_text(store, render, source, chunk_params, found) if facts[0] else ""
    return facts, text


def _in_plan_order(done: Sequence[_Chunk], total: int | None = None) -> bool:
    """Whether chunks read by rowid hold their rows in the plain order: one `position -
    rowid` for every shown row (positions that rise as the rowids do), every position an
    integer, and (given the run's `total`) every row of the run in them."""
    if total is not None and sum(facts[4] for facts, _ in done) != total:
        return False
    offsets = set()
    for (count, least, most, kind, _), _ in done:
        if count:
            if least != most or kind != "integer":
                return False
            offsets.add(least)
    return len(offsets) <= 1


def _query(render: _Render, source: tuple[str, str]) -> str:
    where, _ = source
    return _CHUNK.format(ok=render.ok, text=render.text, source=where, shown=_SHOWN)


def _chunk_text(
    store: Store,
    render: _Render,
    source: tuple[str, str],
    params: Mapping[str, Any],
    found: tuple[Any, ...],
) -> str:
    """A chunk's text: SQLite's, or, when it left rows to Python, made again row by row."""
    text, count = found[:2]
    if render.exact(text, count):
        return str(text)
    where, order = source
    again = f"SELECT CASE WHEN {render.ok} THEN {render.text} END AS shown__, steps.* FROM "
    steps = store.query(f"{again}{where} AND {_SHOWN} ORDER BY {order}", params)
    return render.sep.join(map(lambda step: _row_text(render, step), steps))


def _row_text(render: _Render, step: dict[str, Any]) -> str:
    text = step.pop("shown__")
    return text if text is not None and render.exact(text, 1) else render.plain(step)
