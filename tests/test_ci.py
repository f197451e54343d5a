"""Runner in CI logs and CI reports (issue 17): no workflow command from a step's text, JUnit
that parses and follows the Jenkins schema, GitHub annotations that point at the right place,
validate's annotations and GitLab code-quality report, and the jobs of docs/ci.md.

GitHub's workflow-command grammar is written here from its documentation: `::name
key=value,...::message` on a line (after leading white space), and the old
`##[name key=value;...]message` anywhere in a line."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli, runner_executable, user_env

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
  - id: say
    uses: shell
    with: {cmd: "echo '##[warning]PWN output'"}
outputs:
  said: "{{ steps.say.output }}"
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
    # the step's own traceback is in its log tail (on stderr: stdout holds the reports); none
    # comes from the runner's code
    assert not re.search(r'File "[^"]*pipeline_runner', result.stderr), result.stderr
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


def test_pipeline_outputs_printed_at_the_end_hold_no_command(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: says
        steps:
          - id: say
            uses: shell
            with: {cmd: "echo '##[warning]PWN output'"}
        outputs:
          said: "{{ steps.say.output }}"
        """
    )
    result = run_cli("run", str(path), "--progress", "plain", env=github_env(tmp_path))
    assert result.code == 0, result.output
    assert "PWN output" in result.stdout
    assert_no_step_command(result.output)
    said = json.loads(result.stdout.partition("outputs:\n")[2])["said"]
    assert said == "##[warning]PWN output"  # the same JSON value
    runs = run_cli("runs", "--json", env=github_env(tmp_path))
    assert_no_step_command(runs.output)
    assert json.loads(runs.stdout)[0]["outputs"] == {"said": "##[warning]PWN output"}


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


# --- GitHub annotations and GitLab code quality --------------------------------------------


def unescape(value: str) -> str:
    for code, char in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        value = value.replace(code, char)
    return value


def properties(command: Command) -> dict[str, str]:
    """`key=value,key=value` as GitHub reads it: split at `,`, then at the first `=`."""
    pairs = (p.partition("=") for p in command.properties.split(",") if p)
    return {key: unescape(value) for key, _, value in pairs}


ANNOTATED = """
version: 1
name: annotated
steps:
  - id: fine
    uses: noop
  - id: broken
    uses: shell
    with: {cmd: "echo 'clue: 50%, sure'; exit 3"}
  - id: tolerated
    uses: shell
    continue_on_error: true
    with: {cmd: "exit 5"}
"""


def test_run_annotations_point_at_the_file_from_the_workspace(
    run_cli: RunCli, tmp_path: Path
) -> None:
    # A job with `working-directory: jobs/a,b:c`: GitHub reads file= from the workspace.
    folder = tmp_path / "jobs" / "a,b:c"
    folder.mkdir(parents=True)
    (folder / "p.yaml").write_text(ANNOTATED.lstrip())
    result = run_cli("run", "p.yaml", cwd=folder, env=github_env(tmp_path))
    assert result.code == 1, result.output
    commands = workflow_commands(result.stdout)
    assert_no_step_command(result.stdout, RUNNER_COMMANDS)
    levels = {c.name: c for c in commands if c.name in ("error", "warning")}
    assert set(levels) == {"error", "warning"}, result.stdout
    lines = (folder / "p.yaml").read_text().splitlines()
    for level, step in (("error", "broken"), ("warning", "tolerated")):
        props = properties(levels[level])
        assert props["file"] == "jobs/a,b:c/p.yaml", props
        assert (tmp_path / props["file"]).is_file()
        line, col = int(props["line"]), int(props["col"])
        assert lines[line - 1][col - 1 :] == f"id: {step}", (line, col)
        assert unescape(levels[level].message).startswith(f"{step}: ")
    assert "%2C" in levels["error"].properties and "%3A" in levels["error"].properties


BAD = """
version: 1
name: bad
steps:
  - id: a
    uses: shell
    with: {cmdd: "echo x"}
  - id: b
    needs: nothere
    uses: noop
"""


def test_validate_annotates_in_github_actions(run_cli: RunCli, tmp_path: Path) -> None:
    folder = tmp_path / "ci"
    folder.mkdir()
    (folder / "bad.yaml").write_text(BAD.lstrip())
    (folder / "good.yaml").write_text(ANNOTATED.lstrip())
    env = github_env(tmp_path)
    auto = run_cli("validate", "bad.yaml", "good.yaml", cwd=folder, env=env)
    explicit = run_cli("validate", "bad.yaml", "good.yaml", "--format", "github", cwd=folder)
    for result in (auto, explicit):
        assert result.code == 2, result.output
        assert "bad.yaml:6:" in result.stderr  # the located errors, as always
        errors = [c for c in workflow_commands(result.stdout) if c.name == "error"]
        assert len(errors) >= 2, result.stdout
        for command in errors:
            props = properties(command)
            assert props["file"].endswith("bad.yaml") and int(props["line"]) > 0, props
            assert int(props["col"]) > 0 and props["title"] == "runner validate"
    assert {properties(c)["file"] for c in workflow_commands(auto.stdout)} == {"ci/bad.yaml"}
    plain = run_cli("validate", "bad.yaml", cwd=folder)
    assert workflow_commands(plain.output) == []


def test_validate_writes_a_gitlab_code_quality_report(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD.lstrip())
    report = tmp_path / "gl-code-quality.json"
    result = run_cli("validate", "bad.yaml", "--codequality", str(report))
    assert result.code == 2, result.output
    on_stdout = run_cli("validate", "bad.yaml", "--format", "gitlab")
    assert on_stdout.code == 2
    for issues in (json.loads(report.read_text()), json.loads(on_stdout.stdout)):
        assert len(issues) >= 2
        for issue in issues:
            assert set(issue) == {
                "description",
                "check_name",
                "fingerprint",
                "severity",
                "location",
            }
            assert issue["severity"] in ("info", "minor", "major", "critical", "blocker")
            assert issue["location"]["path"] == "bad.yaml"
            assert issue["location"]["lines"]["begin"] >= 6
        assert len({i["fingerprint"] for i in issues}) == len(issues)
    empty = tmp_path / "empty.json"
    (tmp_path / "good.yaml").write_text(ANNOTATED.lstrip())
    assert run_cli("validate", "good.yaml", "--codequality", str(empty)).code == 0
    assert json.loads(empty.read_text()) == []


# --- the jobs of docs/ci.md ----------------------------------------------------------------

CI_PAGE = Path(__file__).resolve().parent.parent / "docs" / "ci.md"
WORKFLOW_KEYS = {"name", "run-name", "on", "permissions", "env", "defaults", "concurrency", "jobs"}
JOB_KEYS = {
    "name", "needs", "permissions", "if", "runs-on", "environment", "concurrency", "outputs",
    "env", "defaults", "steps", "timeout-minutes", "strategy", "continue-on-error", "container",
    "services",
}  # fmt: skip
STEP_KEYS = {
    "id", "if", "name", "uses", "run", "working-directory", "shell", "with", "env",
    "continue-on-error", "timeout-minutes",
}  # fmt: skip
GITLAB_JOB_KEYS = {
    "image", "services", "stage", "variables", "cache", "before_script", "script",
    "after_script", "artifacts", "rules", "needs", "tags", "timeout", "retry", "when",
}  # fmt: skip
FLAKY = """
version: 1
name: flaky
steps:
  - id: build
    uses: shell
    with: {cmd: "echo built"}
  - id: check
    needs: build
    uses: shell
    with: {cmd: "test -f fixed"}
"""


def ci_jobs() -> tuple[dict[str, Any], dict[str, Any]]:
    """The GitHub workflow and the GitLab job shown on docs/ci.md."""
    import yaml

    blocks = re.findall(r"^```yaml\n(.*?)^```", CI_PAGE.read_text(), re.M | re.S)
    docs = [yaml.safe_load(b) for b in blocks]
    github = [d for d in docs if isinstance(d, dict) and "jobs" in d]
    gitlab = [
        d for d in docs if isinstance(d, dict) and "pipeline" in d and "script" in d["pipeline"]
    ]
    assert len(github) == 1 and len(gitlab) == 1
    return github[0], gitlab[0]["pipeline"]


def test_the_github_job_is_workflow_syntax() -> None:
    workflow, _ = ci_jobs()
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads `on` as true, as GitHub does not
    assert set(workflow) <= WORKFLOW_KEYS
    (job,) = workflow["jobs"].values()
    assert set(job) <= JOB_KEYS and "runs-on" in job
    for step in job["steps"]:
        assert set(step) <= STEP_KEYS, step
        assert ("uses" in step) != ("run" in step), step
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step
        for value in (step.get("if"), *(step.get("with") or {}).values()):
            assert "${{" not in str(value) or str(value).count("${{") == str(value).count("}}")


def shell_of(script: str) -> str:
    """A job's shell script as the test runs it: GitHub's `${{ }}` expressions given values,
    `pip install` (the distribution named) left out, as runner is installed already."""
    script = re.sub(r"\$\{\{[^}]*\}\}", "1", script)
    lines = []
    for line in script.splitlines():
        if line.strip().startswith("pip install"):
            assert line.split()[-1] == "yaml-pipeline-runner", line
            continue
        lines.append(line)
    return "\n".join(lines)


def attempt(
    scripts: list[str], workspace: Path, env: dict[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """Run the scripts in order, as CI does (`bash -e`), until one fails."""
    done = []
    for script in scripts:
        proc = subprocess.run(
            ["bash", "-e", "-c", shell_of(script)],
            cwd=workspace, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        done.append(proc)
        if proc.returncode != 0:
            break
    return done


@pytest.mark.parametrize("system", ["github", "gitlab"])
def test_the_ci_jobs_run_validate_report_and_resume_on_a_retry(tmp_path: Path, system: str) -> None:
    import xml.etree.ElementTree as ET

    workflow, gitlab = ci_jobs()
    env = user_env()
    env["PATH"] = f"{Path(runner_executable()).parent}{os.pathsep}{env.get('PATH', '')}"
    if system == "github":
        (job,) = workflow["jobs"].values()
        scripts = [step["run"] for step in job["steps"] if "run" in step]
        env.update(GITHUB_ACTIONS="true", GITHUB_WORKSPACE=str(tmp_path))
    else:
        scripts = list(gitlab["script"])
        env.pop("GITHUB_ACTIONS", None)
        env.update(GITLAB_CI="true", CI_PROJECT_DIR=str(tmp_path))
    (tmp_path / "pipeline.yaml").write_text(FLAKY.lstrip())

    first = attempt(scripts, tmp_path, env)
    assert [p.returncode for p in first][:-1] == [0] * (len(first) - 1)
    assert first[-1].returncode == 1, first[-1].stdout + first[-1].stderr
    junit = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    assert junit.find(".//testcase[@name='check']/failure") is not None
    if system == "gitlab":
        assert json.loads((tmp_path / "gl-code-quality-report.json").read_text()) == []
    run_id = re.search(r"run (\S+): flaky", first[-1].stdout)
    assert run_id, first[-1].stdout

    (tmp_path / "fixed").write_text("")  # the fix; the job is retried with the store kept
    second = attempt(scripts, tmp_path, env)
    assert [p.returncode for p in second] == [0] * len(scripts), second[-1].stderr
    assert run_id[1] in second[-1].stdout  # resumed, not run anew
    junit = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    assert junit.find(".//failure") is None
