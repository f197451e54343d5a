"""Second-round scenarios (numbered on from FAULTS.md's 35): what ids, keys and environment
names can do.  A qualified id is unique (a key with `.` cannot spell another step's id, before
the run or at run time); an environment name or value the operating system refuses is a located
error, or fails its step before it runs, and never kills the worker; any valid id, however long,
gets a safe log file, and an id or key with a line break is refused."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]
RUN_ID = re.compile(r"\brun (\d{8}T\d{6}-[0-9a-f]{6})\b")

# -- 38: ids that collide after qualification ---------------------------------------------------

TENANTS = """
version: 1
name: tenants
templates:
  etl:
    steps:
      - id: extract
        uses: shell
        with: {{cmd: "echo extract"}}
      - id: load
        uses: shell
        needs: extract
        with: {{cmd: "echo load"}}
steps:
  - id: etl
    template: etl
    for_each: {tenants}
"""


@pytest.mark.fault(38)
@pytest.mark.parametrize("tenants", ["[acme, acme.extract]", "[acme.extract, acme]"])
def test_a_key_that_spells_another_steps_id_is_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline, tenants: str
) -> None:
    """Tenant `acme.extract` would make the group `etl.acme.extract`, the id of tenant acme's
    `extract` step: one of them used to replace the other, and validate said ok."""
    path = write_pipeline(TENANTS.format(tenants=tenants))
    for command in ("validate", "run"):
        result = run_cli(command, str(path))
        assert result.code == 2, result.output
        assert no_traceback(result.stderr)
        assert re.search(
            rf"{re.escape(str(path))}:\d+:\d+: error: \S+: the id 'etl\.acme\.extract' is "
            r"already the id of (templates\.etl\.steps\[0\]|steps\[0\]) \(line \d+\)",
            result.stderr,
        ), result.stderr


DYNAMIC = """
version: 1
name: dynamic
templates:
  fan:
    steps:
      - id: list
        uses: python
        with: {call: "lib:items"}
      - id: each
        needs: list
        for_each: "{{ steps.list.output }}"
        uses: shell
        with: {cmd: "echo each {{ item }}"}
steps:
  - id: t
    template: fan
    for_each: [acme, acme.each.b]
"""


@pytest.mark.fault(38)
def test_a_run_time_key_that_spells_another_steps_id_fails_its_step(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    """Tenant acme's `each` expands at run time to `t.acme.each.b`: the id of the group of
    tenant `acme.each.b`.  The run-time expansion fails, naming both."""
    path = write_pipeline(DYNAMIC, files={"lib.py": "def items():\n    return ['b']\n"})
    assert run_cli("validate", str(path)).code == 0
    result = run_cli("run", str(path))
    assert result.code == 1, result.output
    assert no_traceback(result.output)
    assert re.search(
        r"failed\s+t\.acme\.each: for_each: the key 'b' makes the id 't\.acme\.each\.b', "
        r"already the id of steps\[0\] \(line \d+\)",
        result.stdout,
    ), result.stdout
    # The other tenant ran as planned.
    assert re.search(r"succeeded\s+t\.acme\.each\.b\.list\b", result.stdout), result.stdout


# -- 48: environment names and values the operating system refuses ------------------------------

ENV_STEP = """
version: 1
name: env
{top}
steps:
  - id: a
    uses: shell
    {own}
    with: {{cmd: "echo ok"}}
"""


@pytest.mark.fault(48)
@pytest.mark.parametrize(
    ("top", "own", "line", "message"),
    [
        ("", 'env: {"A=B": x}', 7, "steps[0].env.A=B: invalid environment variable name"),
        ("", 'env: {"": x}', 7, "invalid environment variable name ''"),
        ("", 'env: {"A\\0B": x}', 7, "invalid environment variable name 'A\\x00B'"),
        ("", 'env: {A: "x\\0y"}', 7, "steps[0].env.A: the value of environment variable A"),
        ('env: {"X=Y": "1"}', "", 3, "env.X=Y: invalid environment variable name 'X=Y'"),
        ('defaults: {env: {"": "1"}}', "", 3, "defaults.env.: invalid environment variable"),
    ],
)
def test_environment_names_and_values_the_system_refuses_are_located_errors(
    run_cli: RunCli, write_pipeline: WritePipeline, top: str, own: str, line: int, message: str
) -> None:
    path = write_pipeline(ENV_STEP.format(top=top, own=own))
    for command in ("validate", "run"):
        result = run_cli(command, str(path))
        assert result.code == 2, result.output
        assert no_traceback(result.stderr)
        assert f"{path}:{line}:" in result.stderr and message in result.stderr, result.stderr


PLUGIN_ENV = """
version: 1
name: env
steps:
  - id: a
    uses: shell
    with: {{cmd: "echo ok", env: {env}}}
"""


@pytest.mark.fault(48)
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ('{"A=B": x}', "shell: invalid environment variable name 'A=B'"),
        ('{"": x}', "shell: invalid environment variable name ''"),
        ('{A: "x\\0y"}', "steps[0].with.env.A: shell: an environment variable's value cannot"),
    ],
)
def test_the_shell_plugins_own_env_is_checked_the_same_way(
    run_cli: RunCli, write_pipeline: WritePipeline, env: str, message: str
) -> None:
    """`with.env` of the shell plugin used to pass validate and fail its step with a
    traceback from subprocess."""
    path = write_pipeline(PLUGIN_ENV.format(env=env))
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.stderr), result.output
    assert f"{path}:6:" in result.stderr and message in result.stderr, result.stderr


RENDERED_ENV = """
version: 1
name: env
steps:
  - id: make
    uses: python
    with: {call: "lib:value"}
  - id: use
    needs: make
    uses: shell
    env: {V: "{{ steps.make.output }}"}
    retries: {max: 2, delay: 10ms, on: [crash]}
    with: {cmd: "echo used"}
  - id: other
    needs: make
    uses: shell
    with: {cmd: "echo other"}
"""


@pytest.mark.fault(48)
def test_a_rendered_environment_value_with_nul_fails_its_step_before_it_runs(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    """It used to kill the worker: a crash, retried by `on: [crash]`, the runner's traceback as
    the step's log."""
    path = write_pipeline(RENDERED_ENV, files={"lib.py": "def value():\n    return 'x\\0y'\n"})
    result = run_cli("run", str(path), "--workers", "1")
    assert result.code == 1, result.output
    assert no_traceback(result.output)
    assert re.search(
        r"failed\s+use: template error: the value of environment variable V contains a NUL",
        result.stdout,
    ), result.stdout
    assert "attempt 2" not in result.stdout and "crash" not in result.stdout, result.stdout
    assert re.search(r"succeeded\s+other\b", result.stdout), result.stdout


# -- 49: ids too long for a file name; line breaks in ids and keys ------------------------------


@pytest.mark.fault(49)
def test_an_id_too_long_for_a_file_name_runs_and_keeps_its_log(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    long_id = "s" * 300
    twin = "s" * 299 + "t"  # the same readable prefix: the file names must still differ
    path = write_pipeline(
        f"""
        version: 1
        name: long
        steps:
          - id: {long_id}
            uses: shell
            with: {{cmd: "echo first"}}
          - id: {twin}
            uses: shell
            with: {{cmd: "echo second"}}
        """
    )
    result = run_cli("run", str(path))
    assert result.code == 0, result.output
    found = RUN_ID.search(result.output)
    assert found, result.output
    logs = run_cli("logs", found.group(1), long_id)
    assert logs.code == 0 and "first" in logs.stdout and "second" not in logs.stdout, logs.output
    logs = run_cli("logs", found.group(1), twin)
    assert logs.code == 0 and "second" in logs.stdout, logs.output
    names = [p.name for p in (tmp_path / "state" / "runs" / found.group(1) / "logs").iterdir()]
    assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names), names


@pytest.mark.fault(49)
@pytest.mark.parametrize(
    ("step", "line", "message"),
    [
        ('id: "a\\n"\n    uses: noop', 4, "steps[0].id: a step id cannot contain a line break"),
        (
            'id: a\n    uses: noop\n    for_each: ["x\\n"]',
            6,
            "steps[0].for_each[0]: invalid key 'x\\n'",
        ),
    ],
)
def test_an_id_or_key_with_a_line_break_is_a_located_error(
    run_cli: RunCli, write_pipeline: WritePipeline, step: str, line: int, message: str
) -> None:
    path = write_pipeline(f"version: 1\nname: nl\nsteps:\n  - {step}\n")
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    assert no_traceback(result.stderr)
    assert f"{path}:{line}:" in result.stderr and message in result.stderr, result.stderr
