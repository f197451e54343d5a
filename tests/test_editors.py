"""Editors: the schema as yaml-language-server and Ajv read it. `runner schema --plugins` adds
each installed plugin's `with` schema (runner-sqlite is installed in the dev venv), the schema
compiles in Ajv's strict mode (no `type` lists), the example pipelines point at the published
schema, and the descriptions say what the runner does."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, REPO, RunCli
from jsonschema import Draft202012Validator

from pipeline_runner.loader import load_text

PUBLISHED = (
    "https://raw.githubusercontent.com/pipeline-runner/pipeline-runner/main/"
    "pipeline_runner/data/pipeline.schema.json"
)
EXAMPLES = sorted(PIPELINES.glob("*.yaml"))
CACHE = REPO / ".cache" / "ajv"

SHELL_TYPO = "version: 1\nname: p\nsteps:\n  - id: a\n    uses: shell\n    with: {cmdd: ls}\n"
SQLITE_TYPO = (
    "version: 1\nname: p\nsteps:\n  - id: q\n    uses: sqlite\n"
    "    with: {databse: a.db, query: select 1}\n"
)
SQLITE_GOOD = (
    "version: 1\nname: p\nsteps:\n  - id: q\n    uses: sqlite\n"
    "    with: {database: a.db, query: select 1}\n"
)
COMPENSATE_TYPO = (
    "version: 1\nname: p\nsteps:\n  - id: a\n    uses: noop\n"
    "    compensate: {uses: shell, with: {cmdd: ./undo.sh}}\n"
)
NEITHER = "version: 1\nname: p\nsteps:\n  - id: q\n    with: {cmd: ls}\n"


def schema_of(run_cli: RunCli, *args: str) -> dict[str, Any]:
    result = run_cli("schema", *args)
    assert result.code == 0, result.output
    assert result.stderr == ""
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def data_of(text: str) -> Any:
    return load_text(text, "p.yaml").data


def test_schema_plugins_adds_each_plugins_with_schema_chosen_by_uses(run_cli: RunCli) -> None:
    schema = schema_of(run_cli, "--plugins")
    Draft202012Validator.check_schema(schema)
    sqlite = schema["$defs"]["plugin_sqlite"]
    assert {"database", "query"} <= set(sqlite["properties"])
    rules = {r["if"]["properties"]["uses"]["const"]: r for r in schema["$defs"]["step"]["allOf"]}
    assert {"shell", "python", "noop", "pipeline", "sqlite", "checksum"} <= set(rules)
    assert rules["sqlite"]["if"]["required"] == ["uses"]
    assert rules["sqlite"]["then"]["properties"]["with"] == {"$ref": "#/$defs/plugin_sqlite"}
    assert "sqlite" in schema["$defs"]["step"]["properties"]["uses"]["examples"]


def test_an_editor_check_flags_a_wrong_with_key_only_with_the_plugins(run_cli: RunCli) -> None:
    plain = Draft202012Validator(schema_of(run_cli))
    full = Draft202012Validator(schema_of(run_cli, "--plugins"))
    typos = ((SHELL_TYPO, "cmdd"), (SQLITE_TYPO, "databse"), (COMPENSATE_TYPO, "cmdd"))
    for text, key in typos:
        assert plain.is_valid(data_of(text))  # the plain schema knows no plugin's `with`
        errors = list(full.iter_errors(data_of(text)))
        assert errors, text
        assert any(key in e.message for e in _leaves(errors)), [e.message for e in errors]
    assert full.is_valid(data_of(SQLITE_GOOD))
    assert not full.is_valid(data_of(NEITHER))  # exactly one of `uses` and `template`
    for example in EXAMPLES:
        errors = [e.message for e in full.iter_errors(data_of(example.read_text()))]
        assert errors == [], (example.name, errors)


def _leaves(errors: list[Any]) -> list[Any]:
    out = []
    for error in errors:
        out.append(error)
        out.extend(_leaves(list(error.context or ())))
    return out


def test_the_published_schema_has_no_type_lists_and_validate_still_names_every_type(
    run_cli: RunCli, tmp_path: Path
) -> None:
    def type_lists(node: Any, where: str) -> list[str]:
        if isinstance(node, dict):
            here = [where] if isinstance(node.get("type"), list) else []
            return here + [p for k, v in node.items() for p in type_lists(v, f"{where}/{k}")]
        if isinstance(node, list):
            return [p for i, v in enumerate(node) for p in type_lists(v, f"{where}/{i}")]
        return []

    assert type_lists(schema_of(run_cli), "#") == []
    assert type_lists(schema_of(run_cli, "--plugins"), "#") == []
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: p\nsteps:\n  - id: a\n    uses: noop\n    needs: 3\n"
    )
    result = run_cli("validate", "p.yaml")
    assert result.code == 2
    assert "steps[0].needs: expected a string or a list, found integer 3" in result.stderr


def test_the_examples_point_at_the_published_schema() -> None:
    schema = json.loads((REPO / "pipeline_runner" / "data" / "pipeline.schema.json").read_text())
    assert schema["$id"] == PUBLISHED
    for example in EXAMPLES:
        first = example.read_text().splitlines()[0]
        assert first == f"# yaml-language-server: $schema={PUBLISHED}", example.name
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert "../schemas/" not in page.read_text(), page.name


def test_step_name_is_described_as_what_the_runner_does_with_it(
    run_cli: RunCli, tmp_path: Path
) -> None:
    text = schema_of(run_cli)["$defs"]["step"]["properties"]["name"]["description"]
    assert "does not use it" in text
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: p\nsteps:\n  - id: a\n    name: Display Me\n    uses: noop\n"
    )
    result = run_cli("run", "p.yaml", "--progress", "plain")
    assert result.code == 0, result.output
    assert "Display Me" not in result.output


def test_validate_checks_a_compensations_with_as_the_editor_does(
    run_cli: RunCli, tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(COMPENSATE_TYPO)
    result = run_cli("validate", "p.yaml")
    assert result.code == 2, result.output
    assert "p.yaml:6:38: error: steps[0].compensate.with.cmdd: shell: unknown key 'cmdd'" in (
        result.stderr
    )


def test_the_key_description_says_an_invalid_default_key_is_an_error(
    run_cli: RunCli, tmp_path: Path
) -> None:
    text = schema_of(run_cli)["$defs"]["step"]["properties"]["key"]["description"]
    assert "is an error: set `key`" in text
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: p\nsteps:\n  - id: a\n    uses: noop\n    for_each: [a b, c]\n"
    )
    result = run_cli("validate", "p.yaml")
    assert result.code == 2
    assert "steps[0].for_each[0]: invalid key 'a b'" in result.stderr
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: p\nsteps:\n  - id: a\n    uses: noop\n    for_each: [a b, c]\n"
        "    key: \"{{ item | replace(' ', '-') }}\"\n"
    )
    assert run_cli("validate", "p.yaml").code == 0


# -- Ajv, the validator of many editors and of SchemaStore's checks -------------------------------

AJV_SCRIPT = """
const Ajv2020 = require("ajv/dist/2020");
const fs = require("fs");
const [schemaFile, ...docs] = process.argv.slice(2);
const ajv = new Ajv2020({strict: true, allErrors: true});
const validate = ajv.compile(JSON.parse(fs.readFileSync(schemaFile, "utf8")));
const out = {};
for (const f of docs) {
  out[f] = validate(JSON.parse(fs.readFileSync(f, "utf8"))) ? [] : validate.errors;
}
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def ajv() -> Path:
    """A folder with Ajv installed from npm (cached under .cache/, not committed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Ajv's check needs node and npm, which are not installed")
    if not (CACHE / "node_modules" / "ajv" / "dist" / "2020.js").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "ajv@8"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"npm could not install ajv (offline?): {proc.stderr.strip()[-300:]}")
    (CACHE / "check.js").write_text(AJV_SCRIPT)
    return CACHE


def ajv_check(ajv: Path, schema: dict[str, Any], docs: dict[str, str], tmp: Path) -> Any:
    (tmp / "schema.json").write_text(json.dumps(schema))
    files = []
    for name, text in docs.items():
        (tmp / f"{name}.json").write_text(json.dumps(data_of(text)))
        files.append(str(tmp / f"{name}.json"))
    proc = subprocess.run(
        ["node", str(ajv / "check.js"), str(tmp / "schema.json"), *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr  # strict mode refuses the schema with an error
    return {Path(k).stem: v for k, v in json.loads(proc.stdout).items()}


def test_the_schemas_compile_in_ajv_strict_mode_and_check_with(
    ajv: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    docs = {p.stem: p.read_text() for p in EXAMPLES}
    plain = ajv_check(ajv, schema_of(run_cli), docs, tmp_path)
    assert all(errors == [] for errors in plain.values()), plain
    docs.update(shell_typo=SHELL_TYPO, sqlite_typo=SQLITE_TYPO, sqlite_good=SQLITE_GOOD)
    docs.update(compensate_typo=COMPENSATE_TYPO)
    full = ajv_check(ajv, schema_of(run_cli, "--plugins"), docs, tmp_path)
    flagged = sorted(name for name, errors in full.items() if errors)
    assert flagged == ["compensate_typo", "shell_typo", "sqlite_typo"], full
    extra = {e["params"].get("additionalProperty") for e in full["sqlite_typo"]}
    assert "databse" in extra


def test_the_editors_page_gives_the_published_url_and_the_convention(
    run_cli: RunCli, tmp_path: Path
) -> None:
    page = (REPO / "docs" / "editors.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", page, re.DOTALL)]
    settings, catalog = blocks
    assert settings["yaml.schemas"] == {PUBLISHED: catalog["fileMatch"]}
    assert catalog["url"] == PUBLISHED
    # A file the catalog matches is a pipeline to the hook by its name alone.
    (tmp_path / "etl.runner.yml").write_text("version: 1\nname: p\nstesp: []\n")
    assert any(fnmatch.fnmatch("etl.runner.yml", glob) for glob in catalog["fileMatch"])
    result = run_cli("validate", "--skip-non-pipelines", "etl.runner.yml")
    assert result.code == 2
    assert "etl.runner.yml:3:1: error: stesp: unknown key 'stesp'" in result.stderr
