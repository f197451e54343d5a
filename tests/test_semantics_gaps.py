"""Run semantics the manual states and the engine once got wrong: the circuit breaker's single
trial call when half-open (semantics.md, "defaults and pools"), `{{ run.attempt }}` on retries
(templating.md, "Names in scope") and the state of a fan-out (semantics.md, "Step states").

Each test runs the real `runner`; steps record what they did in files of their folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]
RUN_ID = re.compile(r"\brun (\d{8}T\d{6}-[0-9a-f]{6})\b")


def run(run_cli: RunCli, path: Path, *args: str) -> Any:
    result = run_cli("run", str(path), "--progress", "plain", *args)
    assert no_traceback(result.output), result.output
    return result


def show(run_cli: RunCli, stdout: str) -> dict[str, Any]:
    found = RUN_ID.search(stdout)
    assert found, stdout
    result = run_cli("show", found.group(1), "--json")
    assert result.code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def states(data: dict[str, Any]) -> dict[str, str]:
    return {s["step_id"]: s["state"] for s in data["steps"]}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- circuit breaker: one trial call when half-open --------------------------------------------

# `open.one` and `open.two` fail and open the breaker (2 failures in a row); `gate` (no pool)
# starts after that and ends after the cooldown has passed, so `t1`..`t4` all become ready when
# the breaker is half-open (a slow machine only makes them later, never earlier).
# Each `t` step records its start and end time; `calls.txt` gets one line per call.
BREAKER = """
version: 1
name: half-open
pools:
  api: {{size: 3, breaker: {{failures: 2, cooldown: 1s}}}}
steps:
  - id: open
    for_each: [one, two]
    pool: api
    continue_on_error: true
    uses: shell
    with: {{cmd: "echo open >> calls.txt; exit 1"}}
  - id: gate
    needs: open
    uses: shell
    with: {{cmd: "sleep 1.5"}}
  - id: t
    for_each: [t1, t2, t3, t4]
    needs: gate
    pool: api
    continue_on_error: true
    uses: shell
    with:
      cmd: >-
        echo {{{{ item }}}} >> calls.txt; date +%s.%N > start.{{{{ item }}}};
        sleep 0.4; date +%s.%N > end.{{{{ item }}}}; exit {exit}
"""


def stamps(folder: Path, prefix: str) -> dict[str, float]:
    return {p.suffix[1:]: float(p.read_text()) for p in folder.glob(f"{prefix}.t*")}


def test_a_half_open_breaker_lets_one_trial_call_through_and_closes_on_success(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    result = run(run_cli, write_pipeline(BREAKER.format(exit=0)), "--workers", "4")
    assert result.code == 0, result.output
    data = states(show(run_cli, result.stdout))
    assert [data[f"t.t{i}"] for i in range(1, 5)] == ["succeeded"] * 4, data
    starts, ends = stamps(tmp_path, "start"), stamps(tmp_path, "end")
    trial = min(starts, key=lambda k: starts[k])
    others = [starts[k] for k in starts if k != trial]
    # The trial call ran alone: every other call started after it had ended.
    assert len(others) == 3 and all(ends[trial] <= s for s in others), (starts, ends)


def test_a_half_open_breaker_whose_trial_fails_opens_again(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    result = run(run_cli, write_pipeline(BREAKER.format(exit=1)), "--workers", "4")
    assert result.code == 0, result.output  # every failure is allowed
    called = [c for c in lines(tmp_path / "calls.txt") if c != "open"]
    assert len(called) == 1, called  # one trial call; the breaker opened again
    steps = {s["step_id"]: s for s in show(run_cli, result.stdout)["steps"]}
    refused = [k for k, s in steps.items() if "circuit breaker" in (s["error"] or "")]
    assert sorted(refused) == sorted(f"t.{k}" for k in ("t1", "t2", "t3", "t4") if k != called[0])
    assert all(steps[k]["state"] == "failed_allowed" for k in refused)


# -- {{ run.attempt }} is the attempt number of this step ---------------------------------------


def test_run_attempt_renders_the_number_of_each_retry(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: attempts
        steps:
          - {id: first, uses: shell, with: {cmd: "echo first"}}
          - id: flaky
            uses: shell
            retries: {max: 2, delay: 0}
            with: {cmd: "echo attempt {{ run.attempt }} >> seen.txt; test {{ run.attempt }} -ge 2"}
          - id: chained
            needs: first
            uses: shell
            retries: {max: 2, delay: 0}
            with: {cmd: "echo chained {{ run.attempt }} >> seen.txt; test {{ run.attempt }} -ge 3"}
        """
    )
    result = run(run_cli, path, "--workers", "2")
    assert result.code == 0, result.output
    seen = lines(tmp_path / "seen.txt")
    assert [s for s in seen if s.startswith("attempt")] == ["attempt 1", "attempt 2"], seen
    assert [s for s in seen if s.startswith("chained")] == [f"chained {i}" for i in (1, 2, 3)]
    data = show(run_cli, result.stdout)
    attempts = {s["step_id"]: s["attempts"] for s in data["steps"]}
    assert attempts["flaky"] == 2 and attempts["chained"] == 3, attempts


# -- the state of a fan-out ---------------------------------------------------------------------


def test_a_fan_out_with_every_instance_skipped_is_skipped(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: all-skipped
        steps:
          - {id: fan, for_each: [a, b], if: "false", uses: noop}
          - id: after
            needs: fan
            trigger: none_failed      # a skipped need would skip it
            uses: shell
            with: {cmd: "echo after {{ steps.fan.state }} >> seen.txt"}
        finally:
          - id: last
            uses: shell
            with: {cmd: "echo last {{ steps.fan.state }} >> seen.txt"}
        """
    )
    result = run(run_cli, path)
    assert result.code == 0, result.output
    assert lines(tmp_path / "seen.txt") == ["after skipped", "last skipped"]
    data = states(show(run_cli, result.stdout))
    assert data["fan.a"] == data["fan.b"] == "skipped", data


def test_a_fan_out_with_a_failed_instance_is_failed(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: fan-failed
        steps:
          - {id: fan, for_each: [a, b], uses: shell, with: {cmd: "test {{ item }} = b"}}
          - {id: after, needs: fan, uses: noop}
        finally:
          - id: show
            uses: shell
            with: {cmd: "echo {{ steps.fan.state }} >> seen.txt"}
        """
    )
    result = run(run_cli, path, "--json", "summary.json")
    assert result.code == 1, result.output
    assert lines(tmp_path / "seen.txt") == ["failed"]
    data = states(show(run_cli, result.stdout))
    assert data["fan.a"] == "failed" and data["fan.b"] == "succeeded", data
    assert data.get("fan", "failed") == "failed" and data["after"] == "upstream_failed", data
    summary = json.loads((tmp_path / "summary.json").read_text())
    found = {s["id"]: s["state"] for s in summary["steps"]}
    assert found.get("fan", "failed") == "failed", found


def test_a_fan_out_whose_needs_failed_is_upstream_failed(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: fan-upstream
        steps:
          - {id: root, uses: shell, with: {cmd: "exit 1"}}
          - {id: fan, needs: root, for_each: [a, b], uses: noop}
        finally:
          - id: show
            uses: shell
            with: {cmd: "echo {{ steps.fan.state }} >> seen.txt"}
        """
    )
    result = run(run_cli, path)
    assert result.code == 1, result.output
    assert lines(tmp_path / "seen.txt") == ["upstream_failed"]


def test_a_fan_out_of_skipped_and_allowed_failures_is_failed_allowed(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: fan-allowed
        steps:
          - id: fan
            for_each: [a, b, c]
            if: "item != 'c'"
            continue_on_error: true
            uses: shell
            with: {cmd: "exit 1"}
          - id: after
            needs: fan
            uses: shell
            with: {cmd: "echo {{ steps.fan.state }} >> seen.txt"}
        """
    )
    result = run(run_cli, path)
    assert result.code == 0, result.output
    assert lines(tmp_path / "seen.txt") == ["failed_allowed"]


def test_template_instances_take_their_state_from_their_steps(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: tpl-state
        templates:
          pair:
            params:
              code: {}
            steps:
              - {id: ok, uses: shell, with: {cmd: "sleep 0.3"}}
              - {id: bad, uses: shell, with: {cmd: "exit {{ code }}"}}
              - {id: after, needs: bad, uses: noop}
        steps:
          - {id: root, uses: shell, with: {cmd: "exit 1"}}
          - {id: one, template: pair, with: {code: 1}}
          - {id: two, template: pair, with: {code: 0}}
          - {id: three, needs: root, template: pair, with: {code: 0}}
          - {id: fan, for_each: [x, y], template: pair, with: {code: "{{ (item == 'x') | int }}"}}
        finally:
          - id: show
            uses: shell
            with:
              cmd: >-
                echo {{ steps.one.state }} {{ steps.two.state }} {{ steps.three.state }}
                {{ steps.fan.state }} >> seen.txt
        """
    )
    result = run(run_cli, path)
    assert result.code == 1, result.output
    assert lines(tmp_path / "seen.txt") == ["failed succeeded upstream_failed failed"]
