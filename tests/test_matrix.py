"""A matrix (issue: real pipelines natively, item 2): `for_each: {matrix, include, exclude,
fail_fast, max_parallel}` gives one instance per combination, by GitHub Actions' rules, with
keys built from the values; `fail_fast` cancels a failed leg's siblings only; `max_parallel`
counts legs, a template instance holding its place from its first step to its end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import RunCli, no_traceback, summary_of

WritePipeline = Callable[..., Path]


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


# GitHub's own example of `include` ("Expanding or adding matrix configurations"), with the
# combinations its documentation lists as the result.
GITHUB_INCLUDE = """
version: 1
name: include
steps:
  - id: job
    uses: shell
    for_each:
      matrix:
        fruit: [apple, pear]
        animal: [cat, dog]
      include:
        - color: green
        - color: pink
          animal: cat
        - fruit: apple
          shape: circle
        - fruit: banana
        - fruit: banana
          animal: cat
    with: {cmd: "echo '{{ item | tojson }}'"}
"""


def test_include_follows_github_rules(run_cli: RunCli, write_pipeline: WritePipeline) -> None:
    code, steps, output = summary_of(run_cli, write_pipeline(GITHUB_INCLUDE))
    assert code == 0, output
    items = {sid: json.loads(s["output"]) for sid, s in steps.items() if sid != "job"}
    assert items == {
        "job.apple.cat": {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        "job.apple.dog": {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        "job.pear.cat": {"fruit": "pear", "animal": "cat", "color": "pink"},
        "job.pear.dog": {"fruit": "pear", "animal": "dog", "color": "green"},
        "job.banana": {"fruit": "banana"},
        "job.banana.cat": {"fruit": "banana", "animal": "cat"},
    }
    # in the order GitHub creates the jobs: the first axis varies slowest, added ones last
    assert [s for s in steps if s != "job"] == list(items)


EXCLUDE_AND_KEYS = """
version: 1
name: exclude
params:
  oses: [linux, macos]
steps:
  - id: build
    uses: shell
    for_each:
      matrix:
        os: "{{ params.oses }}"
        python: ["3.11", "3.12"]
      exclude:
        - {os: macos, python: "3.11"}
      include:
        - {os: linux, experimental: true}
    as: leg
    with: {cmd: "echo {{ leg.os }}/{{ leg.python }}/{{ leg.experimental | default(false) }}"}
  - id: report
    uses: shell
    needs: [build]
    with: {cmd: "echo '{{ steps.build.outputs | tojson }}'"}
"""


def test_exclude_removes_matching_combinations_and_keys_come_from_the_values(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(EXCLUDE_AND_KEYS)
    code, steps, output = summary_of(run_cli, path, "--param", 'oses=["linux", "macos", "win"]')
    assert code == 0, output
    assert json.loads(steps["report"]["output"]) == {
        "linux.3-11": "linux/3.11/true",
        "linux.3-12": "linux/3.12/true",
        "macos.3-12": "macos/3.12/false",
        "win.3-11": "win/3.11/false",
        "win.3-12": "win/3.12/false",
    }


MISUSE = """
version: 1
name: misuse
steps:
  - id: a
    uses: noop
    for_each:
      matrix:
        os: [linux, macos]
        python: "3.12"
      exclude: [{arch: arm}]
  - id: b
    uses: noop
    for_each:
      matrix: {}
  - id: c
    uses: noop
    for_each:
      matrix: {v: ["3.12", "3-12"]}
  - id: d
    uses: noop
    for_each:
      matrix:
        os: [linux]
        include: [{os: linux}]
  - id: e
    uses: noop
    for_each:
      matrix: {os: []}
  - id: f
    uses: noop
    max_parallel: 1
    for_each:
      matrix: {os: [linux]}
      max_parallel: 2
"""


def test_validate_rejects_a_misused_matrix_with_located_messages(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(MISUSE)
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert errors_of(result.stderr) == [
        f"{path}:9:17: error: steps[0].for_each.matrix.python: the values of axis 'python' "
        "must be a list, got string '3.12'",
        f"{path}:10:24: error: steps[0].for_each.exclude[0].arch: exclude names 'arch', which "
        "is not an axis of the matrix (axes: os, python)",
        f"{path}:14:15: error: steps[1].for_each.matrix: the matrix is empty: give it an axis "
        "or `include`",
        f"{path}:18:7: error: steps[2].for_each: the combinations "
        '{"v": "3.12"} and {"v": "3-12"} both have the key \'3-12\'; set `key:` to tell them '
        "apart",
        f"{path}:24:18: error: steps[3].for_each.matrix.include: write `include` beside "
        "`matrix` (in the for_each mapping), not inside it",
        f"{path}:28:20: error: steps[4].for_each.matrix.os: axis 'os' has no values",
        f"{path}:34:21: error: steps[5].for_each.max_parallel: max_parallel is set in the "
        "matrix: leave it out of the step",
    ], result.stderr


def test_a_misspelt_key_of_the_matrix_block_gets_the_closest_name(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: typo
        steps:
          - id: a
            uses: noop
            for_each:
              matrix: {os: [linux]}
              exlude: [{os: linux}]
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert errors_of(result.stderr) == [
        f"{path}:8:7: error: steps[0].for_each.exlude: unknown key 'exlude' "
        "(did you mean 'exclude'?)"
    ], result.stderr
    ran = run_cli("run", str(path), "--progress", "plain")
    assert ran.code == 2 and "nothing was run" in ran.stderr, ran.output


# `slow` waits for a file nothing writes: only its cancellation ends it before its timeout.
# `bad` fails once `slow` runs and the runner has recorded `ok` as succeeded (read from the
# store: a leg that finished is never in the way of the cancellation, however loaded the machine).
OK_RECORDED = """
import os, sqlite3, time
db = sqlite3.connect(os.environ["PIPELINE_RUNNER_STATE_DIR"] + "/runs.db", timeout=60)
query = "SELECT 1 FROM steps WHERE step_id = 'test.ok' AND state = 'succeeded'"
end = time.time() + 60
while time.time() < end and not db.execute(query).fetchone():
    time.sleep(0.02)
"""

FAIL_FAST = """
version: 1
name: failfast
steps:
  - id: test
    uses: shell
    timeout: 60s
    for_each:
      matrix: {leg: [ok, bad, slow]}
      fail_fast: FAIL_FAST
    with:
      cmd: >-
        case {{ item.leg }} in
          ok) echo ok;;
          bad) until [ -e slow.started ]; do sleep 0.02; done;
          python3 ok_recorded.py || exit 7; exit 1;;
          slow) touch slow.started; while [ ! -e never ]; do sleep 0.05; done;;
        esac
  - id: elsewhere
    uses: shell
    with: {cmd: "while [ ! -e slow.started ]; do sleep 0.02; done; echo elsewhere"}
  - id: after
    uses: shell
    needs: [test]
    with: {cmd: "echo after"}
"""


def test_fail_fast_cancels_the_failed_legs_siblings_only(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        FAIL_FAST.replace("FAIL_FAST", "true"), files={"ok_recorded.py": OK_RECORDED}
    )
    code, steps, output = summary_of(run_cli, path, "--workers", "4")
    assert code == 1, output
    assert "code 1" in steps["test.bad"]["error"], output  # it waited for ok's record (not 7)
    states = {sid: s["state"] for sid, s in steps.items()}
    assert states == {
        "test.ok": "succeeded",
        "test.bad": "failed",
        "test.slow": "cancelled",
        "elsewhere": "succeeded",
        "after": "upstream_failed",
    }, output
    assert "test.bad failed and the matrix is fail_fast" in steps["test.slow"]["error"]


def test_without_fail_fast_the_siblings_run_on(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        FAIL_FAST.replace("FAIL_FAST", "false").replace("60s", "1s"),
        files={"ok_recorded.py": OK_RECORDED},
    )
    code, steps, output = summary_of(run_cli, path, "--workers", "4")
    assert code == 1, output
    assert steps["test.slow"]["state"] == "failed"  # its timeout ended it, not its sibling
    assert steps["test.slow"]["error_kind"] == "timeout", steps["test.slow"]


# Each step of a leg notes its leg's start and end in one file: at most two legs in progress.
LEGS = """
version: 1
name: legs
templates:
  job:
    params: {os: {}, py: {}}
    steps:
      - id: setup
        uses: shell
        with: {cmd: "echo start {{ os }}-{{ py }} >> legs.log; sleep 0.2; echo {{ os }}"}
      - id: test
        uses: shell
        needs: [setup]
        with: {cmd: "sleep 0.2; echo end {{ os }}-{{ py }} >> legs.log; echo {{ py }}"}
    outputs:
      where: "{{ steps.setup.output }}-{{ steps.test.output }}"
steps:
  - id: build
    template: job
    for_each:
      matrix: {os: [linux, macos], py: ["3.11", "3.12"]}
      max_parallel: 2
    with: {os: "{{ item.os }}", py: "{{ item.py }}"}
  - id: collect
    uses: shell
    needs: [build]
    with: {cmd: "echo '{{ steps.build.outputs | tojson }}'"}
"""


def test_a_matrix_of_templates_runs_one_instance_per_combination_two_at_a_time(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(LEGS)
    code, steps, output = summary_of(run_cli, path, "--workers", "4")
    assert code == 0, output
    assert json.loads(steps["collect"]["output"]) == {
        "linux.3-11": {"where": "linux-3.11"},
        "linux.3-12": {"where": "linux-3.12"},
        "macos.3-11": {"where": "macos-3.11"},
        "macos.3-12": {"where": "macos-3.12"},
    }
    assert "build.macos.3-12.test" in steps
    busy, most = 0, 0
    for line in (tmp_path / "legs.log").read_text().splitlines():
        busy += 1 if line.startswith("start") else -1
        most = max(most, busy)
    assert most == 2, (tmp_path / "legs.log").read_text()


def test_max_parallel_on_a_template_fan_out_is_no_longer_refused(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    text = LEGS.replace(
        'for_each:\n      matrix: {os: [linux, macos], py: ["3.11", "3.12"]}\n'
        "      max_parallel: 2",
        'for_each: [{os: linux, py: "1"}, {os: macos, py: "1"}, {os: win, py: "1"}]\n'
        '    key: "{{ item.os }}"\n    max_parallel: 1',
    )
    assert "max_parallel: 1" in text
    code, _, output = summary_of(run_cli, write_pipeline(text), "--workers", "4")
    assert code == 0, output
    lines = (tmp_path / "legs.log").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "end"] * 3, lines


RUN_TIME = """
version: 1
name: computed
steps:
  - id: plan
    uses: shell
    with:
      parse: json
      cmd: >-
        echo '{"matrix": {"os": ["linux", "macos"]}, "include": [{"os": "linux", "big": true}],
        "fail_fast": true}'
  - id: build
    uses: shell
    needs: [plan]
    for_each: "{{ steps.plan.output }}"
    with: {cmd: "echo {{ item.os }}{{ '+' if item.big | default(false) else '' }}"}
  - id: after
    uses: shell
    needs: [build]
    with: {cmd: "echo '{{ steps.build.outputs | tojson }}'"}
"""


def test_a_matrix_computed_by_an_earlier_step_expands_at_run_time(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    code, steps, output = summary_of(run_cli, write_pipeline(RUN_TIME))
    assert code == 0, output
    assert json.loads(steps["after"]["output"]) == {"linux": "linux+", "macos": "macos"}


def test_a_broken_computed_matrix_fails_its_step_with_the_reason(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    text = RUN_TIME.replace('"include": [{"os": "linux", "big": true}]', '"exclude": [{"arch": 1}]')
    code, steps, output = summary_of(run_cli, write_pipeline(text))
    assert code == 1, output
    assert steps["after"]["error"] == "needs build, which failed"
    assert (
        "failed          build: for_each: exclude names 'arch', which is not an axis of the "
        "matrix (axes: os)" in output
    )


def test_a_matrix_has_at_most_256_combinations_after_exclude(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    text = """
        version: 1
        name: big
        steps:
          - id: a
            uses: noop
            for_each:
              matrix: {a: [0,1,2,3,4,5,6,7,8,9], b: [0,1,2,3,4,5,6,7,8,9], c: [0,1,2]}
        """
    too_many = run_cli("validate", str(write_pipeline(text)))
    assert too_many.code == 2 and no_traceback(too_many.output), too_many.output
    assert "the matrix gives 300 combinations; at most 256" in too_many.stderr
    fewer = write_pipeline(text + "      exclude: [{c: 2}]\n", name="fewer.yaml")
    ok = run_cli("validate", str(fewer))
    assert ok.code == 0 and "ok (200 steps)" in ok.stdout, ok.output
