"""The `sqlite` step: one SQL statement, or a DDL/seed script, against an SQLite database file.

A query opens the database read-only by default (`mode: ro`, through the URI `file:...?mode=ro`),
so a step meant to read can never write by accident; `rw` opens an existing file for writing and
`rwc` also creates it, and its folder, when missing.  Parameters are always bound by SQLite (`?`
or `:name` placeholders), never formatted into the SQL text, so a templated value cannot change
the statement.

Output: the result rows as a list of mappings (column name to value, blobs as hex strings, so the
output stays JSON-serialisable); with `one`, the first row or null; for a statement without result
rows, or a script, `{"rowcount": n}`, the number of rows it inserted, updated or deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner_sqlite._common import StepError, check_with

if TYPE_CHECKING:
    from pipeline_runner.plugins import StepContext

Row = dict[str, Any]
Params = Sequence[Any] | Mapping[str, Any]
Output = list[Row] | Row | None
Result = tuple[Output, str]  # the step's output and a few words on it for the log

_SCALAR: dict[str, Any] = {
    "type": ["string", "number", "integer", "boolean", "null"],
    "description": "A value bound to a placeholder (booleans bind as 1/0, null as NULL).",
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "sqlite",
    "description": "Run one SQL statement, or with `script` a DDL/seed script, on an SQLite file.",
    "type": "object",
    "additionalProperties": False,
    "required": ["database", "query"],
    "properties": {
        "database": {
            "type": "string",
            "minLength": 1,
            "description": "Path of the database file; a relative path is taken from the "
            "pipeline file's folder.",
        },
        "query": {
            "type": "string",
            "minLength": 1,
            "description": "One SQL statement with `?` or `:name` placeholders; with `script`, "
            "any number of statements separated by semicolons.",
        },
        "params": {
            "type": ["array", "object"],
            "items": _SCALAR,
            "additionalProperties": _SCALAR,
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "description": "Values bound to the placeholders: a list for `?`, a mapping for "
            "`:name`. Never formatted into the SQL text.",
        },
        "mode": {
            "enum": ["ro", "rw", "rwc"],
            "default": "ro",
            "description": "ro: read-only (default); rw: read-write, the file must exist; "
            "rwc: read-write, creating the file and its folder when missing.",
        },
        "script": {
            "type": "boolean",
            "default": False,
            "description": "Run `query` as a script of several statements (DDL, seed data); "
            "needs mode rw or rwc and takes no params. Wrap it in BEGIN; ... COMMIT; to make "
            "it all-or-nothing.",
        },
        "one": {
            "type": "boolean",
            "default": False,
            "description": "Return only the first row (a mapping), or null when there is none.",
        },
    },
    "if": {"required": ["script"], "properties": {"script": {"const": True}}},
    "then": {
        "required": ["mode"],
        "properties": {"mode": {"enum": ["rw", "rwc"]}, "params": False},
    },
}


class SqliteError(StepError):
    """An SQLite query step failed; the message names the database file and SQLite's error."""


class SqliteQuery:
    """Run an SQL query, or a DDL/seed script, against an SQLite database file."""

    summary = "Run an SQL query or script on an SQLite database (read-only unless asked)"
    schema: Mapping[str, Any] = SCHEMA

    def run(self, with_: Mapping[str, Any], ctx: StepContext) -> Output:
        _check_combinations(with_)
        check_with("sqlite", self.schema, with_)
        path = database_path(with_["database"], ctx.pipeline_dir)
        mode: str = with_.get("mode", "ro")
        query: str = with_["query"]
        ctx.log.info("sqlite %s (mode %s): %s", path, mode, query.strip())
        try:
            with closing(_connect(path, mode)) as conn:
                if with_.get("script", False):
                    result, told = _run_script(conn, query)
                else:
                    params: Params = with_.get("params", ())
                    result, told = _run_query(conn, query, params, bool(with_.get("one", False)))
        except sqlite3.Error as exc:
            raise SqliteError(_explain(path, mode, exc)) from exc
        ctx.log.info("sqlite: %s", told)
        return result


def database_path(database: str, pipeline_dir: Path) -> Path:
    """The absolute path of `database`, a relative one taken from the pipeline's folder."""
    return (Path(pipeline_dir) / Path(database).expanduser()).absolute()


def _check_combinations(with_: Mapping[str, Any]) -> None:
    """Refuse `script` combined with read-only mode or params, with a message saying why."""
    if with_.get("script") is not True:
        return
    if with_.get("mode", "ro") not in ("rw", "rwc"):
        raise SqliteError(
            "sqlite: `script: true` needs `mode: rw` or `mode: rwc` "
            "(scripts are for DDL and seed data; the default mode is read-only)"
        )
    if "params" in with_:
        raise SqliteError("sqlite: `script: true` takes no `params` (SQLite cannot bind them)")


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    if mode == "rwc":
        path.parent.mkdir(parents=True, exist_ok=True)
    # as_uri() percent-encodes `?`, `#` and `%`, so any file name survives the URI form.
    return sqlite3.connect(f"{path.as_uri()}?mode={mode}", uri=True)


def _run_query(conn: sqlite3.Connection, query: str, params: Params, one: bool) -> Result:
    cursor = conn.execute(query, params)
    if cursor.description is None:
        rowcount = max(cursor.rowcount, 0)  # -1 for DDL and other statements that change no rows
        conn.commit()
        return {"rowcount": rowcount}, f"{rowcount} row(s) changed"
    columns = _column_names(cursor.description)
    if one:
        first = cursor.fetchone()
        conn.commit()  # `INSERT ... RETURNING` writes as well as returns
        if first is None:
            return None, "no row"
        return _row(columns, first), "first row returned"
    rows = [_row(columns, values) for values in cursor.fetchall()]
    conn.commit()
    return rows, f"{len(rows)} row(s) returned"


def _run_script(conn: sqlite3.Connection, script: str) -> Result:
    before = conn.total_changes
    conn.executescript(script)
    if conn.in_transaction:  # the script opened a transaction and did not end it: it succeeded
        conn.commit()
    changed = conn.total_changes - before
    return {"rowcount": changed}, f"script done, {changed} row(s) changed"


def _column_names(description: Sequence[Sequence[Any]]) -> list[str]:
    names = [str(column[0]) for column in description]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise sqlite3.ProgrammingError(
                f"the result has two columns named {name!r}; give them distinct names with AS"
            )
        seen.add(name)
    return names


def _row(columns: list[str], values: Sequence[Any]) -> Row:
    return {name: _jsonable(value) for name, value in zip(columns, values, strict=True)}


def _jsonable(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes | bytearray | memoryview) else value


def _explain(path: Path, mode: str, exc: sqlite3.Error) -> str:
    message = f"sqlite: database {path}: {exc}"
    text = str(exc)
    if "readonly" in text and mode == "ro":
        message += " (the database is opened read-only by default; set `mode: rw` to write)"
    elif "unable to open" in text and mode != "rwc" and not path.exists():
        message += " (no such file; set `mode: rwc` to create it)"
    return message
