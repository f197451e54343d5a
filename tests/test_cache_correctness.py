"""The step cache is right, not just fast: a hit means the declared outputs on disk are the ones
that cache key produced; `{{ }}` in `cache.inputs`/`cache.outputs` is rendered per instance; an
input glob that matches nothing is an error; a directory is tracked by its content.

Every test runs the real `runner` on real files, several times against one state folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PIPELINES, RunCli, no_traceback

WritePipeline = Callable[..., Path]


def run(run_cli: RunCli, tmp_path: Path, path: Path, *args: str) -> dict[str, Any]:
    """One run; returns its JSON summary (`states` reads the steps' states from it)."""
    summary = tmp_path / "summary.json"
    summary.unlink(missing_ok=True)
    result = run_cli(
        "run", str(path), "--progress", "plain", "--workers", "2", "--json", str(summary), *args
    )
    assert no_traceback(result.output), result.output
    data: dict[str, Any] = json.loads(summary.read_text())
    data["text"] = result.output
    return data


def states(data: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["state"] for s in data["steps"]}


# -- 1. a hit means the outputs on disk are the ones that key produced -------------------------

BY_PARAM = """
version: 1
name: by-param
params: {n: 1}
steps:
  - id: write
    uses: shell
    cache: {outputs: [out.txt]}
    with: {cmd: "echo {{ params.n }} > out.txt"}
"""


def test_a_hit_needs_the_outputs_its_key_produced(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(BY_PARAM)
    out = tmp_path / "out.txt"
    for n, state in [("1", "succeeded"), ("2", "succeeded"), ("1", "succeeded"), ("1", "cached")]:
        data = run(run_cli, tmp_path, path, "--param", f"n={n}")
        assert data["status"] == "succeeded", data["text"]
        assert states(data) == {"write": state}, (n, data["text"])
        assert out.read_text() == f"{n}\n"


def test_an_output_changed_by_hand_is_a_miss(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(BY_PARAM)
    assert states(run(run_cli, tmp_path, path)) == {"write": "succeeded"}
    (tmp_path / "out.txt").write_text("edited\n")
    assert states(run(run_cli, tmp_path, path)) == {"write": "succeeded"}
    assert (tmp_path / "out.txt").read_text() == "1\n"
    assert states(run(run_cli, tmp_path, path)) == {"write": "cached"}


# -- 2. `{{ }}` in cache globs, rendered per instance -------------------------------------------

PER_ITEM = """
version: 1
name: per-item
steps:
  - id: copy
    for_each: [a, b]
    uses: shell
    cache:
      inputs: ["data/{{ item }}.csv"]
      outputs: ["out/{{ item }}.txt"]
    with: {cmd: "mkdir -p out && cp data/{{ item }}.csv out/{{ item }}.txt"}
"""


def seed(tmp_path: Path, items: tuple[str, ...] = ("a", "b")) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    for item in items:
        (tmp_path / "data" / f"{item}.csv").write_text(f"{item},1\n")


def test_templated_globs_in_a_for_each_are_rendered_per_instance(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(PER_ITEM)
    seed(tmp_path)
    first = run(run_cli, tmp_path, path)
    assert states(first) == {"copy.a": "succeeded", "copy.b": "succeeded"}, first["text"]
    assert states(run(run_cli, tmp_path, path)) == {"copy.a": "cached", "copy.b": "cached"}

    (tmp_path / "data" / "a.csv").write_text("a,2\n")
    assert states(run(run_cli, tmp_path, path)) == {"copy.a": "succeeded", "copy.b": "cached"}
    assert (tmp_path / "out" / "a.txt").read_text() == "a,2\n"

    (tmp_path / "out" / "b.txt").unlink()
    assert states(run(run_cli, tmp_path, path)) == {"copy.a": "cached", "copy.b": "succeeded"}
    assert (tmp_path / "out" / "b.txt").read_text() == "b,1\n"


IN_TEMPLATE = """
version: 1
name: in-template
templates:
  per_item:
    params: {name: {}}
    steps:
      - id: copy
        uses: shell
        cache:
          inputs: ["data/{{ name }}.csv"]
          outputs: ["out/{{ name }}.txt"]
        with: {cmd: "mkdir -p out && cp data/{{ name }}.csv out/{{ name }}.txt"}
steps:
  - id: each
    for_each: [a, b]
    as: name
    template: per_item
    with: {name: "{{ name }}"}
"""


def test_templated_globs_in_a_template_instance_are_rendered_per_instance(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(IN_TEMPLATE)
    seed(tmp_path)
    ids = ("each.a.copy", "each.b.copy")
    assert set(states(run(run_cli, tmp_path, path)).values()) == {"succeeded"}
    assert states(run(run_cli, tmp_path, path)) == dict.fromkeys(ids, "cached")
    (tmp_path / "data" / "b.csv").write_text("b,2\n")
    third = states(run(run_cli, tmp_path, path))
    assert third == {"each.a.copy": "cached", "each.b.copy": "succeeded"}


FROM_OUTPUT = """
version: 1
name: from-output
steps:
  - id: names
    uses: shell
    with: {cmd: "echo '[\\"a\\", \\"b\\"]'", parse: json}
  - id: copy
    needs: names
    for_each: "{{ steps.names.output }}"
    uses: shell
    cache:
      inputs: ["data/{{ item }}.csv"]
      outputs: ["out/{{ item }}.txt"]
    with: {cmd: "mkdir -p out && cp data/{{ item }}.csv out/{{ item }}.txt"}
"""


def test_globs_known_only_at_run_time_are_rendered_then(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(FROM_OUTPUT)
    seed(tmp_path)
    first = run(run_cli, tmp_path, path)
    assert first["status"] == "succeeded", first["text"]
    copies = {k: v for k, v in states(first).items() if k.startswith("copy.")}
    assert copies == {"copy.a": "succeeded", "copy.b": "succeeded"}
    (tmp_path / "data" / "a.csv").write_text("a,2\n")
    again = states(run(run_cli, tmp_path, path))
    assert (again["copy.a"], again["copy.b"]) == ("succeeded", "cached")


# -- an input glob that matches nothing ---------------------------------------------------------

NO_INPUT = """
version: 1
name: no-input
steps:
  - id: copy
    for_each: [a, b]
    uses: shell
    cache:
      inputs: ["data/{{ item }}.csv"]
    with: {cmd: "cat data/{{ item }}.csv"}
"""


def test_an_input_glob_matching_nothing_is_a_located_validate_error(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(NO_INPUT)
    seed(tmp_path, ("a",))
    for command in ("validate", "run"):
        result = run_cli(command, str(path))
        assert result.code != 0, result.output
        assert no_traceback(result.output)
        assert (
            "p.yaml:8:16: error: steps[0].cache.inputs[0]: input glob 'data/b.csv' matches no file"
            in result.output
        ), result.output
        assert "data/a.csv" not in result.output


MADE_BY_A_NEED = """
version: 1
name: made-by-a-need
params: {make: true}
steps:
  - id: make
    uses: shell
    with: {cmd: "if {{ params.make }}; then echo 1 > made.csv; fi"}
  - id: use
    needs: make
    uses: shell
    cache: {inputs: ["made*.csv"]}
    with: {cmd: "cat made.csv"}
"""


def test_an_input_a_need_creates_is_checked_when_the_step_starts(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(MADE_BY_A_NEED)
    assert run_cli("validate", str(path)).code == 0
    made = run(run_cli, tmp_path, path)
    assert states(made) == {"make": "succeeded", "use": "succeeded"}, made["text"]

    (tmp_path / "made.csv").unlink()
    missing = run(run_cli, tmp_path, path, "--param", "make=false")
    assert states(missing) == {"make": "succeeded", "use": "failed"}
    step = next(s for s in missing["steps"] if s["id"] == "use")
    assert step["error"] == "cache: input glob 'made*.csv' matches no file", step


# -- a directory is tracked by its content ------------------------------------------------------

DIRECTORIES = """
version: 1
name: directories
steps:
  - id: build
    uses: shell
    cache: {inputs: [src], outputs: ["ou*"]}
    with: {cmd: "echo build >> calls.txt; rm -rf out; mkdir -p out/sub; cp -r src/. out/sub/"}
"""


def test_directories_are_tracked_by_their_files_names_and_bytes(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(DIRECTORIES)
    (tmp_path / "src" / "deep").mkdir(parents=True)
    (tmp_path / "src" / "deep" / "x.txt").write_text("x\n")
    calls = tmp_path / "calls.txt"

    def build_state() -> str:
        return states(run(run_cli, tmp_path, path))["build"]

    assert build_state() == "succeeded"
    assert build_state() == "cached"
    (tmp_path / "src" / "deep" / "x.txt").write_text("y\n")  # an input's bytes
    assert build_state() == "succeeded"
    (tmp_path / "src" / "deep" / "x.txt").rename(tmp_path / "src" / "deep" / "z.txt")  # a name
    assert build_state() == "succeeded"
    (tmp_path / "out" / "sub" / "deep" / "z.txt").write_text("edited\n")  # an output's bytes
    assert build_state() == "succeeded"
    (tmp_path / "out" / "sub" / "extra.txt").write_text("extra\n")  # a file added to an output
    assert build_state() == "succeeded"
    shutil.rmtree(tmp_path / "out" / "sub" / "deep")  # a folder removed from an output
    assert build_state() == "succeeded"
    assert (tmp_path / "out" / "sub" / "deep" / "z.txt").read_text() == "y\n"
    assert build_state() == "cached"
    assert calls.read_text().splitlines() == ["build"] * 6


# -- the DVC foreach example ------------------------------------------------------------------


def test_the_dvc_foreach_example_reruns_only_the_item_that_changed(
    run_cli: RunCli, tmp_path: Path
) -> None:
    folder = tmp_path / "pipelines"
    shutil.copytree(PIPELINES, folder)
    shutil.rmtree(folder / "build", ignore_errors=True)  # nothing from an earlier run of it
    path = folder / "dvc-foreach.yaml"

    first = run(run_cli, tmp_path, path)
    assert first["status"] == "succeeded", first["text"]
    assert set(states(first).values()) == {"succeeded"}
    assert first["outputs"]["models"]["eu"]["rows"] == 3
    second = run(run_cli, tmp_path, path)
    assert set(states(second).values()) == {"cached"}, second["text"]
    assert second["outputs"] == first["outputs"]

    raw = folder / "data" / "dvc-foreach" / "eu.csv"
    raw.write_text(raw.read_text() + "2024-01-04,13.0\n")
    third = run(run_cli, tmp_path, path)
    reran = {k for k, v in states(third).items() if v == "succeeded"}
    assert reran == {"models.eu.prepare", "models.eu.train", "report"}, third["text"]
    assert third["outputs"]["models"]["eu"]["rows"] == 4

    shutil.rmtree(folder / "build" / "dvc-foreach" / "models" / "us")
    fourth = run(run_cli, tmp_path, path)
    reran = {k for k, v in states(fourth).items() if v == "succeeded"}
    assert reran == {"models.us.train"}, fourth["text"]
    assert (folder / "build" / "dvc-foreach" / "models" / "us" / "model.json").exists()


# -- 5. a step of a nested pipeline file: its files are in that file's folder ------------------

NESTED_PARENT = """
version: 1
name: parent
steps:
  - id: sub
    uses: pipeline
    with: {file: sub/child.yaml}
"""
NESTED_CHILD = """
version: 1
name: child
steps:
  - id: write
    uses: shell
    cache: {inputs: [in.txt], outputs: [out.txt]}
    with: {cmd: "cat in.txt > out.txt"}
"""


def test_a_nested_files_cache_reads_and_writes_in_its_own_folder(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    """The step runs in sub/ (its file's folder): its cache inputs and outputs are there too,
    so the second run is a hit, and a changed input or a changed output there is a miss."""
    path = write_pipeline(NESTED_PARENT)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text(NESTED_CHILD)
    (tmp_path / "sub" / "in.txt").write_text("one\n")
    first = run(run_cli, tmp_path, path)
    assert first["status"] == "succeeded", first["text"]
    assert (tmp_path / "sub" / "out.txt").read_text() == "one\n"
    assert states(run(run_cli, tmp_path, path))["sub.write"] == "cached"
    (tmp_path / "sub" / "in.txt").write_text("two\n")
    assert states(run(run_cli, tmp_path, path))["sub.write"] == "succeeded"
    assert (tmp_path / "sub" / "out.txt").read_text() == "two\n"
    (tmp_path / "sub" / "out.txt").write_text("edited\n")
    assert states(run(run_cli, tmp_path, path))["sub.write"] == "succeeded"
    assert states(run(run_cli, tmp_path, path))["sub.write"] == "cached"
