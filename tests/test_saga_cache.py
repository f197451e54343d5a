"""Compensation (saga), `finally`, the step cache and circuit breakers, end to end.

Every action appends a line to a journal file, so the tests see exactly what ran and in which
order, across runs.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, RunCli, no_traceback
from test_engine import runner_text

WritePipeline = Callable[..., Path]
RUN_ID = re.compile(r"\brun (\d{8}T\d{6}-[0-9a-f]{6})\b")


def run(run_cli: RunCli, path: Path, *args: str, **kw: Any) -> Any:
    result = run_cli("run", str(path), "--progress", "plain", "--workers", "2", *args, **kw)
    assert no_traceback(runner_text(result.output)), result.output
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


# -- saga -------------------------------------------------------------------------------------


@pytest.fixture
def saga(tmp_path: Path) -> Path:
    """The example, copied; run from its folder, as the README does (its python steps write the
    journal relative to the working directory, its shell step relative to the pipeline)."""
    shutil.copytree(PIPELINES, tmp_path / "pipelines")
    return tmp_path / "pipelines" / "order-saga.yaml"


def test_the_saga_example_undoes_what_succeeded_in_reverse_order(
    run_cli: RunCli, saga: Path
) -> None:
    result = run(run_cli, saga, cwd=saga.parent)
    assert result.code == 1, result.output
    assert lines(saga.parent / "journal.txt") == [
        "reserve A-1001",
        "charge A-1001 42",
        "ship A-1001",
        "refund P-A-1001",
        "release R-A-1001",
        "order A-1001 finished with status compensated",
    ]
    # the summary shows the compensations that ran, and the run's outcome
    assert "charge:compensate" in result.stdout and "reserve:compensate" in result.stdout
    assert re.search(r"run \S+ compensated in", result.stdout), result.stdout
    data = show(run_cli, result.stdout)
    assert data["run"]["status"] == "compensated" and data["run"]["exit_code"] == 1
    assert states(data) == {
        "reserve": "compensated",
        "charge": "compensated",
        "ship": "failed",
        "charge:compensate": "succeeded",
        "reserve:compensate": "succeeded",
        "notify": "succeeded",
    }


def test_no_compensate_runs_no_compensation(run_cli: RunCli, saga: Path) -> None:
    result = run(run_cli, saga, "--no-compensate", cwd=saga.parent)
    assert result.code == 1, result.output
    assert lines(saga.parent / "journal.txt") == [
        "reserve A-1001",
        "charge A-1001 42",
        "ship A-1001",
        "order A-1001 finished with status failed",
    ]
    assert ":compensate" not in result.stdout


TENANTS = """
version: 1
name: tenants
params:
  tenants: [good, bad]
templates:
  order:
    params:
      tenant: {}
    steps:
      - id: reserve
        uses: shell
        with: {cmd: "echo reserve {{ tenant }} >> journal.txt"}
        compensate:
          uses: shell
          with: {cmd: "echo release {{ tenant }} >> journal.txt"}
      - id: charge
        needs: reserve
        uses: shell
        with: {cmd: "echo charge {{ tenant }} >> journal.txt"}
        compensate:
          uses: shell
          with: {cmd: "echo refund {{ tenant }} >> journal.txt"}
      - id: ship
        needs: charge
        uses: shell
        with: {cmd: "echo ship {{ tenant }} >> journal.txt; test {{ tenant }} != bad"}
steps:
  - id: orders
    for_each: "{{ params.tenants }}"
    as: tenant
    template: order
    with: {tenant: "{{ tenant }}"}
finally:
  - id: notify
    uses: shell
    with: {cmd: "echo finally {{ run.status }} >> journal.txt"}
"""


def test_a_tenant_failure_undoes_that_tenant_only(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    result = run(run_cli, write_pipeline(TENANTS))
    assert result.code == 1, result.output
    journal = lines(tmp_path / "journal.txt")
    assert sorted(journal[:6]) == sorted(
        f"{action} {t}" for action in ("reserve", "charge", "ship") for t in ("good", "bad")
    )
    assert journal[6:] == ["refund bad", "release bad", "finally compensated"]
    data = states(show(run_cli, result.stdout))
    assert data["orders.good.ship"] == "succeeded" and data["orders.bad.ship"] == "failed"
    assert data["orders.good.charge"] == "succeeded" and data["orders.bad.charge"] == "compensated"
    assert "orders.good.charge:compensate" not in data
    assert data["orders.bad.charge:compensate"] == "succeeded"


FINALLY = """
version: 1
name: with-finally
params:
  ok: "yes"
steps:
  - id: work
    uses: shell
    with: {cmd: "test {{ params.ok }} = yes"}
  - id: after
    needs: work
    uses: shell
    with: {cmd: "echo after >> status.txt"}
finally:
  - id: report
    uses: shell
    with: {cmd: "echo {{ run.status }} >> status.txt"}
"""


@pytest.mark.parametrize(("ok", "code", "written"), [
    ("yes", 0, ["after", "succeeded"]),
    ("no", 1, ["failed"]),
])  # fmt: skip
def test_finally_runs_last_and_sees_the_run_status(
    write_pipeline: WritePipeline,
    run_cli: RunCli,
    tmp_path: Path,
    ok: str,
    code: int,
    written: list[str],
) -> None:
    result = run(run_cli, write_pipeline(FINALLY), "--param", f"ok={ok}")
    assert result.code == code, result.output
    assert lines(tmp_path / "status.txt") == written
    assert states(show(run_cli, result.stdout))["report"] == "succeeded"


# -- cache ------------------------------------------------------------------------------------

CACHED = """
version: 1
name: cached
steps:
  - id: a
    uses: shell
    cache: {inputs: [in_a.txt], outputs: [out_a.txt]}
    with: {cmd: "echo a >> calls.txt; sleep 0.5; cp in_a.txt out_a.txt; echo a-$(cat in_a.txt)"}
  - id: b
    needs: a
    uses: shell
    cache: {inputs: [in_b.txt], outputs: [out_b.txt]}
    with:
      cmd: >-
        echo b >> calls.txt; sleep 0.5; cp in_b.txt out_b.txt;
        echo {{ steps.a.output }}-$(cat in_b.txt)
  - id: c
    needs: b
    uses: shell
    cache: true
    with: {cmd: "echo c >> calls.txt; sleep 0.5; echo {{ steps.b.output }}-c"}
outputs:
  c: "{{ steps.c.output }}"
"""


@pytest.mark.slow
def test_cache_skips_unchanged_steps_and_reruns_what_changed(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(CACHED)
    (tmp_path / "in_a.txt").write_text("1\n")
    (tmp_path / "in_b.txt").write_text("1\n")
    calls = tmp_path / "calls.txt"

    def timed_run(*args: str) -> tuple[dict[str, Any], float]:
        calls.unlink(missing_ok=True)
        started = time.monotonic()
        result = run(run_cli, path, *args)
        wall = time.monotonic() - started
        assert result.code == 0, result.output
        data = show(run_cli, result.stdout)
        print(f"  {' '.join(args) or 'run'}: {wall:.2f}s wall, "
              f"{data['run']['finished'] - data['run']['started']:.2f}s recorded")  # fmt: skip
        return data, data["run"]["finished"] - data["run"]["started"]

    first, first_took = timed_run()
    assert set(states(first).values()) == {"succeeded"}
    assert lines(calls) == ["a", "b", "c"]
    assert first["run"]["outputs"] == {"c": "a-1-1-c"}

    second, second_took = timed_run()
    assert states(second) == {"a": "cached", "b": "cached", "c": "cached"}
    assert lines(calls) == []
    assert second["run"]["outputs"] == {"c": "a-1-1-c"}
    print(f"  first run {first_took:.2f}s, all-cached run {second_took:.2f}s")
    assert second_took < first_took / 2

    (tmp_path / "in_b.txt").write_text("2\n")  # b's input changed: b and what needs it
    third, _ = timed_run()
    assert states(third) == {"a": "cached", "b": "succeeded", "c": "succeeded"}
    assert lines(calls) == ["b", "c"]
    assert third["run"]["outputs"] == {"c": "a-1-2-c"}

    (tmp_path / "out_a.txt").unlink()  # a's declared output is gone: a runs again
    fourth, _ = timed_run()
    assert states(fourth) == {"a": "succeeded", "b": "cached", "c": "cached"}
    assert lines(calls) == ["a"]
    assert (tmp_path / "out_a.txt").exists()

    fifth, _ = timed_run("--no-cache")
    assert set(states(fifth).values()) == {"succeeded"}
    assert lines(calls) == ["a", "b", "c"]


DECIDED_AT_START = """
version: 1
name: decided-at-start
steps:
  - id: a
    if: "false"
    uses: noop
  - id: b
    needs: a
    trigger: none_failed    # runs after the skipped `a`
    uses: shell
    with: {cmd: "echo b >> calls.txt; sleep 0.2; echo b"}
  - id: c
    needs: b
    uses: shell
    with: {cmd: "echo c >> calls.txt; echo c"}
outputs:
  c: "{{ steps.c.output }}"
"""


def test_a_step_decided_at_start_lets_its_dependents_run_once(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    result = run(run_cli, write_pipeline(DECIDED_AT_START))
    assert result.code == 0, result.output
    assert lines(tmp_path / "calls.txt") == ["b", "c"]
    data = show(run_cli, result.stdout)
    assert states(data) == {"a": "skipped", "b": "succeeded", "c": "succeeded"}
    assert data["run"]["outputs"] == {"c": "c"}


# -- circuit breaker --------------------------------------------------------------------------

BREAKER = """
version: 1
name: breaker
pools:
  api: {size: 2, breaker: {failures: 5, cooldown: 30s}}
steps:
  - id: call
    for_each: "{{ range(20) | list }}"
    pool: api
    uses: shell
    with: {cmd: "echo {{ item }} >> calls.txt; exit 1"}
"""


def test_an_open_breaker_stops_calling_a_failing_pool(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    result = run(run_cli, write_pipeline(BREAKER), "--workers", "4")
    assert result.code == 1, result.output
    called = lines(tmp_path / "calls.txt")
    assert 5 <= len(called) <= 5 + 2, called  # the threshold, plus what was already running
    steps = show(run_cli, result.stdout)["steps"]
    assert len(steps) == 20 and {s["state"] for s in steps} == {"failed"}
    refused = [s for s in steps if "circuit breaker" in (s["error"] or "")]
    assert len(refused) == 20 - len(called)
    assert all("'api'" in s["error"] for s in refused)
    assert {s["step_id"] for s in refused}.isdisjoint(f"call.{i}" for i in called)
