"""The runner-sqlite plugins (`uses: sqlite`, `uses: checksum`), loaded as the runner loads them.

Each plugin comes from the installed entry points, is checked with `check_plugin`, and runs with a
real `StepContext` on real SQLite files and real files under `tmp_path`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import shutil
import sqlite3
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from jinja2.nativetypes import NativeEnvironment
from jsonschema import Draft202012Validator

from pipeline_runner.plugins import GROUP, Plugin, StepContext, check_plugin

runner_sqlite = pytest.importorskip(
    "runner_sqlite",
    reason="runner-sqlite is not installed (pip install -e plugins/runner-sqlite)",
)
ENTRY_POINTS = {ep.name: ep for ep in entry_points(group=GROUP) if ep.dist is not None}
if not {"sqlite", "checksum"} <= set(ENTRY_POINTS):
    pytest.skip(
        "the sqlite/checksum entry points are not installed (pip install -e plugins/runner-sqlite)",
        allow_module_level=True,
    )

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
StepError = runner_sqlite.StepError
SqliteError = runner_sqlite.SqliteError
ChecksumError = runner_sqlite.ChecksumError


def load(name: str) -> Plugin:
    return check_plugin(name, ENTRY_POINTS[name].load())


@pytest.fixture(scope="module")
def sqlite_step() -> Plugin:
    return load("sqlite")


@pytest.fixture(scope="module")
def checksum_step() -> Plugin:
    return load("checksum")


def make_ctx(pipeline_dir: Path, step_id: str = "step") -> StepContext:
    """A context as the worker builds one (the scratch folder's field name has varied)."""
    fields = {field.name for field in dataclasses.fields(StepContext)}
    scratch = "scratch_path" if "scratch_path" in fields else "scratch_dir"
    where: dict[str, Any] = {scratch: pipeline_dir / ".scratch" / step_id}
    return StepContext(
        run_id="20240101-000000-test",
        step_id=step_id,
        attempt=1,
        key=None,
        item=None,
        log=logging.getLogger(f"pipeline_runner.test.{step_id}"),
        pipeline_dir=pipeline_dir,
        **where,
    )


@pytest.fixture
def ctx(tmp_path: Path) -> StepContext:
    return make_ctx(tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database made without the plugin: table t(id, name, data) with two rows."""
    path = tmp_path / "existing.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
        conn.execute("INSERT INTO t VALUES (1, 'alpha', X'00ff10'), (2, 'beta', NULL)")
    conn.close()
    return path


def names_in(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = [row[0] for row in conn.execute("SELECT name FROM t ORDER BY id")]
    conn.close()
    return rows


# --- discovery and schemas ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sqlite", "checksum"])
def test_entry_point_is_published_by_runner_sqlite(name: str) -> None:
    dist = ENTRY_POINTS[name].dist
    assert dist is not None
    assert (dist.metadata["Name"], dist.version) == ("runner-sqlite", "0.1.0")


@pytest.mark.parametrize("name", ["sqlite", "checksum"])
def test_schema_is_a_complete_draft_2020_12_schema(name: str) -> None:
    plugin = load(name)
    schema = dict(plugin.schema)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert all(prop.get("description") for prop in schema["properties"].values())
    assert getattr(plugin, "summary", "")


def test_schema_refuses_what_run_refuses(sqlite_step: Plugin, checksum_step: Plugin) -> None:
    sqlite_ok = Draft202012Validator(dict(sqlite_step.schema)).is_valid
    assert sqlite_ok({"database": "a.db", "query": "SELECT 1", "params": [1, "x", None]})
    assert not sqlite_ok({"database": "a.db"})
    assert not sqlite_ok({"database": "a.db", "query": "SELECT 1", "mode": "rx"})
    assert not sqlite_ok({"database": "a.db", "query": "SELECT 1", "typo": 1})
    assert not sqlite_ok({"database": "a.db", "query": "CREATE TABLE x(y)", "script": True})
    assert sqlite_ok({"database": "a.db", "query": "x", "script": True, "mode": "rwc"})
    assert not sqlite_ok(
        {"database": "a.db", "query": "x", "script": True, "mode": "rw", "params": [1]}
    )
    checksum_ok = Draft202012Validator(dict(checksum_step.schema)).is_valid
    assert checksum_ok({"paths": ["*.csv"], "algorithm": "blake2b", "fail_if_empty": False})
    assert not checksum_ok({"paths": []})
    assert not checksum_ok({"paths": ["*.csv"], "algorithm": "crc32"})


# --- sqlite ---------------------------------------------------------------------------------


def test_rwc_script_creates_the_database_and_a_query_reads_it(
    sqlite_step: Plugin, ctx: StepContext, tmp_path: Path
) -> None:
    script = """
        BEGIN;
        CREATE TABLE people (name TEXT NOT NULL, age INTEGER);
        INSERT INTO people VALUES ('ada', 36), ('alan', 41), ('grace', NULL);
        COMMIT;
    """
    created = sqlite_step.run(
        {"database": "out/new.db", "query": script, "script": True, "mode": "rwc"}, ctx
    )
    assert created == {"rowcount": 3}
    assert (tmp_path / "out" / "new.db").is_file()  # relative to pipeline_dir, folder created

    rows = sqlite_step.run(
        {"database": "out/new.db", "query": "SELECT name, age FROM people ORDER BY name"}, ctx
    )
    assert rows == [
        {"name": "ada", "age": 36},
        {"name": "alan", "age": 41},
        {"name": "grace", "age": None},
    ]


def test_relative_database_is_taken_from_pipeline_dir_not_cwd(
    sqlite_step: Plugin, ctx: StepContext, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = sqlite_step.run({"database": db.name, "query": "SELECT count(*) AS n FROM t"}, ctx)
    assert out == [{"n": 2}]


def test_read_only_by_default_refuses_writes(
    sqlite_step: Plugin, ctx: StepContext, db: Path
) -> None:
    for statement in ("INSERT INTO t (name) VALUES ('gamma')", "DROP TABLE t"):
        with pytest.raises(SqliteError, match="readonly database") as info:
            sqlite_step.run({"database": str(db), "query": statement}, ctx)
        assert str(db) in str(info.value)
        assert "mode: rw" in str(info.value)
    assert names_in(db) == ["alpha", "beta"]


def test_read_only_never_creates_a_missing_file(
    sqlite_step: Plugin, ctx: StepContext, tmp_path: Path
) -> None:
    with pytest.raises(SqliteError, match="unable to open database file") as info:
        sqlite_step.run({"database": "missing.db", "query": "SELECT 1"}, ctx)
    assert str(tmp_path / "missing.db") in str(info.value)
    assert "mode: rwc" in str(info.value)
    assert not (tmp_path / "missing.db").exists()


def test_script_needs_a_writable_mode(sqlite_step: Plugin, ctx: StepContext, db: Path) -> None:
    with pytest.raises(SqliteError, match="needs `mode: rw` or `mode: rwc`"):
        sqlite_step.run({"database": str(db), "query": "DROP TABLE t", "script": True}, ctx)
    assert names_in(db) == ["alpha", "beta"]


def test_failed_script_in_a_transaction_leaves_nothing_behind(
    sqlite_step: Plugin, ctx: StepContext, db: Path
) -> None:
    script = "BEGIN; INSERT INTO t (name) VALUES ('gamma'); INSERT INTO nope VALUES (1); COMMIT;"
    with pytest.raises(SqliteError, match="no such table: nope"):
        sqlite_step.run({"database": str(db), "query": script, "script": True, "mode": "rw"}, ctx)
    assert names_in(db) == ["alpha", "beta"]


def test_params_are_bound_never_formatted_into_sql(
    sqlite_step: Plugin, ctx: StepContext, db: Path
) -> None:
    hostile = "x'); DROP TABLE t; --"
    insert = "INSERT INTO t (name) VALUES (?)"
    inserted = sqlite_step.run(
        {"database": str(db), "mode": "rw", "query": insert, "params": [hostile]}, ctx
    )
    assert inserted == {"rowcount": 1}
    select = "SELECT id, name FROM t WHERE name = :name"
    found = sqlite_step.run(
        {"database": str(db), "query": select, "params": {"name": hostile}}, ctx
    )
    assert found == [{"id": 3, "name": hostile}]
    assert names_in(db) == ["alpha", "beta", hostile]


def test_rowcount_for_statements_without_rows(
    sqlite_step: Plugin, ctx: StepContext, db: Path
) -> None:
    update = {"database": str(db), "mode": "rw", "query": "UPDATE t SET name = upper(name)"}
    assert sqlite_step.run(update, ctx) == {"rowcount": 2}
    ddl = {"database": str(db), "mode": "rw", "query": "CREATE TABLE u (x)"}
    assert sqlite_step.run(ddl, ctx) == {"rowcount": 0}
    assert names_in(db) == ["ALPHA", "BETA"]


def test_one_returns_the_first_row_or_null(sqlite_step: Plugin, ctx: StepContext, db: Path) -> None:
    query = "SELECT id, name FROM t WHERE id >= ? ORDER BY id"
    first = sqlite_step.run({"database": str(db), "query": query, "params": [1], "one": True}, ctx)
    assert first == {"id": 1, "name": "alpha"}
    none = sqlite_step.run({"database": str(db), "query": query, "params": [9], "one": True}, ctx)
    assert none is None
    empty = sqlite_step.run({"database": str(db), "query": query, "params": [9]}, ctx)
    assert empty == []


def test_blobs_come_back_as_hex_and_the_output_is_json(
    sqlite_step: Plugin, ctx: StepContext, db: Path
) -> None:
    rows = sqlite_step.run({"database": str(db), "query": "SELECT id, data FROM t"}, ctx)
    assert rows == [{"id": 1, "data": "00ff10"}, {"id": 2, "data": None}]
    assert json.loads(json.dumps(rows)) == rows


def test_errors_name_the_database_file_and_sqlite_error(
    sqlite_step: Plugin, ctx: StepContext, db: Path
) -> None:
    cases = [
        ("SELECT * FROM nope", "no such table: nope"),
        ("SELEC 1", "syntax error"),
        ("SELECT 1; SELECT 2", "one statement at a time"),
        ("SELECT t.id, u.id FROM t, t AS u", "two columns named 'id'"),
    ]
    for query, expected in cases:
        with pytest.raises(SqliteError, match=expected) as info:
            sqlite_step.run({"database": str(db), "query": query}, ctx)
        assert str(info.value).startswith(f"sqlite: database {db}: ")


def test_wrong_number_of_params_is_an_error(
    sqlite_step: Plugin, ctx: StepContext, db: Path
) -> None:
    with pytest.raises(SqliteError, match=r"bindings") as info:
        sqlite_step.run(
            {"database": str(db), "query": "SELECT * FROM t WHERE id = ?", "params": [1, 2]}, ctx
        )
    assert str(db) in str(info.value)


def test_invalid_with_is_refused_when_run(sqlite_step: Plugin, ctx: StepContext) -> None:
    with pytest.raises(StepError, match=r"with\.mode: 'rx' is not one of"):
        sqlite_step.run({"database": "a.db", "query": "SELECT 1", "mode": "rx"}, ctx)
    with pytest.raises(StepError, match="'querry' was unexpected"):
        sqlite_step.run({"database": "a.db", "query": "SELECT 1", "querry": "x"}, ctx)


def test_query_and_row_count_go_to_the_step_log(
    sqlite_step: Plugin, ctx: StepContext, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ctx.log.name)
    sqlite_step.run({"database": str(db), "query": "SELECT name FROM t"}, ctx)
    text = caplog.text
    assert "SELECT name FROM t" in text
    assert str(db) in text
    assert "2 row(s) returned" in text


# --- checksum -------------------------------------------------------------------------------


def write(root: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5", "blake2b"])
def test_digests_match_hashlib(
    checksum_step: Plugin, ctx: StepContext, tmp_path: Path, algorithm: str
) -> None:
    big = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: several chunks and a partial one
    write(tmp_path, {"data/big.bin": big, "data/empty.bin": b""})
    out = checksum_step.run({"paths": ["data/*.bin"], "algorithm": algorithm}, ctx)
    assert out == {
        "data/big.bin": hashlib.new(algorithm, big).hexdigest(),
        "data/empty.bin": hashlib.new(algorithm, b"").hexdigest(),
    }


def test_default_algorithm_is_sha256(
    checksum_step: Plugin, ctx: StepContext, tmp_path: Path
) -> None:
    write(tmp_path, {"a.txt": b"hello\n"})
    assert checksum_step.run({"paths": ["a.txt"]}, ctx) == {
        "a.txt": hashlib.sha256(b"hello\n").hexdigest()
    }


def test_globs_are_relative_sorted_posix_and_files_only(
    checksum_step: Plugin, ctx: StepContext, tmp_path: Path
) -> None:
    write(
        tmp_path,
        {
            "data/b.csv": b"b",
            "data/a.csv": b"a",
            "data/notes.txt": b"n",
            "data/nested/deep/c.csv": b"c",
            "data/.hidden.csv": b"h",
            "data/dir.csv/inside.txt": b"i",  # a folder whose name matches: left out
        },
    )
    top = checksum_step.run({"paths": ["data/*.csv"]}, ctx)
    assert list(top) == ["data/a.csv", "data/b.csv"]
    everywhere = checksum_step.run({"paths": ["data/**/*.csv", "data/a.csv"]}, ctx)
    assert list(everywhere) == ["data/a.csv", "data/b.csv", "data/nested/deep/c.csv"]
    assert everywhere["data/nested/deep/c.csv"] == hashlib.sha256(b"c").hexdigest()


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("../outside.txt", "leaves"),
        ("data/../../outside.txt", "leaves"),
        ("data/..\\..\\outside.txt", "leaves"),
        ("/etc/passwd", "absolute"),
        ("/**/*.txt", "absolute"),
    ],
)
def test_patterns_escaping_the_pipeline_folder_are_refused(
    checksum_step: Plugin, ctx: StepContext, tmp_path: Path, pattern: str, reason: str
) -> None:
    write(tmp_path, {"inside/a.txt": b"a"})
    ctx.pipeline_dir = tmp_path / "inside"
    (tmp_path / "outside.txt").write_bytes(b"secret")
    with pytest.raises(ChecksumError, match=reason) as info:
        checksum_step.run({"paths": ["a.txt", pattern]}, ctx)
    assert repr(pattern) in str(info.value)


def test_a_pattern_matching_nothing_is_an_error_unless_allowed(
    checksum_step: Plugin, ctx: StepContext, tmp_path: Path
) -> None:
    write(tmp_path, {"data/a.csv": b"a"})
    with pytest.raises(ChecksumError, match=r"no file matches 'data/\*\.parquet'"):
        checksum_step.run({"paths": ["data/*.parquet"]}, ctx)
    with pytest.raises(ChecksumError, match=r"'data/typo\.csv'"):
        checksum_step.run({"paths": ["data/a.csv", "data/typo.csv"]}, ctx)
    allowed = {"paths": ["data/a.csv", "data/*.parquet"], "fail_if_empty": False}
    assert list(checksum_step.run(allowed, ctx)) == ["data/a.csv"]
    assert checksum_step.run({"paths": ["none/*"], "fail_if_empty": False}, ctx) == {}


# --- the example pipeline -------------------------------------------------------------------


def example() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    document: dict[str, Any] = yaml.safe_load((PIPELINES / "sqlite-report.yaml").read_text())
    return document


def test_example_pipeline_with_blocks_match_the_plugin_schemas() -> None:
    document = example()
    assert document["version"] == 1
    uses = {step["uses"] for step in document["steps"]}
    assert uses == {"sqlite", "checksum"}
    for step in document["steps"]:
        validator = Draft202012Validator(dict(load(step["uses"]).schema))
        assert list(validator.iter_errors(step["with"])) == [], step["id"]


def test_example_pipeline_steps_run_and_load_the_csv_figures(tmp_path: Path) -> None:
    """Run the example's steps in file order, rendering `{{ params.* }}` as the runner would."""
    shutil.copytree(PIPELINES / "data", tmp_path / "data", ignore=shutil.ignore_patterns("*.db"))
    document = example()
    render: Callable[[Any], Any] = _renderer(document["params"])
    outputs: dict[str, Any] = {}
    for step in document["steps"]:
        ctx = make_ctx(tmp_path, step["id"])
        outputs[step["id"]] = load(step["uses"]).run(render(step["with"]), ctx)

    csv_bytes = (tmp_path / "data" / "sales.csv").read_bytes()
    assert outputs["fingerprint"] == {"data/sales.csv": hashlib.sha256(csv_bytes).hexdigest()}
    with (tmp_path / "data" / "sales.csv").open(newline="") as stream:
        figures = [(r["region"], r["product"], int(r["amount"])) for r in csv.DictReader(stream)]
    with sqlite3.connect(tmp_path / "data" / "report.db") as conn:
        loaded = conn.execute("SELECT region, product, amount FROM sales").fetchall()
    conn.close()
    assert sorted(loaded) == sorted(figures), "the seed script must match data/sales.csv"

    minimum = document["params"]["min_amount"]
    expected: dict[str, int] = {}
    for region, _, amount in figures:
        if amount >= minimum:
            expected[region] = expected.get(region, 0) + amount
    assert {row["region"]: row["total"] for row in outputs["totals"]} == expected
    region, product, amount = max(figures, key=lambda figure: figure[2])
    assert outputs["largest"] == {"region": region, "product": product, "amount": amount}


def _renderer(params: dict[str, Any]) -> Callable[[Any], Any]:
    env = NativeEnvironment()

    def render(value: Any) -> Any:
        if isinstance(value, str) and "{{" in value:
            return env.from_string(value).render(params=params)
        if isinstance(value, dict):
            return {key: render(item) for key, item in value.items()}
        if isinstance(value, list):
            return [render(item) for item in value]
        return value

    return render
