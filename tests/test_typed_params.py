"""Typed parameters (issue: real pipelines natively, item 9): a mapping with a `type` key declares
a parameter `{type, enum, default, description}`, as GitHub's workflow_dispatch inputs, Airflow's
Params and Argo's parameters with enum do.  A `string` parameter takes a `--param` text as it is
written; every given value is checked against the type and the enum before anything runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]

TYPED = """
version: 1
name: typed
params:
  flag: {type: string, default: "no"}
  env: {type: string, enum: [dev, staging, prod], default: dev, description: where it goes}
  shards: {type: integer, default: 2}
  ratio: {type: number, default: 0.5}
  dry: {type: boolean, default: false}
  tenants: {type: list, default: [acme]}
  limits: {type: object, default: {cpu: 1}}
  plain: {cpu: 2}
steps:
  - id: show
    uses: python
    with:
      call: "mod:show"
      args:
        - "{{ params.flag }}"
        - "{{ params.flag == 'true' }}"
        - "{{ params.env }}"
        - "{{ params.shards }}"
        - "{{ params.ratio }}"
        - "{{ params.dry }}"
        - "{{ params.tenants }}"
        - "{{ params.limits }}"
        - "{{ params.plain }}"
"""

MOD = """
def show(*args):
    return list(args)
"""


def run_typed(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, *args: str, **env: str
) -> list[object]:
    path = write_pipeline(TYPED, files={"mod.py": MOD})
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), *args, "--json", str(summary), env=env)
    assert result.code == 0 and no_traceback(result.output), result.output
    output = json.loads(summary.read_text())["steps"][0]["output"]
    assert isinstance(output, list)
    return output


def test_defaults_of_typed_and_plain_parameters(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    assert run_typed(run_cli, write_pipeline, tmp_path) == [
        "no",
        False,
        "dev",
        2,
        0.5,
        False,
        ["acme"],
        {"cpu": 1},
        {"cpu": 2},
    ]


def test_a_string_parameter_takes_the_text_as_written(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    """`--param flag=true` is the text "true" for a string parameter (YAML would read a
    boolean); the other types read the text as YAML, as untyped parameters do."""
    found = run_typed(
        run_cli,
        write_pipeline,
        tmp_path,
        *("--param", "flag=true", "--param", "env=prod", "--param", "shards=4"),
        *("--param", "ratio=3", "--param", "dry=true", "--param", "tenants=[a, b]"),
        *("--param", "limits={cpu: 8}", "--param", "plain=7"),
    )
    assert found == ["true", True, "prod", 4, 3, True, ["a", "b"], {"cpu": 8}, 7]


def test_an_environment_parameter_of_a_string_type_is_text_too(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    found = run_typed(
        run_cli,
        write_pipeline,
        tmp_path,
        PIPELINE_RUNNER_PARAM_FLAG="1.10",
        PIPELINE_RUNNER_PARAM_SHARDS="3",
    )
    assert found[0] == "1.10" and found[3] == 3


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("env=prood", "--param: error: env: 'prood' is not one of 'dev', 'staging', 'prod'"),
        ("shards=many", "shards: expected an integer, got string 'many'"),
        ("shards=2.5", "shards: expected an integer, got number 2.5"),
        ("dry=maybe", "dry: expected true or false, got string 'maybe'"),
        ("tenants=acme", "tenants: expected a list, got string 'acme'"),
        ("limits=[1]", "limits: expected a mapping, got a list"),
    ],
)
def test_a_given_value_that_does_not_fit_is_an_error_before_anything_runs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, given: str, message: str
) -> None:
    path = write_pipeline(TYPED, files={"mod.py": MOD})
    for command in ("validate", "run"):
        result = run_cli(command, str(path), "--param", given)
        assert result.code == 2 and no_traceback(result.output), result.output
        assert message in result.output
    assert not (tmp_path / "state").exists() or "show" not in result.output


def test_a_default_that_does_not_fit_its_declaration_is_located(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline("""
        version: 1
        name: bad-defaults
        params:
          n: {type: integer, default: many}
          env: {type: string, enum: [dev, prod], default: test}
          kind: {type: strng}
          other: {type: string, defualt: x}
        steps:
          - id: s
            uses: noop
        """)
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert (
        'p.yaml:6:16: error: params.kind.type: expected one of "string", "integer", '
        '"number", "boolean", "array", "list", "object", found string \'strng\' '
        "(did you mean 'string'?)" in result.output
    )
    assert "p.yaml:7:25: error: params.other.defualt: unknown key 'defualt'" in result.output
    fixed = path.read_text().replace("  kind: {type: strng}\n", "").replace("defualt", "default")
    path.write_text(fixed)
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert "p.yaml:4:31: error: params.n.default: expected an integer, got string 'many'" in (
        result.output
    )
    assert "p.yaml:5:51: error: params.env.default: 'test' is not one of 'dev', 'prod'" in (
        result.output
    )


def test_a_parameter_without_a_default_must_be_given(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline("""
        version: 1
        name: required
        params:
          release: {type: string, description: the tag to publish}
        steps:
          - id: s
            uses: shell
            with: {cmd: "echo {{ params.release }}"}
        """)
    result = run_cli("run", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert result.output.count("error") == 2  # the one error, and the count line
    assert (
        "p.yaml:4:3: error: params.release: parameter 'release' has no default: give it with "
        "--param release=VALUE" in result.output
    )
    summary = tmp_path / "s.json"
    result = run_cli("run", str(path), "--param", "release=007", "--json", str(summary))
    assert result.code == 0, result.output
    assert json.loads(summary.read_text())["steps"][0]["output"] == "007"


def test_a_params_file_value_is_checked_where_it_is_written(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TYPED, files={"mod.py": MOD, "values.yaml": "env: prod\nshards: x\n"})
    result = run_cli("run", str(path), "--params-file", str(tmp_path / "values.yaml"))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert "values.yaml:2:9: error: shards: expected an integer, got string 'x'" in result.output


def test_resume_keeps_a_string_parameter_as_text(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline("""
        version: 1
        name: resumed
        params:
          flag: {type: string, default: "no"}
        steps:
          - id: s
            uses: shell
            with: {cmd: "test -e ok && echo {{ params.flag == 'true' }}"}
        """)
    first = run_cli("run", str(path), "--param", "flag=true", "--progress", "plain")
    assert first.code == 1, first.output
    run_id = first.output.split("run ")[-1].split()[0]
    (tmp_path / "ok").touch()
    summary = tmp_path / "s.json"
    second = run_cli("resume", run_id, "--progress", "plain", "--json", str(summary))
    assert second.code == 0, second.output
    assert json.loads(summary.read_text())["steps"][0]["output"] == "true"


def test_an_inlined_pipelines_typed_parameters_are_checked(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    write_pipeline(
        """
        version: 1
        name: inner
        params:
          env: {type: string, enum: [dev, prod]}
        steps:
          - id: s
            uses: shell
            with: {cmd: "echo {{ params.env }}"}
        """,
        name="inner.yaml",
    )
    path = write_pipeline("""
        version: 1
        name: outer
        steps:
          - id: a
            uses: pipeline
            with: {file: inner.yaml, params: {env: test}}
          - id: b
            uses: pipeline
            with: {file: inner.yaml}
        """)
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert (
        "p.yaml:6:44: error: steps[0].with.params.env: 'test' is not one of 'dev', 'prod' "
        "(parameter 'env' is of type string)" in result.output
    )
    assert (
        "error: steps[1].with.params: inner.yaml has no default for parameter 'env'"
        in result.output
    )
