"""Values that try to leave their place (FAULTS.md 33, 35): keys and tenant names that look like
paths or options, known when the file is loaded or only from a step's output; and text from
steps that would be read as terminal escapes or CI commands wherever the runner shows it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback
from faults_support import run_id_of, runner_text, tree

WritePipeline = Callable[..., Path]


def bad_keys(outside: Path) -> dict[str, str]:
    """name -> a key that must be refused.  `outside` is a folder beside the state folder, where
    a key used as a path would land."""
    return {
        "slash": "a/b",
        "dotdot": "../../../../../" + outside.name + "/dotdot",
        "dots_inside": "a..b",
        "absolute": str(outside / "absolute"),
        "nul": "a\x00b",
        "backslash": "a\\b",
        "leading_dash": "-rf",
        "long": "k" * 101,
        "space": "a b",
        "newline": "a\nb",
    }


# -- 33, static: known when the file is loaded ---------------------------------------------------

STATIC = """
version: 1
name: static-keys
params:
  tenants: [acme]
templates:
  etl:
    params:
      tenant: {{}}
    steps:
      - id: extract
        uses: python
        with: {{call: "lib:scratch", args: ["{{{{ tenant }}}}"]}}
steps:
  - id: fan
    for_each: {items}
    uses: python
    with: {{call: "lib:scratch", args: ["{{{{ item }}}}"]}}
  - id: keyed
    for_each: [{{name: x}}]
    key: {key}
    uses: noop
  - id: etl
    for_each: "{{{{ params.tenants }}}}"
    template: etl
    with:
      tenant: "{{{{ item }}}}"
"""

LIB = r'''
import json
import os
from pathlib import Path


def keys(folder):
    return json.loads(Path(folder, "keys.json").read_text())


def scratch(item, ctx):
    """Write a file into the step's scratch folder: the runner names it after the key."""
    (ctx.scratch_dir / "touched").write_text(str(item))
    print("wrote", ctx.scratch_dir)
    return str(ctx.scratch_dir)
'''


def yaml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


@pytest.mark.fault(33)
@pytest.mark.parametrize("case", sorted(bad_keys(Path("/x"))))
def test_a_bad_key_known_at_load_time_is_refused_and_nothing_is_written(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    key = bad_keys(outside)[case]
    quoted = yaml_string(key)
    # The same key as a for_each item, as what a `key:` template renders, and as a tenant name
    # given on the command line to a template's for_each.
    path = write_pipeline(
        STATIC.format(items=f"[ok, {quoted}]", key=yaml_string("{{ " + quoted + " }}")),
        files={"lib.py": LIB},
    )
    params = tmp_path / "params.json"  # not --param: no argv holds a NUL
    params.write_text(json.dumps({"tenants": ["acme", key]}))
    before = tree(tmp_path)
    for command in ("validate", "run"):
        result = run_cli(command, str(path), "--params-file", str(params), timeout=60)
        assert result.code == 2, result.output
        assert no_traceback(result.output), result.output
        errors = [line for line in result.stderr.splitlines() if ": error: " in line]
        places = [re.search(r": error: (\S+): ", line).group(1) for line in errors]  # type: ignore[union-attr]
        assert places == ["steps[0].for_each[1]", "steps[1].key", "steps[2].for_each"], errors
        # Each names the key, escaped (a NUL or a line break shows as `\x00`, `\n`).
        assert all(f"invalid key {key!r}" in line for line in errors), errors
    assert tree(tmp_path) == before  # nothing ran, nothing was written: not even a state dir
    assert not list(outside.iterdir())


# -- 33, dynamic: from a step's output -----------------------------------------------------------

DYNAMIC = """
version: 1
name: dynamic-keys
params:
  dir: .
steps:
  - id: gen
    uses: python
    with: {call: "lib:keys", args: ["{{ params.dir }}"]}
  - id: fan
    needs: gen
    for_each: "{{ steps.gen.output.plain }}"
    uses: python
    with: {call: "lib:scratch", args: ["{{ item }}"]}
  - id: keyed
    needs: gen
    for_each: "{{ steps.gen.output.plain }}"
    key: "{{ item }}x"
    uses: python
    with: {call: "lib:scratch", args: ["{{ item }}"]}
  - id: named
    needs: gen
    for_each: "{{ steps.gen.output.named }}"
    uses: python
    with: {call: "lib:scratch", args: ["{{ item.name }}"]}
"""


@pytest.mark.fault(33)
@pytest.mark.parametrize("case", sorted(bad_keys(Path("/x"))))
def test_a_bad_key_from_a_steps_output_fails_that_step_and_nothing_leaves_the_run_folder(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    key = bad_keys(outside)[case]
    (tmp_path / "keys.json").write_text(
        json.dumps({"plain": ["fine", key], "named": [{"name": "fine"}, {"name": key}]})
    )
    path = write_pipeline(DYNAMIC, files={"lib.py": LIB})
    before = tree(tmp_path)
    result = run_cli(
        "run", str(path), "--progress", "plain", "--param", f"dir={tmp_path}", timeout=60
    )
    assert result.code == 1, result.output
    assert no_traceback(runner_text(result.output)), result.output
    for step in ("fan", "keyed", "named"):
        line = re.search(rf"^\S+ \S+ failed\s+{step}: (.*)$", result.stdout, re.M)
        assert line, result.stdout
        # The item is named (escaped: a NUL or a newline shows as such, on one line).
        assert re.match(r"for_each: invalid key '.*' for item 1: ", line.group(1)), line.group()
    assert "running         fan." not in result.stdout  # no instance ran, not even `fine`

    run_dir = tmp_path / "state" / "runs" / run_id_of(result.stdout)
    after = tree(tmp_path, skip=[run_dir])
    created = after - before - {"state", "state/runs", f"state/runs/{run_dir.name}"}
    created = {p for p in created if not p.startswith(("state/runs.db", "__pycache__"))}
    assert not created, created
    assert not list(outside.iterdir())


# -- 35: escapes and CI commands, wherever the runner shows a step's text ------------------------

NOISY = r"""
def boom():
    print("\x1b]0;retitled\x07 \x1b[2J ::add-mask::from-the-log")
    raise RuntimeError(
        "first line\n::add-mask::hidden\n::error::injected\n::stop-commands::token"
        " \x1b[38;5;99mred\x1b[0m [/] [bold]markup[/bold] [link=file:///etc/passwd]x[/link]"
        + " ::error::wrapped-" + "w" * 60  # too long for what is left of a line: wrapped
    )
"""
NOISY_PIPELINE = """
version: 1
name: noisy
steps:
  - {id: boom, uses: python, with: {call: "lib:boom"}}
  - id: sh
    uses: shell
    with: {cmd: "printf 'x\\\\n::warning::from-sh\\\\n::stop-commands::t\\\\n'; exit 3"}
"""
STEP_ESCAPES = ("\x1b]0;retitled\x07", "\x1b[2J", "\x1b[38;5;99m")
COMMAND_LINE = re.compile(r"^\s*::(add-mask|error|warning|stop-commands|group|endgroup)::", re.M)


def only_the_runners_commands(output: str) -> None:
    """No line a CI system would read as a command, but the runner's own annotations."""
    for line in output.splitlines():
        if line.startswith("::"):
            assert re.match(r"::(error file=[^,]*p\.yaml,line=\d+(,col=\d+)?,title=step failed::|"
                            r"group::log of (boom|sh)$|endgroup::$)", line), line  # fmt: skip
    assert not COMMAND_LINE.search(re.sub(r"^::(group|endgroup)::.*$", "", output, flags=re.M))


@pytest.mark.fault(35)
@pytest.mark.parametrize("progress", ["plain", "rich", "github"])
def test_escapes_and_ci_commands_in_a_steps_error_and_log_are_shown_never_interpreted(
    write_pipeline: WritePipeline, run_cli: RunCli, progress: str
) -> None:
    path = write_pipeline(NOISY_PIPELINE, files={"lib.py": NOISY})
    env = {"GITHUB_ACTIONS": "true"} if progress == "github" else {}
    mode = "rich" if progress == "rich" else "plain"
    result = run_cli("run", str(path), "--progress", mode, "--workers", "1", env=env, timeout=60)
    assert result.code == 1, result.output  # not 70: a message with `[/]` is no rich markup
    assert no_traceback(runner_text(result.output)), result.output
    for escape in STEP_ESCAPES:
        assert escape not in result.output, (escape, result.output)
    only_the_runners_commands(result.output)
    # Shown, escaped: the message on one line of its own, the log behind `| `.
    assert "RuntimeError: first line\\n::add-mask::hidden\\n::error::injected" in result.stdout
    assert "[/] [bold]markup[/bold] [link=file:///etc/passwd]x[/link]" in result.stdout
    assert "| \\x1b]0;retitled\\x07 \\x1b[2J ::add-mask::from-the-log" in result.stdout

    run_id = run_id_of(result.stdout)
    shown = run_cli("show", run_id)
    assert shown.code == 0, shown.output
    assert "RuntimeError: first line\\n::add-mask::hidden" in shown.stdout
    only_the_runners_commands(shown.output)
    for escape in STEP_ESCAPES:
        assert escape not in shown.output
    logs = run_cli("logs", run_id)  # a log viewer: the lines as the step wrote them, escaped
    assert logs.code == 0, logs.output
    for escape in STEP_ESCAPES:
        assert escape not in logs.output
    assert "\\x1b]0;retitled\\x07" in logs.stdout
