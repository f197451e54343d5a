"""Runner in CI logs and CI reports (issue 17): no workflow command from a step's text, JUnit
that parses and follows the Jenkins schema, GitHub annotations that point at the right place,
validate's annotations and GitLab code-quality report, and the jobs of docs/ci.md.

GitHub's workflow-command grammar is written here from its documentation: `::name
key=value,...::message` on a line (after leading white space), and the old
`##[name key=value;...]message` anywhere in a line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]

# What a step prints or raises to try to talk to the CI system.
PAYLOADS = [
    "::warning::PWN plain",
    "  ::add-mask::PWN",
    "\u00a0::stop-commands::PWNtok",
    "\u3000::error file=x::PWN wide space",
    "text ##[warning]PWN old syntax",
    "##[stop-commands]PWNtok",
    "##[group]PWN",
    "x ##vso[task.logissue type=error]PWN",
]

NOISY = """
version: 1
name: noisy
steps:
  - id: talk
    uses: python
    with:
      call: lib:talk
  - id: allowed
    uses: python
    continue_on_error: true
    with:
      call: lib:talk
  - id: after
    needs: talk
    uses: noop
"""

LIB = f"""
PAYLOADS = {PAYLOADS!r}


def talk():
    for line in PAYLOADS:
        print(line, flush=True)
    raise RuntimeError("\\n".join(PAYLOADS))
"""


@dataclass
class Command:
    syntax: str  # "v2" (`::name::`) or "v1" (`##[name]`)
    name: str
    properties: str
    message: str


def workflow_commands(text: str) -> list[Command]:
    """Every command GitHub's runner (or Azure's, `##vso[`) would read in `text`."""
    found = []
    for line in re.split(r"\r\n|\r|\n", text):
        trimmed = line.lstrip()  # C#'s TrimStart: every Unicode white space
        if trimmed.startswith("::"):
            end = trimmed.find("::", 2)
            if end >= 0:
                name, _, props = trimmed[2:end].partition(" ")
                found.append(Command("v2", name, props, trimmed[end + 2 :]))
        for start in re.finditer(r"##(?:vso)?\[", line, re.I):
            close = line.find("]", start.end())
            if close >= 0:
                name, _, props = line[start.end() : close].partition(" ")
                found.append(Command("v1", name, props, line[close + 1 :]))
    return found


def assert_no_step_command(text: str, allowed: frozenset[str] = frozenset()) -> None:
    """No command comes from a step's text: no `##[` at all (runner never writes one), and each
    `::` command is one of runner's own (`allowed`) with no step text in its name or properties."""
    for command in workflow_commands(text):
        assert command.syntax == "v2", (command, text)
        assert command.name in allowed, (command, text)
        assert "PWN" not in command.name + command.properties, (command, text)


def github_env(tmp_path: Path) -> dict[str, str]:
    return {"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(tmp_path)}


RUNNER_COMMANDS = frozenset({"error", "warning", "group", "endgroup"})


@pytest.mark.parametrize("progress", ["plain", "rich"])
def test_no_workflow_command_from_a_step_anywhere_runner_echoes_it(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, progress: str
) -> None:
    path = write_pipeline(NOISY, files={"lib.py": LIB})
    env = github_env(tmp_path)
    result = run_cli(
        "run", str(path), "--progress", progress, "--json", "-", "--events", "-", env=env
    )
    assert result.code == 1, result.output
    assert no_traceback(result.stderr)
    assert "PWN" in result.stdout  # shown, as text
    assert_no_step_command(result.output, RUNNER_COMMANDS)
    run_id = re.search(r'"run_id": "([^"]+)"', result.stdout)
    assert run_id, result.stdout
    for args in (
        ["show", run_id[1]],
        ["show", run_id[1], "--json"],
        ["logs", run_id[1]],
        ["logs", run_id[1], "talk"],
        ["logs", run_id[1], "--json"],
        ["logs", run_id[1], "--follow"],
    ):
        shown = run_cli(*args, env=env)
        assert shown.code == 0, (args, shown.output)
        assert "PWN" in shown.stdout, args
        assert_no_step_command(shown.output)
    logs = json.loads(run_cli("logs", run_id[1], "--json", env=env).stdout)
    assert logs["talk"].count("PWN") >= len(PAYLOADS)


def test_junit_on_stdout_in_ci_has_no_command(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    import xml.etree.ElementTree as ET

    path = write_pipeline(NOISY, files={"lib.py": LIB})
    result = run_cli(
        "run", str(path), "--progress", "none", "--junit", "-", env=github_env(tmp_path)
    )
    assert result.code == 1, result.output
    assert_no_step_command(result.stdout)
    root = ET.fromstring(result.stdout)
    assert "##[warning]PWN" in ET.tostring(root, encoding="unicode") or any(
        "##[warning]PWN" in (e.text or "") + str(e.attrib) for e in root.iter()
    )


# --- JUnit ---------------------------------------------------------------------------------

XSD = Path(__file__).parent / "data" / "junit-jenkins.xsd"

CONTROLS = """
version: 1
name: controls
steps:
  - id: fine
    uses: shell
    with: {cmd: "echo all good"}
  - id: raw
    uses: python
    with:
      call: lib:raw
  - id: allowed
    uses: shell
    continue_on_error: true
    with: {cmd: "echo tolerated; exit 4"}
  - id: after
    needs: raw
    uses: noop
"""

CONTROLS_LIB = """
import sys


def raw():
    sys.stdout.write("esc \\x1b[31m nul \\x00 bell \\x07 ufffe \\ufffe\\n")
    sys.stdout.flush()
    raise RuntimeError("bad \\x1b[0m and \\x00 and \\x0b")
"""


def test_junit_with_control_characters_is_valid_jenkins_junit(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    xmlschema = pytest.importorskip("xmlschema")
    junitparser = pytest.importorskip("junitparser")
    path = write_pipeline(CONTROLS, files={"lib.py": CONTROLS_LIB})
    report = tmp_path / "junit.xml"
    result = run_cli("run", str(path), "--progress", "none", "--junit", str(report))
    assert result.code == 1, result.output
    xmlschema.XMLSchema(str(XSD)).validate(str(report))  # raises on any departure

    xml = junitparser.JUnitXml.fromfile(str(report))
    (suite,) = list(xml)
    outcome = {case.name: [type(r).__name__ for r in case.result] for case in suite}
    assert outcome == {"fine": [], "raw": ["Failure"], "allowed": [], "after": ["Skipped"]}
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (4, 1, 0, 1)
    cases = {case.name: case for case in suite}
    (failure,) = cases["raw"].result
    assert "\\x1b[0m" in failure.message and "\\x00" in failure.message
    assert "\\x1b[31m" in (failure.text or "")
    # The allowed failure passed, and says why it is worth a look.
    assert "failed, allowed" in (cases["allowed"].system_out or "")
    assert "tolerated" in (cases["allowed"].system_out or "")
    assert "skipped" not in xml._elem.attrib  # not a testsuites attribute in Jenkins' schema
