"""Dead letters, through the `runner` command: `runner failed RUN [--json]` lists every failed
step with its rendered inputs, error kind, message and attempts; `runner resume RUN --failed`
re-drives exactly those (and what depends on them); `retries.on: [breaker]` retries a step its
pool's open breaker rejected once the cooldown is over.  pipelines/dead-letters.yaml is the
error-handling pattern's dead-letter queue, run here end to end."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PIPELINES, RunCli, no_traceback, summary_of

WritePipeline = Callable[..., Path]


def last_run(run_cli: RunCli) -> str:
    return str(json.loads(run_cli("runs", "--json").stdout)[0]["id"])


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """pipelines/, copied: the example writes its ledger beside itself and reads its inbox."""
    shutil.copytree(PIPELINES, tmp_path / "pipelines")
    return tmp_path / "pipelines" / "dead-letters.yaml"


def test_the_dead_letters_example_lists_the_failures_and_redrives_them_once_fixed(
    run_cli: RunCli, example: Path
) -> None:
    folder = example.parent
    first = run_cli("run", example.name, "--progress", "plain", cwd=folder)
    assert first.code == 0, first.output
    assert "dead letters: m2 (ValueError: message m2: amount '12O' is not a whole number), " in (
        first.stdout
    )
    ledger = folder / "ledger.txt"
    assert ledger.read_text().splitlines() == ["m1 acme 120", "m3 initech 75", "m5 umbrella 48"]
    run_id = last_run(run_cli)

    listed = run_cli("failed", run_id, "--json")
    assert listed.code == 0, listed.output
    letters = {letter["step"]: letter for letter in json.loads(listed.stdout)}
    assert sorted(letters) == ["post.m2", "post.m4"]
    m4 = letters["post.m4"]
    assert m4["inputs"] == {
        "with": {
            "call": "deadletters_lib:post",
            "args": ["data/dead-letters/inbox.json", "m4", "ledger.txt"],
        },
        "item": "m4",
    }
    assert m4["kind"] == "error" and m4["attempts"] == 1
    assert m4["message"] == "ValueError: message m4 has no account"
    text = run_cli("failed", run_id).stdout
    assert f"run {run_id}: 2 failed step(s)" in text
    assert "post.m4  error, 1 attempt: ValueError: message m4 has no account" in text
    assert f"re-drive them with: runner resume {run_id} --failed" in text

    # Fix the two messages, then re-drive the dead letters: only they are posted again.
    inbox = folder / "data" / "dead-letters" / "inbox.json"
    messages = json.loads(inbox.read_text())
    messages[1]["amount"], messages[3]["account"] = 120, "hooli"
    inbox.write_text(json.dumps(messages))
    again = run_cli("resume", run_id, "--failed", "--progress", "plain", cwd=folder)
    assert again.code == 0, again.output
    assert ledger.read_text().splitlines()[3:] in (
        ["m2 globex 120", "m4 hooli 30"],
        ["m4 hooli 30", "m2 globex 120"],
    )
    assert "posted 5 message(s), total 393; dead letters: none" in again.stdout
    started = {x.split("▶ running")[1].split()[0] for x in again.stdout.splitlines() if "▶" in x}
    assert started == {"post.m2", "post.m4", "summary"}, again.stdout
    assert json.loads(run_cli("failed", run_id, "--json").stdout) == []


FANOUT = """
version: 1
name: redrive
steps:
  - id: items
    for_each: [a, b, c]
    uses: shell
    with: {cmd: "echo {{ item }} >> ran.txt; test ! -e broken-{{ item }}"}
    success: {min: 1}
  - id: total
    needs: items
    uses: shell
    with: {cmd: "echo total >> ran.txt"}
  - id: audit
    uses: shell
    continue_on_error: true
    with: {cmd: "echo audit >> ran.txt; exit 3"}
"""


def test_resume_failed_reruns_the_failed_steps_and_their_dependents_nothing_else(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(FANOUT)
    (tmp_path / "broken-b").touch()
    code, steps, output = summary_of(run_cli, path)
    assert code == 0 and steps["items.b"]["state"] == "failed", output
    assert steps["audit"]["state"] == "failed_allowed"
    run_id = last_run(run_cli)
    (tmp_path / "broken-b").unlink()
    ran = tmp_path / "ran.txt"
    ran.write_text("")
    result = run_cli("resume", run_id, "--failed", "--progress", "plain", "--json", "s.json")
    assert result.code == 0, result.output
    # b and what needs the fan-out; not a nor c, nor `audit` (failed_allowed, not failed),
    # which a plain resume runs again.
    assert sorted(ran.read_text().split()) == ["b", "total"]
    summary = {s["id"]: s for s in json.loads((tmp_path / "s.json").read_text())["steps"]}
    assert summary["items.b"]["state"] == "succeeded" and summary["items.b"]["attempts"] == 2
    assert summary["audit"]["state"] == "failed_allowed" and summary["audit"]["attempts"] == 1

    nothing = run_cli("resume", run_id, "--failed")
    assert nothing.code == 2 and no_traceback(nothing.output)
    assert f"run {run_id} has no failed steps: nothing to re-drive" in nothing.stderr
    both = run_cli("resume", run_id, "--failed", "--only", "items")
    assert both.code == 2 and "leave out --only and --rerun" in both.stderr


def test_the_inputs_of_a_failed_step_are_masked(
    write_pipeline: WritePipeline, run_cli: RunCli
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: masked
        secrets: [TOKEN]
        steps:
          - id: call
            uses: python
            with: {call: "json:loads", args: ["{{ secrets.TOKEN }}"]}
        """
    )
    result = run_cli("run", str(path), "--progress", "none", env={"TOKEN": "s3cr3t-value"})
    assert result.code == 1, result.output
    run_id = last_run(run_cli)
    for args in (("--json",), ()):
        listed = run_cli("failed", run_id, *args)
        assert "s3cr3t-value" not in listed.stdout and "***" in listed.stdout, listed.stdout


BREAKER = """
version: 1
name: breaker
pools:
  api: {{size: 1, breaker: {{failures: 1, cooldown: 1s}}}}
steps:
  - id: first
    uses: shell
    pool: api
    priority: 10
    with: {{cmd: "exit 1"}}
  - id: second
    uses: shell
    pool: api
    retries: {retries}
    with: {{cmd: "date +%s.%N > second.txt"}}
"""


def test_retries_on_breaker_waits_for_the_cooldown_then_tries_again(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(BREAKER.format(retries="{max: 2, delay: 0, on: [breaker]}"))
    code, steps, output = summary_of(run_cli, path)
    assert code == 1, output  # `first` failed
    second = steps["second"]
    assert second["state"] == "succeeded" and second["attempts"] == 2, output
    assert "↻ retrying        second: circuit breaker of pool 'api' is open" in output
    # The retry came once the cooldown was over, not at once.
    assert second["finished"] - steps["first"]["finished"] >= 0.9


def test_without_breaker_in_retries_on_a_rejected_step_fails(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(BREAKER.format(retries="{max: 2, delay: 0, on: [error]}"))
    code, steps, output = summary_of(run_cli, path)
    assert code == 1, output
    assert steps["second"]["state"] == "failed" and steps["second"]["error_kind"] == "breaker"
    assert not (tmp_path / "second.txt").exists()
    listed = json.loads(run_cli("failed", last_run(run_cli), "--json").stdout)
    assert [(x["step"], x["kind"]) for x in listed] == [("first", "error"), ("second", "breaker")]
