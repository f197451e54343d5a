"""`runner graph`: every example pipeline in every format; the DOT renders with Graphviz,
template instances are clusters, a dynamic for_each is one node marked as mapped, and `-o x.svg`
renders (or says how to install Graphviz when it is missing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PIPELINES, REPO, RunCli, no_traceback

EXAMPLES = sorted(PIPELINES.glob("*.yaml"))
IDS = [p.name for p in EXAMPLES]
DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(
    DOT is None,
    reason="Graphviz's `dot` is not installed (apt-get install graphviz; "
    "`make test` runs tests/ensure_graphviz.py to install it)",
)


def graph(run_cli: RunCli, path: Path, *args: str) -> str:
    result = run_cli("graph", str(path), *args, cwd=REPO)
    assert result.code == 0, result.output
    assert no_traceback(result.output)
    return result.stdout


def plan_nodes(run_cli: RunCli, path: Path) -> list[dict[str, object]]:
    nodes: list[dict[str, object]] = json.loads(graph(run_cli, path, "--json"))["nodes"]
    return nodes


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_every_format_of_every_example(path: Path, run_cli: RunCli) -> None:
    data = json.loads(graph(run_cli, path, "--json"))
    steps = [n for n in data["nodes"] if n["kind"] != "group"]
    assert steps and data["name"]
    ids = {n["id"] for n in data["nodes"]}
    for node in data["nodes"]:
        assert set(node["needs"]) <= ids, node

    text = graph(run_cli, path, "--text")
    assert text.startswith(f"pipeline {data['name']}: {len(steps)} step")
    for node in steps:
        assert node["id"] in text

    dot = graph(run_cli, path, "--dot")
    assert dot.startswith(f'digraph "{data["name"]}" {{') and dot.rstrip().endswith("}")
    for node in steps:
        assert f'"{node["id"]}" [label=' in dot

    mermaid = graph(run_cli, path, "--mermaid")
    assert mermaid.startswith("flowchart LR\n")
    assert mermaid.count('["') >= len(steps)


@needs_dot
@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_the_dot_of_every_example_renders(path: Path, run_cli: RunCli) -> None:
    dot = graph(run_cli, path, "--dot")
    done = subprocess.run(
        [str(DOT), "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "<svg" in done.stdout


def test_text_is_the_default_format(run_cli: RunCli) -> None:
    path = PIPELINES / "hello.yaml"
    assert graph(run_cli, path) == graph(run_cli, path, "--text")


def test_template_instances_are_clusters(run_cli: RunCli) -> None:
    dot = graph(run_cli, PIPELINES / "etl.yaml", "--dot")
    for tenant in ("acme", "globex", "initech"):
        assert f'subgraph "cluster_etl.{tenant}" {{' in dot
        assert f'label="etl.{tenant} (template)";' in dot
        assert f'"etl.{tenant}.extract" -> "etl.{tenant}.transform";' in dot
    assert 'subgraph "cluster_etl" {' in dot
    mermaid = graph(run_cli, PIPELINES / "etl.yaml", "--mermaid")
    assert mermaid.count("subgraph ") == 4


def test_a_dynamic_for_each_is_one_node_marked_mapped(run_cli: RunCli, tmp_path: Path) -> None:
    path = tmp_path / "mapped.yaml"
    path.write_text(
        "version: 1\nname: mapped\nparams: {static: [a, b]}\nsteps:\n"
        "  - {id: list, uses: noop}\n"
        "  - id: each\n    needs: list\n    for_each: '{{ steps.list.output }}'\n"
        "    uses: shell\n    with: {cmd: 'echo {{ item }}'}\n"
        "  - id: fixed\n    for_each: '{{ params.static }}'\n    uses: noop\n"
    )
    nodes = {n["id"]: n for n in plan_nodes(run_cli, path)}
    assert nodes["each"]["kind"] == "mapped"
    assert nodes["each"]["for_each"] == "{{ steps.list.output }}"
    assert not any(nid.startswith("each.") for nid in nodes)
    # A list known at load time is expanded at plan time.
    assert {"fixed.a", "fixed.b"} <= set(nodes) and nodes["fixed"]["kind"] == "group"

    assert "each [shell] (mapped)  <- list" in graph(run_cli, path)
    dot = graph(run_cli, path, "--dot")
    assert '"each" [label="each [shell] (mapped)", shape=box3d' in dot
    assert '"list" -> "each";' in dot
    assert '[["each [shell] (mapped)"]]' in graph(run_cli, path, "--mermaid")


def test_the_example_map_reduce_is_drawn_mapped(run_cli: RunCli) -> None:
    path = PIPELINES / "map-reduce.yaml"
    if not path.exists():
        pytest.skip("no map-reduce example")
    assert "(mapped)" in graph(run_cli, path)


@needs_dot
def test_output_to_svg_renders_through_graphviz(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "etl.svg"
    result = run_cli("graph", str(PIPELINES / "etl.yaml"), "-o", str(out))
    assert result.code == 0, result.output
    assert out.read_text().lstrip().startswith(("<?xml", "<svg", "<!DOCTYPE"))
    assert "<svg" in out.read_text()
    assert "etl.acme.extract" in out.read_text()


def test_output_to_dot_file_needs_no_graphviz(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "etl.dot"
    result = run_cli("graph", str(PIPELINES / "etl.yaml"), "--dot", "-o", str(out))
    assert result.code == 0, result.output
    assert out.read_text().startswith('digraph "etl"')


def test_svg_without_graphviz_says_how_to_install_it(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "etl.svg"
    venv_bin = str(Path(sys.executable).parent)
    result = run_cli("graph", str(PIPELINES / "etl.yaml"), "-o", str(out), env={"PATH": venv_bin})
    assert os.path.exists(os.path.join(venv_bin, "runner"))
    assert result.code == 2, result.output
    assert no_traceback(result.output)
    assert "Graphviz" in result.stderr
    assert "apt-get install graphviz" in result.stderr
    assert "--dot" in result.stderr
    assert not out.exists()


def test_graph_of_an_invalid_file_exits_2(run_cli: RunCli) -> None:
    result = run_cli("graph", "tests/pipelines/invalid/cycle_3.yaml", cwd=REPO)
    assert result.code == 2
    assert no_traceback(result.output)
    assert "dependency cycle: a -> b -> c -> a" in result.stderr


# -- finally steps and compensations, in every format -----------------------------------------

SAGA = PIPELINES / "order-saga.yaml"


def test_finally_and_compensations_in_text(run_cli: RunCli) -> None:
    text = graph(run_cli, SAGA, "--text")
    main, _, last = text.partition("finally (after every other step):\n")
    assert last == "  notify [shell]\n", text  # not on level 0 with the first steps
    assert "notify" not in main
    assert "  reserve [python]\n    compensate [python] (undoes reserve if the run fails)" in main
    assert "compensate [python] (undoes charge if the run fails)" in main
    assert "undoes ship" not in text


def test_finally_and_compensations_in_json(run_cli: RunCli) -> None:
    nodes = {n["id"]: n for n in plan_nodes(run_cli, SAGA)}
    assert nodes["notify"]["finally"] is True
    assert "finally" not in nodes["ship"]
    assert nodes["reserve"]["compensate"]["uses"] == "python"
    assert nodes["charge"]["compensate"]["with"]["call"] == "saga_lib:refund"
    assert "compensate" not in nodes["ship"]


def test_finally_and_compensations_in_dot(run_cli: RunCli, tmp_path: Path) -> None:
    dot = graph(run_cli, SAGA, "--dot")
    cluster = dot[dot.index('subgraph "cluster_finally"') :]
    assert cluster.index('"notify" [label=') < cluster.index("}")
    assert '"reserve" -> "reserve (compensate)" [style=dashed' in dot
    assert '"charge" -> "charge (compensate)"' in dot and "ship (compensate)" not in dot
    if DOT is not None:  # Graphviz reads it: the clusters and nodes are well formed
        svg = subprocess.run([DOT, "-Tsvg"], input=dot, capture_output=True, text=True)
        assert svg.returncode == 0, svg.stderr
        assert "undoes reserve" in svg.stdout and "after every other step" in svg.stdout


def test_finally_and_compensations_in_mermaid(run_cli: RunCli) -> None:
    mermaid = graph(run_cli, SAGA, "--mermaid")
    block = mermaid[mermaid.index('subgraph finally["finally (after every other step)"]') :]
    assert block.splitlines()[1].strip() == 'n3["notify [shell]"]'
    assert block.splitlines()[2].strip() == "end"
    assert 'u0>"compensate [python] (undoes reserve if the run fails)"]' in mermaid
    assert "n0 -. undo .-> u0" in mermaid and "n1 -. undo .-> u1" in mermaid


def test_mermaid_md_is_a_fenced_block(run_cli: RunCli, tmp_path: Path) -> None:
    plain = graph(run_cli, SAGA, "--mermaid")
    fenced = graph(run_cli, SAGA, "--mermaid", "--md")
    assert fenced == f"```mermaid\n{plain}```\n"
    out = tmp_path / "graph.md"
    assert run_cli("graph", str(SAGA), "--mermaid", "--md", "-o", str(out)).code == 0
    assert out.read_text() == fenced
    wrong = run_cli("graph", str(SAGA), "--dot", "--md")
    assert wrong.code == 2 and "--md goes with --mermaid" in wrong.stderr
