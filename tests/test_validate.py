"""`runner validate`, `runner schema` and the loading rules of SPEC sections 1-3, as a user sees
them: the example pipelines are valid, the schema is published and documented, mistakes come
with a did-you-mean, cycles are printed as real cycles, parameters take their documented types
and precedence, and YAML's surprises (merge keys, `x-` blocks, duplicate keys, 1.1 booleans,
bombs, deep nesting, huge files) are handled."""

from __future__ import annotations

import itertools
import json
import re
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PIPELINES, REPO, RunCli, no_traceback
from jsonschema import Draft202012Validator

from pipeline_runner.errors import PipelineError
from pipeline_runner.loader import load_text
from pipeline_runner.model import Deferred
from pipeline_runner.planner import Planner

WritePipeline = Callable[..., Path]
EXAMPLES = sorted(PIPELINES.glob("*.yaml"))


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


def plan_json(run_cli: RunCli, path: Path, *args: str, **kwargs: Any) -> dict[str, Any]:
    result = run_cli("graph", "--json", str(path), *args, **kwargs)
    assert result.code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def plan_text(text: str) -> Any:
    return Planner().plan_document(load_text(text, "f.yaml"))


# -- the examples and the schema ---------------------------------------------------------------


def test_every_example_pipeline_is_valid(run_cli: RunCli) -> None:
    names = [str(p.relative_to(REPO)) for p in EXAMPLES]
    assert len(names) >= 3
    result = run_cli("validate", *names, cwd=REPO)
    assert result.code == 0, result.output
    assert errors_of(result.stderr) == []
    lines = result.stdout.splitlines()
    assert len(lines) == len(names)
    for name, line in zip(names, lines, strict=True):
        assert re.fullmatch(rf"{re.escape(name)}: ok \(\d+ steps?\)", line), line


def test_schema_command_prints_the_published_draft_2020_12_schema(run_cli: RunCli) -> None:
    result = run_cli("schema")
    assert result.code == 0
    printed = json.loads(result.stdout)
    published = json.loads((REPO / "schemas" / "pipeline.schema.json").read_text())
    assert printed == published
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(printed)
    for example in EXAMPLES:
        assert Draft202012Validator(printed).is_valid(load_text(example.read_text()).data)


def _subschemas(schema: Any, where: str) -> list[tuple[str, Any]]:
    """Every (place, schema) that documents a property, a `$defs` entry or an item."""
    out: list[tuple[str, Any]] = []
    if not isinstance(schema, dict):
        return out
    for group in ("properties", "patternProperties", "$defs"):
        for name, sub in schema.get(group, {}).items():
            out.append((f"{where}.{group}.{name}", sub))
            out.extend(_subschemas(sub, f"{where}.{group}.{name}"))
    for key in ("additionalProperties", "items"):
        sub = schema.get(key)
        if isinstance(sub, dict) and sub:
            out.append((f"{where}.{key}", sub))
            out.extend(_subschemas(sub, f"{where}.{key}"))
    for i, branch in enumerate(schema.get("anyOf", ())):  # one branch per type: documented
        out.extend(_subschemas(branch, f"{where}.anyOf.{i}"))  # by its parent, its keys not
    return out


def test_every_property_in_the_schema_has_a_description() -> None:
    schema = json.loads((REPO / "schemas" / "pipeline.schema.json").read_text())
    assert schema.get("description")
    places = _subschemas(schema, "#")
    assert len(places) > 50

    def documented(sub: dict[str, Any]) -> bool:
        if str(sub.get("description", "")).strip():
            return True
        # `{"$ref": "#/$defs/step"}` is documented where it points.
        ref = sub.get("$ref", "")
        return ref.startswith("#/$defs/") and documented(schema["$defs"][ref.split("/")[-1]])

    undocumented = [p for p, sub in places if not documented(sub)]
    assert not undocumented, undocumented


# -- did you mean ---------------------------------------------------------------------------------

DID_YOU_MEAN = {
    "top-level key": ("stesp: []\nsteps: [{id: a, uses: noop}]", "unknown key 'stesp'", "steps"),
    "step key": (
        "steps:\n  - id: a\n    uses: noop\n    timout: 5s",
        "steps[0].timout: unknown key 'timout'",
        "timeout",
    ),
    "key at depth": (
        "steps:\n  - id: a\n    uses: noop\n    retries: {mx: 2}",
        "steps[0].retries.mx: unknown key 'mx'",
        "max",
    ),
    "retry kind": (
        "steps:\n  - id: a\n    uses: noop\n    retries: {on: [crahs]}",
        "steps[0].retries.on[0]: expected one of timeout, crash, error",
        "crash",
    ),
    "plugin": ("steps:\n  - id: a\n    uses: pyhton", "unknown plugin 'pyhton'", "python"),
    "plugin argument": (
        "steps:\n  - id: a\n    uses: shell\n    with: {cmd: ls, cdw: /}",
        "steps[0].with.cdw: shell: unknown key 'cdw'",
        "cwd",
    ),
    "need": (
        "steps:\n  - id: build\n    uses: noop\n  - id: test\n    uses: noop\n    needs: biuld",
        "steps[1].needs: unknown step 'biuld'",
        "build",
    ),
    "steps reference": (
        "steps:\n  - id: build\n    uses: noop\n  - id: test\n    uses: noop\n    needs: build\n"
        "    with: {x: '{{ steps.biuld.output }}'}",
        "unknown step 'biuld' in steps.biuld",
        "build",
    ),
    "name in a value": (
        "steps:\n  - id: a\n    uses: noop\n    with: {x: '{{ param.x }}'}",
        "undefined name 'param'",
        "params",
    ),
    "parameter": (
        "params: {region: eu}\nsteps:\n  - id: a\n    uses: noop\n"
        "    with: {x: '{{ params.regin }}'}",
        "unknown parameter 'regin' in params.regin",
        "region",
    ),
    "template": (
        "templates: {etl: {steps: [{id: x, uses: noop}]}}\nsteps:\n  - id: a\n    template: elt",
        "unknown template 'elt'",
        "etl",
    ),
    "pool": (
        "pools: {warehouse: 1}\nsteps:\n  - id: a\n    uses: noop\n    pool: warehose",
        "unknown pool 'warehose'",
        "warehouse",
    ),
}


@pytest.mark.parametrize("case", sorted(DID_YOU_MEAN))
def test_mistakes_come_with_a_did_you_mean(
    case: str, run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    body, message, suggestion = DID_YOU_MEAN[case]
    path = write_pipeline(f"version: 1\nname: p\n{body}\n")
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    assert no_traceback(result.output)
    lines = errors_of(result.stderr)
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert lines[0].endswith(f"(did you mean '{suggestion}'?)")
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: error: ", lines[0])


def test_unknown_param_on_the_command_line_has_a_did_you_mean(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        "version: 1\nname: p\nparams: {tenants: []}\nsteps: [{id: a, uses: noop}]"
    )
    result = run_cli("validate", str(path), "--param", "tenats=[a]")
    assert result.code == 2
    assert "unknown parameter 'tenats' (did you mean 'tenants'?)" in result.stderr


def test_validate_reports_every_error_not_only_the_first(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: p
        steps:
          - id: a
            uses: shel
          - id: b
            uses: noop
            needs: [c]
            with: {x: "{{ parms.x }}"}
          - id: b
            uses: noop
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2
    lines = errors_of(result.stderr)
    assert [line.split(": error: ")[0].removeprefix(f"{path}:") for line in lines] == [
        "5:11",
        "8:13",
        "9:15",
        "10:9",
    ], "errors are printed in file order"
    assert "unknown plugin 'shel' (did you mean 'shell'?)" in lines[0]
    assert "unknown step 'c' (steps here: a, b)" in lines[1]
    assert "undefined name 'parms' (did you mean 'params'?)" in lines[2]
    assert "duplicate step id 'b' (first used on line 6)" in lines[3]


def test_every_schema_error_is_reported(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        """
        version: "1"
        name: p
        steps:
          - id: a
            uses: noop
            timeout: soon
            priority: high
          - id: 2b
            uses: noop
            retries: {max: -1, delay: later}
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2
    assert [line.split(": error: ")[1].split(":")[0] for line in errors_of(result.stderr)] == [
        "version",
        "steps[0].timeout",
        "steps[0].priority",
        "steps[1].id",
        "steps[1].retries.max",
        "steps[1].retries.delay",
    ]


# -- cycles ---------------------------------------------------------------------------------------


def _needs_of(path: Path) -> dict[str, set[str]]:
    data = load_text(path.read_text()).data
    out = {}
    for step in data["steps"]:
        needs = step.get("needs", [])
        out[step["id"]] = {needs} if isinstance(needs, str) else set(needs)
    return out


def test_a_cycle_is_printed_as_a_real_cycle(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        """
        version: 1
        name: p
        steps:
          - {id: start, uses: noop}
          - {id: a, uses: noop, needs: [start, d]}
          - {id: b, uses: noop, needs: a}
          - {id: c, uses: noop, needs: [b, start]}
          - {id: d, uses: noop, needs: c}
          - {id: after, uses: noop, needs: d}
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2
    lines = errors_of(result.stderr)
    assert len(lines) == 1, lines
    match = re.search(r"dependency cycle: ([\w -]+?>[\w >-]+)", lines[0])
    assert match, lines[0]
    cycle = [s.strip() for s in match.group(1).split("->")]
    assert cycle == ["a", "b", "c", "d", "a"]
    needs = _needs_of(path)
    for before, after in itertools.pairwise(cycle):
        assert before in needs[after], f"{after} does not need {before}"
    assert lines[0].startswith(f"{path}:5:5: error: steps[1]: ")


def test_a_self_need_and_a_two_cycle(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        "version: 1\nname: p\nsteps:\n  - {id: a, uses: noop, needs: a}\n"
        "  - {id: b, uses: noop, needs: c}\n  - {id: c, uses: noop, needs: b}\n"
    )
    result = run_cli("validate", str(path))
    lines = errors_of(result.stderr)
    assert len(lines) == 2, lines
    assert "step 'a' needs itself" in lines[0]
    assert "dependency cycle: b -> c -> b" in lines[1]


# -- parameters -----------------------------------------------------------------------------------

PARAMS_PIPELINE = """
version: 1
name: p
params:
  n: 1
  tenants: [x]
  region: eu
  flag: false
steps:
  - id: a
    uses: noop
    with:
      n: "{{ params.n }}"
      tenants: "{{ params.tenants }}"
"""


def test_param_values_are_read_as_yaml(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(PARAMS_PIPELINE)
    data = plan_json(
        run_cli,
        path,
        "--param",
        "n=3",
        "--param",
        "tenants=[a,b]",
        "--param",
        "region=003",
        "--param",
        "flag=true",
    )
    assert data["params"] == {"n": 3, "tenants": ["a", "b"], "region": 3, "flag": True}
    assert data["nodes"][0]["with"] == {"n": 3, "tenants": ["a", "b"]}
    text = plan_json(run_cli, path, "--param", "region='003'", "--param", "n=three")["params"]
    assert text["region"] == "003" and text["n"] == "three"


def test_param_precedence(run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path) -> None:
    """defaults < --params-file < PIPELINE_RUNNER_PARAM_<NAME> < --param (SPEC 3)."""
    path = write_pipeline(PARAMS_PIPELINE)
    params_file = tmp_path / "params.yaml"
    params_file.write_text("n: 10\ntenants: [from-file]\nregion: file\n")
    json_file = tmp_path / "params.json"
    json_file.write_text('{"n": 20}')
    env = {"PIPELINE_RUNNER_PARAM_N": "30", "PIPELINE_RUNNER_PARAM_TENANTS": "[from-env, two]"}

    assert plan_json(run_cli, path)["params"]["n"] == 1
    from_file = plan_json(run_cli, path, "--params-file", str(params_file))["params"]
    assert from_file == {"n": 10, "tenants": ["from-file"], "region": "file", "flag": False}
    assert plan_json(run_cli, path, "--params-file", str(json_file))["params"]["n"] == 20
    from_env = plan_json(run_cli, path, "--params-file", str(params_file), env=env)["params"]
    assert from_env == {"n": 30, "tenants": ["from-env", "two"], "region": "file", "flag": False}
    top = plan_json(run_cli, path, "--params-file", str(params_file), "--param", "n=40", env=env)[
        "params"
    ]
    assert top == {"n": 40, "tenants": ["from-env", "two"], "region": "file", "flag": False}


def test_params_file_with_an_unknown_name_is_located(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(PARAMS_PIPELINE)
    params_file = tmp_path / "params.yaml"
    params_file.write_text("n: 2\nregoin: us\n")
    result = run_cli("validate", str(path), "--params-file", str(params_file))
    assert result.code == 2
    assert errors_of(result.stderr) == [
        f"{params_file}:2:1: error: regoin: unknown parameter 'regoin' (did you mean 'region'?)"
    ]


# -- YAML rules ------------------------------------------------------------------------------


def test_x_blocks_and_merge_keys(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        """
        version: 1
        name: p
        x-defaults: &defaults
          retries: 2
          timeout: 30s
        x-more: &more
          priority: 5
          timeout: 1m
        x-anything: {whatever: [1, 2], nested: {ok: true}}
        steps:
          - id: a
            uses: noop
            <<: *defaults
          - id: b
            uses: noop
            <<: [*defaults, *more]
            timeout: 5s
          - id: c
            uses: noop
            <<: *more
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 0, result.output
    nodes = {n["id"]: n for n in plan_json(run_cli, path)["nodes"]}
    assert (nodes["a"]["retries"], nodes["a"]["timeout"]) == (2, 30.0)
    # Explicit keys win over merged ones; earlier sources in a list win over later ones.
    assert (nodes["b"]["retries"], nodes["b"]["timeout"], nodes["b"]["priority"]) == (2, 5.0, 5)
    assert (nodes["c"]["timeout"], nodes["c"]["priority"]) == (60.0, 5)


def test_duplicate_keys_at_depth_name_both_lines(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: p
        steps:
          - id: a
            uses: shell
            with:
              cmd: echo one
              env:
                A: "1"
                B: "2"
                A: "3"
              cmd: echo two
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2
    assert errors_of(result.stderr) == [
        f"{path}:11:9: error: steps[0].with.env.A: duplicate key 'A' (first defined on line 9)",
        f"{path}:12:7: error: steps[0].with.cmd: duplicate key 'cmd' (first defined on line 7)",
    ]


def test_yaml_1_1_words_stay_strings(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        """
        version: 1
        name: p
        params:
          on: push
          answer: NO
          country: no
          enabled: yes
          off: Off
          y: n
          octal: 010
          when: 2024-01-02
        steps:
          - {id: a, uses: noop}
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 0, result.output
    assert plan_json(run_cli, path)["params"] == {
        "on": "push",
        "answer": "NO",
        "country": "no",
        "enabled": "yes",
        "off": "Off",
        "y": "n",
        "octal": 10,
        "when": "2024-01-02",
    }


def test_a_yaml_1_1_boolean_where_true_is_meant_says_what_to_write(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        "version: 1\nname: p\nsteps:\n  - {id: a, uses: noop, continue_on_error: on}"
    )
    result = run_cli("validate", str(path))
    assert errors_of(result.stderr) == [
        f"{path}:4:44: error: steps[0].continue_on_error: expected true or false, found string "
        "'on' (YAML 1.2 reads on as a string; write true)"
    ]


def test_a_number_where_a_string_is_meant_suggests_quoting(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline("version: 1\nname: 1.10\nsteps:\n  - {id: a, uses: noop}")
    result = run_cli("validate", str(path))
    assert errors_of(result.stderr) == [
        f"{path}:2:7: error: name: expected a string, found number 1.1 "
        "(YAML reads 1.10 as a number; quote it: '1.10')"
    ]


# -- bombs and limits (in-process, where time and memory are measured) -------------------------


def _load_error(text: str) -> str:
    with pytest.raises(PipelineError) as info:
        plan_text(text)
    return str(info.value)


@contextmanager
def bounded(seconds: float, megabytes: float = 64) -> Iterator[None]:
    """The block takes at most `seconds` of CPU (so a busy machine cannot fail it) and its
    Python allocations peak under `megabytes`."""
    tracemalloc.start()
    start = time.process_time()
    try:
        yield
    finally:
        took = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    assert took < seconds, f"took {took:.2f}s of CPU"
    assert peak < megabytes, f"allocated up to {peak:.0f} MiB"


def test_an_alias_bomb_is_refused_fast() -> None:
    lines = [
        "version: 1",
        "name: bomb",
        'x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol"]',
    ]
    for prev, name in zip("abcdefghi", "bcdefghij", strict=True):
        lines.append(f"x-{name}: &{name} [" + ", ".join([f"*{prev}"] * 8) + "]")
    lines += ["steps:", "  - id: a", "    uses: noop", "    with: {x: *j}"]
    _load_error("\n".join(lines))  # warm up: the limit is about parsing, not imports
    with bounded(0.1, 8):
        message = _load_error("\n".join(lines))
    assert "an alias bomb?" in message


@pytest.mark.parametrize("depth", [100, 10_000, 50_000])
@pytest.mark.parametrize("style", ["flow", "block", "mapping"])
def test_deep_nesting_is_a_clear_error(depth: int, style: str) -> None:
    head = "version: 1\nname: deep\nsteps: [{id: a, uses: noop}]\nx-deep: "
    if style == "flow":
        text = head + "[" * depth + "]" * depth
    elif style == "block":
        text = head + "\n  " + "- " * depth + "1"
    else:
        text = head + "{a: " * depth + "1" + "}" * depth
    with bounded(1):
        message = _load_error(text)
    assert "nesting is deeper than the limit of 64 levels" in message
    # The same diagnostic, at the same place, whichever parser reads the file: the pure-Python
    # one has no nesting limit of its own; libyaml's (1,000 flow levels since PyYAML 6.0.3's
    # wheels) stops before the composer sees an event.
    located = re.compile(r"^f\.yaml:\d+:\d+: error: x-deep(\[0\]|\.a)\1\1\.\.\.: nesting is deeper")
    assert located.match(message), message
    if depth <= 10_000:
        with pytest.raises(PipelineError) as pure:
            load_text(text, "f.yaml", parser_class=yaml.SafeLoader)
        assert str(pure.value) == message


def test_a_file_over_the_size_limit_is_refused_before_parsing(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline("version: 1\nname: p\nsteps: [{id: a, uses: noop}]\n" + "#" * 5000 + "\n")
    result = run_cli("validate", "--max-file-size", "1000", str(path))
    assert result.code == 2
    size = path.stat().st_size
    assert errors_of(result.stderr) == [
        f"{path}: error: file is {size:,} bytes, over the limit of 1,000 "
        "(raise it with --max-file-size)"
    ]
    assert run_cli("validate", "--max-file-size", "10000", str(path)).code == 0


def test_a_python_tag_never_runs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    path = write_pipeline(
        "version: 1\nname: p\nsteps:\n  - id: a\n    uses: noop\n"
        f"    with: {{x: !!python/object/apply:os.system ['touch {canary}']}}\n"
    )
    result = run_cli("run", str(path))
    assert result.code == 2
    assert "unsupported YAML tag '!!python/object/apply:os.system'" in result.stderr
    assert not canary.exists()


def test_bytes_that_are_not_utf8(run_cli: RunCli, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nname: p\ndescription: caf\xe9\nsteps: [{id: a, uses: noop}]\n")
    result = run_cli("validate", str(path))
    assert result.code == 2
    assert errors_of(result.stderr) == [
        f"{path}:3:17: error: file is not valid UTF-8 (byte 0xe9 at offset 35)"
    ]


@pytest.mark.parametrize(
    "expression",
    [
        "'a' * 10**9",
        "2 ** (10 ** 8)",
        "range(10**9) | list",
        "'%-1000000000s' % 'a'",
        "'{:>1000000000}'.format(1)",
        "['a' * 1000000] * 1000",
    ],
)
def test_template_bombs_are_errors_in_time(expression: str) -> None:
    text = (
        "version: 1\nname: p\nsteps:\n  - id: bomb\n    uses: noop\n"
        f'    with: {{x: "{{{{ {expression} }}}}"}}\n'
    )
    with bounded(2):
        message = _load_error(text)
    assert "f.yaml:6:15: error: steps[0].with.x: " in message


def test_doubling_in_a_loop_is_an_error_in_bounded_time() -> None:
    value = (
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"
    )
    with bounded(2):
        message = _load_error(
            f'version: 1\nname: p\nsteps:\n  - id: a\n    uses: noop\n    with: {{x: "{value}"}}\n'
        )
    assert "over the limit" in message


# -- what the planner keeps for the run ---------------------------------------------------------


def test_top_level_env_values_rendered_at_run_time_reach_every_step() -> None:
    plan = plan_text(
        "version: 1\nname: p\nparams: {who: me}\n"
        "env: {RUN: '{{ run.id }}', WHO: '{{ params.who }}', PLAIN: x}\n"
        "steps:\n  - {id: a, uses: noop, env: {PLAIN: y}}\n"
    )
    env = plan.nodes["a"].env
    assert env["RUN"] == Deferred("{{ run.id }}")
    assert (env["WHO"], env["PLAIN"]) == ("me", "y")


def test_a_param_holding_braces_is_not_rendered_twice(write_pipeline: WritePipeline) -> None:
    path = write_pipeline(
        "version: 1\nname: p\nparams: {x: a}\nenv: {A: '{{ params.x }}'}\n"
        "steps: [{id: a, uses: noop}]\n"
    )
    from pipeline_runner.planner import Options

    options = Options(params={"x": "{{ 6 * 7 }}"}, environ={})
    plan = Planner(options).plan_file(str(path))
    assert plan.nodes["a"].env["A"] == "{{ 6 * 7 }}"


def test_finally_steps_may_read_any_main_step() -> None:
    plan = plan_text(
        "version: 1\nname: p\nsteps:\n  - {id: build, uses: noop}\n"
        "finally:\n  - id: notify\n    uses: noop\n"
        "    with: {msg: '{{ run.status }} {{ steps.build.output }}'}\n"
    )
    assert plan.nodes["notify"].is_finally


def test_deep_nesting_after_brackets_in_quotes_is_still_located() -> None:
    """Brackets inside a string do not nest; the diagnostic still points at the 65th level."""
    text = (
        'version: 1\nname: deep\nsteps: [{id: a, uses: noop}]\nx-text: "' + "[" * 100 + '"\n'
        "x-deep: " + "[" * 5000 + "]" * 5000
    )
    with bounded(1):
        message = _load_error(text)
    assert message.startswith("f.yaml:5:72: error: x-deep[0][0][0]...: nesting is deeper"), message
