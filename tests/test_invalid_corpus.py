"""The corpus of invalid pipelines: one small file per kind of mistake.

`tests/pipelines/invalid/NAME.yaml` holds one mistake; `NAME.expected` the exact error line(s)
`runner validate` prints for it (`FILE:LINE:COLUMN: error: PATH: MESSAGE`, FILE relative to the
repository).  A change in wording, place or number of errors shows up here as a diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, RunCli, no_traceback

INVALID = REPO / "tests" / "pipelines" / "invalid"
CASES = sorted(p.stem for p in INVALID.glob("*.yaml"))


def rel(name: str) -> str:
    return f"tests/pipelines/invalid/{name}.yaml"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


def expected(name: str) -> list[str]:
    return (INVALID / f"{name}.expected").read_text(encoding="utf-8").splitlines()


def test_corpus_is_large_and_complete() -> None:
    assert len(CASES) >= 30
    missing = [n for n in CASES if not (INVALID / f"{n}.expected").exists()]
    assert not missing, f"cases without a .expected file: {missing}"
    orphans = [p.name for p in INVALID.glob("*.expected") if p.stem not in CASES]
    assert not orphans, f".expected files without a case: {orphans}"


@pytest.mark.parametrize("name", CASES)
def test_invalid_file_reports_expected_errors(name: str, run_cli: RunCli) -> None:
    result = run_cli("validate", rel(name), cwd=REPO, timeout=30)
    assert result.code == 2, result.output
    assert no_traceback(result.output), result.output
    assert result.stdout == ""
    assert error_lines(result.stderr) == expected(name)


def test_every_expected_line_names_its_file_and_place() -> None:
    for name in CASES:
        for line in expected(name):
            assert line.startswith(rel(name) + ":"), line
            where = line.split(": error: ")[0].removeprefix(rel(name) + ":")
            parts = where.split(":")
            assert len(parts) == 2 and all(p.isdigit() and int(p) >= 1 for p in parts), line


def test_many_files_at_once_report_each_files_errors(run_cli: RunCli) -> None:
    result = run_cli("validate", *(rel(n) for n in CASES), cwd=REPO, timeout=60)
    assert result.code == 2
    assert no_traceback(result.output)
    lines = error_lines(result.stderr)
    # Every file's errors, in the order the files were given.
    assert lines == [line for n in CASES for line in expected(n)]
    total = sum(len(expected(n)) for n in CASES)
    assert f"{total} errors found" in result.stderr


def test_valid_and_invalid_files_together(run_cli: RunCli) -> None:
    result = run_cli("validate", "pipelines/hello.yaml", rel("unknown_need"), cwd=REPO)
    assert result.code == 2
    assert "pipelines/hello.yaml: ok" in result.stdout
    assert error_lines(result.stderr) == expected("unknown_need")


def test_json_format(run_cli: RunCli) -> None:
    names = ["unknown_need", "cycle_3", "plugin_with_schema"]
    result = run_cli(
        "validate", "--format", "json", "pipelines/hello.yaml", *(rel(n) for n in names), cwd=REPO
    )
    assert result.code == 2
    assert no_traceback(result.output)
    report = json.loads(result.stdout)
    assert isinstance(report, list)
    assert [r["file"] for r in report] == ["pipelines/hello.yaml", *(rel(n) for n in names)]
    ok, *bad = report
    assert ok["valid"] is True and ok["errors"] == []
    for entry, name in zip(bad, names, strict=True):
        assert entry["valid"] is False
        assert entry["errors"], entry
        for error in entry["errors"]:
            assert set(error) == {"file", "line", "column", "path", "message"}
            assert error["file"] == rel(name)
            assert isinstance(error["line"], int) and error["line"] >= 1
            assert isinstance(error["column"], int) and error["column"] >= 1
            assert isinstance(error["path"], str) and isinstance(error["message"], str)
        # The JSON says exactly what the text says.
        texts = [
            f"{e['file']}:{e['line']}:{e['column']}: error: "
            + (f"{e['path']}: " if e["path"] else "")
            + e["message"]
            for e in entry["errors"]
        ]
        assert texts == expected(name)
    unknown = bad[0]["errors"][0]
    assert (unknown["line"], unknown["column"], unknown["path"]) == (9, 9, "steps[1].needs[0]")
    assert "did you mean 'extract'" in unknown["message"]


def test_run_of_an_invalid_file_runs_nothing(run_cli: RunCli, tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    canary = tmp_path / "canary"
    pipeline.write_text(
        "version: 1\n"
        "name: p\n"
        "steps:\n"
        "  - id: touch\n"
        "    uses: shell\n"
        f"    with: {{cmd: [touch, {canary}]}}\n"
        "  - id: broken\n"
        "    uses: shell\n"
        "    needs: [tuoch]\n"
        "    with: {cmd: echo hi}\n"
    )
    state = tmp_path / "state"
    result = run_cli("run", str(pipeline), "--state-dir", str(state), cwd=tmp_path)
    assert result.code == 2, result.output
    assert no_traceback(result.output)
    assert "unknown step 'tuoch' (did you mean 'touch'?)" in result.stderr
    assert not canary.exists()
    assert not any(state.glob("runs/*")), "an invalid pipeline must not create a run"


@pytest.mark.parametrize("name", ["python_tag", "template_escape", "format_escape"])
def test_run_of_a_dangerous_file_exits_2(name: str, run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("run", str(INVALID / f"{name}.yaml"), "--state-dir", str(tmp_path / "s"))
    assert result.code == 2
    assert no_traceback(result.output)
    assert not Path("/tmp/runner-canary-python-tag").exists()


def test_the_plain_schema_check_reports_the_same(run_cli: RunCli) -> None:
    """PIPELINE_RUNNER_NO_SHORTCUTS=1: jsonschema alone answers, the same lines for each case."""
    env = {"PIPELINE_RUNNER_NO_SHORTCUTS": "1"}
    result = run_cli("validate", *(rel(n) for n in CASES), cwd=REPO, env=env, timeout=60)
    assert result.code == 2
    assert error_lines(result.stderr) == [line for n in CASES for line in expected(n)]


def test_the_switch_bypasses_the_compiled_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled check that says yes to everything hides an error; the switch does not ask it."""
    from pipeline_runner import schema
    from pipeline_runner.loader import load_text

    doc = load_text("version: 1\nname: p\nsteps: 7\n", "p.yaml")
    data, source = doc.data, doc.source
    compiled = schema._compiled(schema.pipeline_schema())
    monkeypatch.setattr(schema, "_compiled", lambda s: (lambda d: True, compiled[1]))
    monkeypatch.delenv("PIPELINE_RUNNER_NO_SHORTCUTS", raising=False)
    assert schema.validate_document(data, source) == []
    monkeypatch.setenv("PIPELINE_RUNNER_NO_SHORTCUTS", "1")
    [diagnostic] = schema.validate_document(data, source)
    assert diagnostic.path == "steps"
