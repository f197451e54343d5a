"""Bounded loops (`loop: {until, max_iterations}`), through the `runner` command: each
iteration is a recorded step `<id>.<k>` that sees `loop.index` and `loop.previous`, the loop
ends when `until` holds over the last output or fails with kind `loop_limit`, a resume goes on
from the last recorded iteration, and `validate` locates every mistake."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PIPELINES, RunCli, no_traceback, summary_of

LIB = """
import os

def count(index, previous):
    with open("calls.txt", "a") as fh:
        fh.write(f"{index}\\n")
    return {"index": index, "total": (previous or {}).get("total", 0) + index}

def fail_at_three(index):
    if index == 3 and not os.path.exists("fixed"):
        raise RuntimeError("broken at 3")
    with open("calls.txt", "a") as fh:
        fh.write(f"{index}\\n")
    return index

def flaky(index):
    # every iteration fails its first attempt: the retry of that iteration passes
    marker = f"tried-{index}"
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"first attempt of {index}")
    return index
"""

Write = Callable[..., Path]


def calls(tmp_path: Path) -> list[int]:
    path = tmp_path / "calls.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def summary_in(
    run_cli: RunCli, path: Path, folder: Path, *args: str
) -> tuple[int, dict[str, Any], str]:
    """`runner run PATH --json FOLDER/summary.json`: exit code, steps by id, output."""
    out = folder / "summary.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(out), *args)
    assert no_traceback(result.output) and out.exists(), result.output
    return result.code, {s["id"]: s for s in json.loads(out.read_text())["steps"]}, result.output


def show(run_cli: RunCli, run_id: str) -> dict[str, dict[str, Any]]:
    result = run_cli("show", "--json", run_id)
    assert result.code == 0, result.output
    return {row["step_id"]: row for row in json.loads(result.stdout)["steps"]}


def test_a_loop_ends_at_the_iteration_whose_output_meets_until(
    run_cli: RunCli, write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: counting
        steps:
          - id: x
            uses: python
            with:
              call: lib:count
              args: ["{{ loop.index }}", "{{ loop.previous }}"]
            loop: {until: "output.total >= 10", max_iterations: 8}
          - id: after
            needs: x
            uses: shell
            with: {cmd: "echo total={{ steps.x.output.total }} last={{ steps.x.output.index }}"}
        """,
        files={"lib.py": LIB},
    )
    code, steps, output = summary_of(run_cli, path)
    assert code == 0, output
    # loop.previous threads the running total: 1, 3, 6, 10 -> until holds at k = 4
    assert [steps[f"x.{k}"]["output"]["total"] for k in range(1, 5)] == [1, 3, 6, 10]
    assert "x.5" not in steps and calls(tmp_path) == [1, 2, 3, 4]
    assert steps["after"]["output"] == "total=10 last=4"
    run_id = json.loads((tmp_path / "summary.json").read_text())["run_id"]
    listed = run_cli("show", run_id)
    assert all(f"x.{k} " in listed.stdout for k in range(1, 5)), listed.output
    assert show(run_cli, run_id)["x"]["state"] == "succeeded"


def test_a_loop_whose_until_never_holds_fails_with_loop_limit(
    run_cli: RunCli, write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: endless
        steps:
          - id: x
            uses: shell
            with: {cmd: "echo {{ loop.index }}"}
            loop: {until: "output == 'never'", max_iterations: 3}
          - {id: after, needs: x, uses: shell, with: {cmd: echo no}}
        """
    )
    code, steps, output = summary_of(run_cli, path)
    assert code == 1, output
    assert [steps[f"x.{k}"]["output"] for k in (1, 2, 3)] == ["1", "2", "3"]
    assert "x.4" not in steps
    assert steps["x"]["state"] == "failed" and steps["x"]["error_kind"] == "loop_limit"
    assert "did not hold after 3 iterations" in steps["x"]["error"]
    assert steps["after"]["state"] == "upstream_failed"
    assert "[loop_limit]" in output


def test_resume_goes_on_from_the_iteration_that_failed(
    run_cli: RunCli, write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: resumable
        steps:
          - id: x
            uses: shell
            with:
              # fails at 3 until the file `fixed` exists; notes each iteration that ran
              cmd: >-
                if [ {{ loop.index }} = 3 ] && [ ! -e fixed ]; then exit 1; fi;
                echo {{ loop.index }} >> calls.txt; echo {{ loop.index }}
            loop: {until: "output == '4'", max_iterations: 6}
        """,
        files={"lib.py": LIB},
    )
    code, steps, output = summary_of(run_cli, path)
    assert code == 1, output
    assert steps["x.3"]["state"] == "failed" and "x.4" not in steps
    assert calls(tmp_path) == [1, 2]
    run_id = json.loads((tmp_path / "summary.json").read_text())["run_id"]
    (tmp_path / "fixed").touch()
    resumed = run_cli("resume", run_id, "--progress", "plain")
    assert resumed.code == 0 and no_traceback(resumed.output), resumed.output
    # 1 and 2 are kept from the first run, not run again; 3 runs again (its second attempt)
    assert calls(tmp_path) == [1, 2, 3, 4]
    rows = show(run_cli, run_id)
    assert {k: rows[k]["state"] for k in ("x", "x.1", "x.2", "x.3", "x.4")} == dict.fromkeys(
        ("x", "x.1", "x.2", "x.3", "x.4"), "succeeded"
    )
    assert (rows["x.1"]["attempts"], rows["x.3"]["attempts"]) == (1, 2)


def test_retries_apply_to_each_iteration(
    run_cli: RunCli, write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: retried
        steps:
          - id: x
            uses: python
            retries: {max: 1, delay: 0.01, jitter: false}
            with:
              call: lib:flaky
              args: ["{{ loop.index }}"]
            loop: {until: "output == 3", max_iterations: 5}
        """,
        files={"lib.py": LIB},
    )
    code, steps, output = summary_of(run_cli, path)
    assert code == 0, output
    assert [steps[f"x.{k}"]["attempts"] for k in (1, 2, 3)] == [2, 2, 2]


TEMPLATE_LOOP = """
version: 1
name: tosses
templates:
  toss:
    params:
      flip: {}
      before: {default: null}
    steps:
      - id: look  # line `flip` of sides.txt; fails when there is none
        uses: shell
        with: {cmd: "sed -n {{ flip }}p sides.txt | grep ."}
      - id: say
        needs: look
        uses: shell
        with: {cmd: "echo {{ steps.look.output }} after {{ before.side | default('nothing') }}"}
    outputs:
      side: "{{ steps.look.output }}"
steps:
  - id: coin
    template: toss
    with: {flip: "{{ loop.index }}", before: "{{ loop.previous }}"}
    loop: {until: "output.side == 'heads'", max_iterations: 5}
  - id: result
    needs: coin
    uses: shell
    with: {cmd: "echo {{ steps.coin.output.side }}"}
"""


def test_a_template_instance_loops_with_each_iteration_a_copy_of_its_steps(
    run_cli: RunCli, write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline(
        TEMPLATE_LOOP, files={"lib.py": LIB, "sides.txt": "tails\ntails\nheads\n"}
    )
    code, steps, output = summary_of(run_cli, path)
    assert code == 0, output
    assert [steps[f"coin.{k}.look"]["output"] for k in (1, 2, 3)] == ["tails", "tails", "heads"]
    assert steps["coin.1.say"]["output"] == "tails after nothing"
    assert steps["coin.3.say"]["output"] == "heads after tails"
    assert "coin.4.look" not in steps
    assert steps["result"]["output"] == "heads"


def test_a_template_loop_resumes_after_its_last_recorded_iteration(
    run_cli: RunCli, write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline(TEMPLATE_LOOP, files={"lib.py": LIB, "sides.txt": "tails\ntails\n"})
    code, steps, output = summary_of(run_cli, path)
    assert code == 1, output  # the third flip has no side yet
    assert steps["coin.3.look"]["state"] == "failed"
    run_id = json.loads((tmp_path / "summary.json").read_text())["run_id"]
    # a different first side now: a flip run again would show it
    (tmp_path / "sides.txt").write_text("heads\ntails\nheads\n")
    resumed = run_cli("resume", run_id, "--progress", "plain")
    assert resumed.code == 0, resumed.output
    rows = show(run_cli, run_id)
    assert rows["coin.1.look"]["output"] == "tails" and rows["coin.1.look"]["attempts"] == 1
    assert rows["coin.3.look"]["output"] == "heads" and rows["coin.3.look"]["attempts"] == 2
    assert rows["result"]["output"] == "heads"


def test_the_argo_coinflip_recursive_translation_flips_until_heads(
    run_cli: RunCli, tmp_path: Path
) -> None:
    path = PIPELINES / "argo-coinflip-recursive.yaml"
    code, steps, output = summary_in(run_cli, path, tmp_path)
    assert code == 0, output
    flips = [steps[f"coinflip.{k}.flip-coin"]["output"] for k in range(1, 5)]
    assert flips == ["tails", "tails", "tails", "heads"]  # the default seed's sequence
    assert "coinflip.5.flip-coin" not in steps
    heads = {k: steps[f"coinflip.{k}.heads"]["state"] for k in range(1, 5)}
    assert heads == {1: "skipped", 2: "skipped", 3: "skipped", 4: "succeeded"}
    assert steps["coinflip.4.heads"]["output"] == "it was heads"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["outputs"] == {"flips": {"result": "heads"}}
    # another seed, another sequence: still ends at its first heads
    code, other, output = summary_in(run_cli, path, tmp_path, "--param", "seed=1")
    assert code == 0, output
    last = max(int(sid.split(".")[1]) for sid in other if sid.startswith("coinflip."))
    assert other[f"coinflip.{last}.flip-coin"]["output"] == "heads"
    assert all(other[f"coinflip.{k}.flip-coin"]["output"] == "tails" for k in range(1, last))


def test_graph_marks_a_looping_step(run_cli: RunCli, tmp_path: Path) -> None:
    path = str(PIPELINES / "argo-coinflip-recursive.yaml")
    text = run_cli("graph", path)
    assert text.code == 0, text.output
    assert (
        "coinflip [template: flip-coin, heads] (loop until output.result == 'heads', "
        "at most 50)" in text.stdout
    )
    dot = run_cli("graph", "--dot", path)
    assert dot.code == 0, dot.output
    assert '"coinflip" -> "coinflip" [label="loop", style=dashed];' in dot.stdout
    assert "peripheries=2" in dot.stdout
    dry = run_cli("run", "--dry-run", path)
    assert dry.code == 0, dry.output
    assert "- coinflip [template] (loop: at most 50 iterations, made at run time): run" in (
        dry.stdout
    )


def test_validate_locates_every_loop_mistake(run_cli: RunCli, write_pipeline: Write) -> None:
    path = write_pipeline(
        """
        version: 1
        name: broken
        steps:
          - id: a
            uses: shell
            with: {cmd: "echo {{ loop.index }}"}
            loop: {until: "output ==", max_iterations: 3}
          - id: b
            uses: shell
            for_each: [1, 2]
            with: {cmd: echo hi}
            loop: {until: "outptu == 1", max_iterations: 2}
          - id: c
            uses: shell
            with: {cmd: echo hi}
            loop: {until: "true", max_iterations: 100000}
          - id: d
            uses: shell
            with: {cmd: "echo {{ loop.index }}"}
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    lines = [
        line.split(": error: ", 1) for line in result.stderr.splitlines() if ": error: " in line
    ]
    found = {where.rsplit("/", 1)[-1]: message for where, message in lines}
    assert found["p.yaml:7:19"].startswith("steps[0].loop.until: template syntax error")
    assert found["p.yaml:10:5"] == (
        "steps[1].for_each: `for_each` cannot be combined with `loop` on one step"
    )
    assert found["p.yaml:12:19"].startswith("steps[1].loop.until: undefined name 'outptu'")
    assert found["p.yaml:16:43"] == (
        "steps[2].loop.max_iterations: max_iterations is at most 10000, got 100000"
    )
    assert found["p.yaml:19:17"] == "steps[3].with.cmd: undefined name 'loop'"
    assert len(found) == 5, result.stderr


def test_the_schema_holds_max_iterations_positive_and_until_required(
    run_cli: RunCli, write_pipeline: Write
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: broken
        steps:
          - id: e
            uses: shell
            with: {cmd: echo hi}
            loop: {until: "true", max_iterations: 0}
          - id: f
            uses: shell
            with: {cmd: echo hi}
            loop: {max_iterations: 2}
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert "p.yaml:7:43: error: steps[0].loop.max_iterations: expected at least 1" in result.stderr
    assert "p.yaml:11:11: error: steps[1].loop: missing required key 'until'" in result.stderr


def test_an_until_that_cannot_be_evaluated_fails_the_loop_with_its_reason(
    run_cli: RunCli, write_pipeline: Write
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: wrong
        steps:
          - id: x
            uses: shell
            with: {cmd: echo hi}
            loop: {until: "output.total > 1", max_iterations: 3}
        """
    )
    code, steps, output = summary_of(run_cli, path)
    assert code == 1, output
    assert steps["x"]["state"] == "failed" and steps["x"]["error_kind"] == "error"
    assert steps["x"]["error"] == "loop.until: 'str object' has no attribute 'total'"
    assert "x.2" not in steps
