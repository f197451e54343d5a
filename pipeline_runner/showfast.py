"""The speed shortcut of `runner show` (shortcuts.py): the same bytes as showview.py's plain
version, with SQLite building most of each step's text.

A 100,000-step run prints 6 MB of lines or 55 MB of JSON.  The plain version makes a dict per
row and encodes it with the pure-Python indenting JSON encoder.  Here SQLite builds each row's
text around the values that only Python can print exactly (a float's shortest repr, a
duration's `.2f`), and Python fills those in with one `%` per row, in C.

SQLite renders a row only when its text is exactly what the plain version prints: every
string printable ASCII with no `"` or `\\` (nothing to escape or to make printable), the JSON
columns null (NULL, or the text `null` a step without an output records), no error, no approval
gate, no re-run note (the `ok` conditions below).  Any other row comes back as NULL and is
rendered by showview's own functions, so the shortcut only ever decides *who* renders a row,
never *what* it looks like.  Rows are read in step-id order and sorted stably by position: the
order of `ORDER BY position, step_id`, the plain order.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import click

from .errors import StoreError
from .escape import ci_report, in_ci, printable
from .jsonout import ENCODER
from .showview import header, json_run, json_step, step_line
from .store import Store
from .success_policy import PREFIX

# The steps table as the JSON template knows it; another column (a later migration) makes
# the JSON the plain version's until the template learns it.
STEP_COLUMNS = (
    "run_id", "step_id", "kind", "state", "attempts", "started", "finished", "error_kind",
    "error", "exit_code", "worker", "output_json", "log_path", "position", "outputs_json",
    "cache_key", "inputs_json",
)  # fmt: skip
CHUNK = 512  # rows per `%` and per write

# Rows `runner show` lists: steps, and the groups whose record is a policy's verdict
# (success_policy.is_verdict).
_SHOWN = (
    "run_id = :rid AND (kind != 'group' OR state = 'partial' OR "
    "(state = 'failed' AND substr(error, 1, :plen) = :prefix))"
)
# What SQLite's json_quote leaves as it is and json.dumps escapes (ensure_ascii); compiled
# when first met (compiling the class takes longer than a small run's show).
_NOT_ASCII = "[\x7f-\U0010ffff]"
# The characters a line of SQLite's may hold as they are: printf prints the id and the state
# raw, which is printable()'s text only when they hold no control character.
_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\n"
_TEXT_OK = (
    "error IS NULL AND typeof(attempts) = 'integer' AND typeof(started) IN ('real', 'null') "
    "AND typeof(finished) IN ('real', 'null')"
)
_JSON_OK = (
    "coalesce(output_json, 'null') = 'null' AND coalesce(outputs_json, 'null') = 'null' "
    "AND coalesce(inputs_json, 'null') = 'null' AND error IS NULL "
    "AND error_kind IS NULL AND exit_code IS NULL AND cache_key IS NULL "
    "AND typeof(attempts) = 'integer' AND typeof(position) = 'integer' "
    "AND typeof(started) IN ('real', 'null') AND typeof(finished) IN ('real', 'null')"
)
_NOTED = " AND step_id NOT IN (SELECT value FROM json_each(:noted))"
_CI = " AND instr(step_id, '::') = 0 AND instr(step_id, '##') = 0"


def show_fast(store: Store, row: dict[str, Any], as_json: bool) -> bool:
    """Print the run as showview.show_plain would; False (nothing printed) when this version
    does not know the store's steps table, or a step id holds a character to escape."""
    if as_json:
        columns = tuple(r["name"] for r in store.query("PRAGMA table_info(steps)"))
        if columns != STEP_COLUMNS:
            return False
        _json(store, row)
        return True
    return _text(store, row)


def _params(run_id: str, noted: Sequence[str]) -> dict[str, Any]:
    return {
        "rid": run_id,
        "plen": len(PREFIX),
        "prefix": PREFIX,
        "noted": json.dumps(list(noted)),
    }


def _ordered(store: Store, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Rows whose first column is the position, in the plain order (position, step id).

    A big run is read in two halves at once, split at its middle step id, the second on a
    connection of its own in a thread: SQLite builds the text without the interpreter's
    lock, so the halves take both cores.  Read in step-id order, the halves joined are in
    step-id order, and the stable sort by position leaves ties in it."""
    middle = store.tuples(_MIDDLE, {"rid": params["rid"], "least": PARALLEL_ROWS})
    if not middle:
        rows = store.tuples(f"{sql} ORDER BY step_id", params)
    else:
        import threading

        split = {**params, "middle": middle[0][0]}
        second: list[list[tuple[Any, ...]]] = []
        reader = threading.Thread(target=_read_half, args=(store, sql, split, second))
        reader.start()
        rows = store.tuples(f"{sql} AND step_id < :middle ORDER BY step_id", split)
        reader.join()
        if not second:
            raise StoreError(f"run store {store.path}: the second half of the steps was not read")
        rows += second[0]
    rows.sort(key=itemgetter(0))  # stable: step-id order among equal positions
    return rows


def _read_half(
    store: Store, sql: str, params: Mapping[str, Any], found: list[list[tuple[Any, ...]]]
) -> None:
    other = Store(store.state_dir, create=False)
    try:
        found.append(other.tuples(f"{sql} AND step_id >= :middle ORDER BY step_id", params))
    finally:
        other.close()


PARALLEL_ROWS = 20_000  # a run of fewer steps is read in one piece
# The middle step id of a run of at least :least steps (none for a smaller one).
_MIDDLE = (
    "SELECT step_id FROM steps WHERE run_id = :rid ORDER BY step_id LIMIT 1 OFFSET "
    "(SELECT CASE WHEN count(*) >= :least THEN count(*) / 2 ELSE 1 << 62 END "
    "FROM steps WHERE run_id = :rid)"
)


def _text(store: Store, row: dict[str, Any]) -> bool:
    run_id = row["id"]
    reruns = store.reruns(run_id)
    ci = in_ci()
    ok = _TEXT_OK + (_NOTED if reruns else "") + (_CI if ci else "")
    params = _params(run_id, list(reruns))
    rows = _ordered(
        store,
        f"SELECT position, CASE WHEN {ok} THEN "
        "printf('  %-!32s %-!16s %2d ', step_id, state, attempts) END, "
        "CASE WHEN started != 0 AND finished != 0 THEN finished - started END "
        f"FROM steps WHERE {_SHOWN}",
        params,
    )
    # As the plain `f"{took:>8}"` of `f"{seconds:.2f}s"`, or 8 spaces without a duration.
    shapes = {float: "%.0s%s%7.2fs", type(None): "%.0s%s        %.0s"}
    formats = map(shapes.__getitem__, map(type, map(itemgetter(2), rows)))
    lines: list[str] = list(map(str.__mod__, formats, rows))
    if not _printable("\n".join(lines), len(lines)):
        return False  # rare: an id with a control character, which printable() escapes
    if None in map(itemgetter(1), rows):
        plain = _plain_rows(store, ok, params)
        for index in (i for i, r in enumerate(rows) if r[1] is None):
            lines[index] = step_line(next(plain), reruns, ci)
    click.echo(header(row))
    for start in range(0, len(lines), CHUNK * 8):
        click.echo("\n".join(lines[start : start + CHUNK * 8]))
    return True


def _printable(text: str, count: int) -> bool:
    """Whether `count` lines joined are printable() as they are (no line break inside one)."""
    if text.count("\n") != count - 1 if count else False:
        return False
    if text.isascii():
        return not text.encode("ascii").translate(None, _PRINTABLE)
    return printable(text, one_line=False, ci=False) == text


def _plain_rows(store: Store, ok: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The rows SQLite left to Python (those `ok` does not hold for), in the plain order."""
    found = store.query(
        f"SELECT * FROM steps WHERE {_SHOWN} AND ({ok}) IS NOT 1 ORDER BY step_id", params
    )
    found.sort(key=itemgetter("position"))
    return iter(found)


def _json(store: Store, row: dict[str, Any]) -> None:
    run_id = row["id"]
    reruns = store.reruns(run_id)
    gates: dict[str, dict[str, Any]] = {}
    if store.query("SELECT 1 FROM approvals WHERE run_id = ? LIMIT 1", (run_id,)):
        from .gatebook import gate_rows  # its imports are a tenth of a small show's time

        gates = gate_rows(store, run_id)
    noted = [*reruns, *gates]
    ok = _JSON_OK + (_NOTED if noted else "")
    params = _params(run_id, noted)
    rows = _ordered(
        store,
        f"SELECT position, CASE WHEN {ok} THEN json_quote(step_id) || :a1 || json_quote(kind) "
        "|| :a2 || json_quote(state) || :a3 || attempts END, coalesce(started, 'null'), "
        "coalesce(finished, 'null'), :c1 || json_quote(worker) || :c2 || json_quote(log_path) "
        f"|| :c3 || position || :c4 FROM steps WHERE {_SHOWN}",
        {**params, **_JSON_PIECES},
    )
    head = ENCODER.encode({"run": json_run(row), "steps": []})
    out = sys.stdout
    if not rows:
        out.write(ci_report(head + "\n"))
        out.flush()
        return
    out.write(ci_report(head[: -len("[]\n}")] + "[\n"))
    template = _ROW % json.dumps(run_id).replace("%", "%%")
    plain = _plain_rows(store, ok, params) if None in map(itemgetter(1), rows) else iter(())
    full = ",\n".join([template] * CHUNK)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        if None not in map(itemgetter(1), chunk):
            fmt = full if len(chunk) == CHUNK else ",\n".join([template] * len(chunk))
            text = fmt % tuple(chain.from_iterable(chunk))
        else:
            text = ",\n".join(
                template % r if r[1] is not None else _json_row(next(plain), gates, reruns)
                for r in chunk
            )
        if not text.isascii() or "\x7f" in text:  # only inside strings: JSON's own text is ASCII
            text = re.sub(_NOT_ASCII, _escaped, text)
        out.write(ci_report(text + (",\n" if start + CHUNK < len(rows) else "\n  ]\n}\n")))
    out.flush()


def _escaped(found: re.Match[str]) -> str:
    """A character as json.dumps spells it in a string (ensure_ascii): `\\u00e9`."""
    return json.encoder.encode_basestring_ascii(found.group())[1:-1]


def _json_row(step: dict[str, Any], gates: Mapping[str, Any], reruns: Mapping[str, str]) -> str:
    """A row as the plain version encodes it, at its depth (inside `"steps": [`)."""
    shown = json_step(step, gates.get(step["step_id"]), reruns)
    text = ENCODER.encode(shown)
    return "    " + text.replace("\n", "\n    ")  # line breaks in JSON text are its own


_I = "\n      "
_JSON_PIECES = {
    "a1": f',{_I}"kind": ',
    "a2": f',{_I}"state": ',
    "a3": f',{_I}"attempts": ',
    "c1": f',{_I}"error_kind": null,{_I}"error": null,{_I}"exit_code": null,{_I}"worker": ',
    "c2": f',{_I}"log_path": ',
    "c3": f',{_I}"position": ',
    "c4": f',{_I}"cache_key": null',
}
# position (not printed), the step id ... attempts, started, finished, error_kind ... cache_key
_ROW = (
    f'%%.0s    {{{_I}"run_id": %s,{_I}"step_id": %%s,{_I}"started": %%s,{_I}"finished": '
    f'%%s%%s,{_I}"output": null,{_I}"rerun": null,{_I}"outputs": null,{_I}"inputs": null\n    }}'
)
