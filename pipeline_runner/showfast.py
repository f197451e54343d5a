"""The speed shortcut of `runner show` (shortcuts.py): the same bytes as showview.py's plain
version, with SQLite writing the steps' text.

A 100,000-step run prints 6 MB of lines or 55 MB of JSON.  The plain version makes a dict per
row and encodes it in Python.  Here each query renders CHUNK rows: SQLite builds each row's
text (its floats too: sqlfloat.py) and joins them with `group_concat`, so Python receives one
string per chunk, not an object per value, and the query runs without the interpreter's lock
(a big run's chunks are read by two connections at once, one in a thread).

SQLite renders a row only when its text is exactly what the plain version prints (the `ok`
conditions below: no error, no approval gate, no re-run note, values of the expected types, an
id that needs no escape, floats that sqlfloat.py prints); any other row makes its chunk read
again row by row, and that row is rendered by showview's own functions, so the shortcut only
decides *who* renders a row, never *what* it looks like.

Rows come in the plain order (position, step id).  A run's rows are written as it is planned,
in that order, so when `position - rowid` is the same for every row of the run, the rowid
order is the plain order and the chunks are rowid ranges (no sort); otherwise (rows added
later) SQLite sorts the rowids once and each chunk is a list of them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from .escape import ci_report, in_ci
from .jsonout import ENCODER
from .showview import header, json_run, json_step, step_line
from .sqlfloat import fixed2, float_repr
from .store import Store
from .success_policy import PREFIX

if TYPE_CHECKING:
    import queue

# The steps table as the JSON template knows it; another column (a later migration) makes
# the JSON the plain version's until the template learns it.
STEP_COLUMNS = (
    "run_id", "step_id", "kind", "state", "attempts", "started", "finished", "error_kind",
    "error", "exit_code", "worker", "output_json", "log_path", "position", "outputs_json",
    "cache_key", "inputs_json",
)  # fmt: skip
CHUNK = 1024  # rows a query renders
PARALLEL_ROWS = 20_000  # a run of fewer rows is read by one connection

# Rows `runner show` lists: steps, and the groups whose record is a policy's verdict
# (success_policy.is_verdict).
_SHOWN = (
    "(kind != 'group' OR state = 'partial' OR "
    "(state = 'failed' AND substr(error, 1, :plen) = :prefix))"
)
# Where a chunk's rows come from, and their order: a rowid range, or a list of rowids.
_RANGE = ("steps WHERE rowid BETWEEN :first AND :last AND +run_id = :rid", "rowid")
_LISTED = (
    "json_each(:ids) AS listed JOIN steps ON steps.rowid = listed.value WHERE +run_id = :rid",
    "listed.key",
)
# What SQLite's json_quote leaves as it is and json.dumps escapes (ensure_ascii); compiled
# when first met (compiling the class takes longer than a small run's show).
_NOT_ASCII = "[\x7f-\U0010ffff]"
_TYPED = (
    "typeof(attempts) = 'integer' AND typeof(started) IN ('real', 'null') "
    "AND typeof(finished) IN ('real', 'null')"
)
# printf prints the id raw: printable()'s text when it is printable ASCII (a tab is left to
# Python too).
_TEXT_OK = f"error IS NULL AND {_TYPED} AND NOT step_id GLOB '*[^ -~]*'"
_JSON_OK = (
    "coalesce(output_json, 'null') = 'null' AND coalesce(outputs_json, 'null') = 'null' "
    "AND coalesce(inputs_json, 'null') = 'null' AND error IS NULL "
    f"AND error_kind IS NULL AND exit_code IS NULL AND cache_key IS NULL AND {_TYPED} "
    "AND typeof(position) = 'integer'"
)
_NOTED = " AND step_id NOT IN (SELECT value FROM json_each(:noted))"
_CI = " AND instr(step_id, '::') = 0 AND instr(step_id, '##') = 0"

# A line as step_line prints it; NULL (Python's) where sqlfloat cannot print the duration
# (under 9,999 s it is at most 8 characters with its `s`).
_LINE = (
    "printf('  %-!32s %-!16s %2d ', step_id, state, attempts) || CASE "
    "WHEN coalesce(started, 0) = 0 OR coalesce(finished, 0) = 0 THEN '        ' "
    f"ELSE substr('        ' || {fixed2('finished - started', below=9999)} || 's', -8) END"
)
_I = "\n      "
# A row as json_step encodes it, at its depth (inside `"steps": [`); :p0 holds the run id.
_JSON_ROW = (
    ":p0 || json_quote(step_id) || :p1 || json_quote(kind) || :p2 || json_quote(state) || :p3 "
    f"|| attempts || :p4 || {float_repr('started')} || :p5 || {float_repr('finished')} || :p6 "
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


@dataclass(frozen=True)
class _Render:
    """How the rows of one kind of output are rendered: by SQLite (`text` where `ok`), or by
    `plain` (a step row as a dict), joined with `sep`."""

    ok: str
    text: str
    sep: str
    plain: Callable[[dict[str, Any]], str]


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
    render = _Render(ok, _LINE, "\n", lambda step: step_line(step, reruns, ci))
    click.echo(header(row))
    for text in _chunks(store, render, _params(run_id, list(reruns))):
        click.echo(text)


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

    def plain(step: dict[str, Any]) -> str:
        text = ENCODER.encode(json_step(step, gates.get(step["step_id"]), reruns))
        return "    " + text.replace("\n", "\n    ")  # line breaks in JSON text are its own

    render = _Render(_JSON_OK + (_NOTED if noted else ""), _JSON_ROW, ",\n", plain)
    head = ENCODER.encode({"run": json_run(row), "steps": []})
    out = sys.stdout
    before = head[: -len("[]\n}")] + "[\n"  # what the next chunk follows
    for text in _chunks(store, render, params):
        if not text.isascii() or "\x7f" in text:  # only inside strings: JSON's own text is ASCII
            text = re.sub(_NOT_ASCII, _escaped, text)
        out.write(ci_report(before + text))
        before = ",\n"
    out.write(ci_report("\n  ]\n}\n" if before == ",\n" else head + "\n"))
    out.flush()


def _escaped(found: re.Match[str]) -> str:
    """A character as json.dumps spells it in a string (ensure_ascii): `\\u00e9`."""
    return json.encoder.encode_basestring_ascii(found.group())[1:-1]


def _chunks(store: Store, render: _Render, params: Mapping[str, Any]) -> Iterator[str]:
    """The text of the run's shown rows, a chunk at a time, in the plain order (chunks
    without a shown row left out)."""
    (source, order), chunks, rows = _plan(store, params["rid"])
    rendered = (
        f"SELECT group_concat(shown, :sep), count(*), count(shown) FROM (SELECT CASE WHEN "
        f"{render.ok} THEN {render.text} END AS shown FROM {source} AND {_SHOWN} ORDER BY {order})"
    )
    every = [{**params, **chunk, "sep": render.sep} for chunk in chunks]
    results = _read(store, rendered, every, parallel=rows >= PARALLEL_ROWS)
    for chunk, (text, count, shown) in zip(every, results, strict=True):
        if shown < count:  # rows SQLite left to Python: the chunk again, row by row
            again = f"SELECT CASE WHEN {render.ok} THEN {render.text} END AS shown__, steps.* "
            steps = store.query(f"{again} FROM {source} AND {_SHOWN} ORDER BY {order}", chunk)
            text = render.sep.join(s.pop("shown__") or render.plain(s) for s in steps)
        if count:
            yield text


def _plan(store: Store, run_id: str) -> tuple[tuple[str, str], list[dict[str, Any]], int]:
    """Where the chunks' rows come from, each chunk's parameters, and the run's row count."""
    found = store.tuples(
        "SELECT min(rowid), max(rowid), count(*) FROM steps WHERE run_id = ?", (run_id,)
    )
    first, last, rows = found[0]
    if not rows:
        return _RANGE, [], 0
    in_order = store.tuples(
        "SELECT min(position - rowid) = max(position - rowid) AND "
        "sum(typeof(position) = 'integer') = count(*) "
        "FROM steps WHERE rowid BETWEEN ? AND ? AND +run_id = ?",
        (first, last, run_id),
    )
    if in_order[0][0]:
        starts = range(first, last + 1, CHUNK)
        return _RANGE, [{"first": a, "last": a + CHUNK - 1} for a in starts], rows
    ids = [r[0] for r in store.tuples(
        "SELECT rowid FROM steps WHERE run_id = ? ORDER BY position, step_id", (run_id,)
    )]  # fmt: skip
    lists = [{"ids": json.dumps(ids[a : a + CHUNK])} for a in range(0, len(ids), CHUNK)]
    return _LISTED, lists, rows


def _read(
    store: Store, sql: str, every: list[dict[str, Any]], *, parallel: bool
) -> Iterator[tuple[Any, ...]]:
    """The row of `sql` for each parameter set in turn; `parallel`: every second one read
    ahead by a second connection, in a thread (SQLite renders without the interpreter's
    lock, so both cores work)."""
    if not parallel:
        for params in every:
            yield store.tuples(sql, params)[0]
        return
    import queue
    import threading

    ahead: queue.Queue[tuple[Any, ...] | BaseException] = queue.Queue(maxsize=4)
    reader = threading.Thread(
        target=_read_ahead, args=(store, sql, every[1::2], ahead), daemon=True
    )
    reader.start()
    for index, params in enumerate(every):
        if index % 2 == 0:
            yield store.tuples(sql, params)[0]
            continue
        found = ahead.get()
        if isinstance(found, BaseException):
            raise found
        yield found


def _read_ahead(
    store: Store,
    sql: str,
    every: list[dict[str, Any]],
    ahead: queue.Queue[tuple[Any, ...] | BaseException],
) -> None:
    try:
        other = Store(store.state_dir, create=False)
    except BaseException as exc:  # handed to the reading thread, which raises it
        ahead.put(exc)
        return
    try:
        for params in every:
            ahead.put(other.tuples(sql, params)[0])
    except BaseException as exc:
        ahead.put(exc)
    finally:
        other.close()
