"""Bad input, through `runner validate` and `runner run` as a user meets it (FAULTS.md 22-31):
nothing runs, nothing is written, exit 2, and every message is `FILE:LINE:COLUMN: error: PATH:
MESSAGE` with a way out.  Time and memory are measured on the real command (wait4's ru_maxrss of
the runner process itself), and in-process where a budget is tighter than a process start.

Fuzzed documents (hypothesis) are validated in batches, several files per command, so that the
cost of starting `runner` is paid once per example.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli, no_traceback
from faults_support import measured, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_runner.errors import PipelineError
from pipeline_runner.planner import plan_file

WritePipeline = Callable[..., Path]
ERROR_LINE = re.compile(r"^(?P<file>[^:]+)(?::(?P<line>\d+):(?P<col>\d+))?: error: (?P<rest>.*)$")
FUZZ = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the `nth` line of `text` holding `needle`."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return found[nth - 1]


def assert_refused(result: Any, tmp_path: Path, before: set[str]) -> None:
    """Exit 2, no traceback, and nothing written (no state folder, no run)."""
    assert result.code == 2, result.output
    assert no_traceback(result.output), result.output
    assert tree(tmp_path) == before


# -- 22: duplicate keys at any depth; merge keys still work --------------------------------------

DUPLICATES = """
version: 1
name: dup
x-base: &base
  retries: 2
  timeout: 30s
templates:
  etl:
    params:
      tenant: {}
    steps:
      - id: extract
        uses: shell
        <<: *base
        retries: 1
        with:
          cmd: echo one
          env:
            A: "1"
            B: "2"
            A: "3"
steps:
  - id: run
    template: etl
    with: {tenant: acme}
    with: {tenant: globex}
  - id: plain
    uses: noop
    <<: *base
    timeout: 5s
"""


@pytest.mark.fault(22)
def test_duplicate_keys_at_any_depth_name_both_lines_and_merge_keys_still_work(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(DUPLICATES)
    text = path.read_text()
    before = tree(tmp_path)
    for command in ("validate", "run"):
        result = run_cli(command, str(path))
        assert_refused(result, tmp_path, before)
        a1, a2 = line_of(text, 'A: "1"'), line_of(text, 'A: "3"')
        w1, w2 = line_of(text, "with: {tenant: acme}"), line_of(text, "with: {tenant: globex}")
        assert errors_of(result.stderr) == [
            f"{path}:{a2}:13: error: templates.etl.steps[0].with.env.A: duplicate key 'A' "
            f"(first defined on line {a1})",
            f"{path}:{w2}:5: error: steps[0].with: duplicate key 'with' "
            f"(first defined on line {w1})",
        ]
    # A key after a merge (`<<: *base` then `retries: 1`) is no duplicate: it overrides.
    path.write_text(
        text.replace('            A: "3"\n', "").replace("    with: {tenant: globex}\n", "")
    )
    assert run_cli("validate", str(path)).code == 0
    graph = run_cli("graph", "--json", str(path))
    nodes = {n["id"]: n for n in json.loads(graph.stdout)["nodes"]}
    assert (nodes["run.extract"]["retries"], nodes["run.extract"]["timeout"]) == (1, 30.0)
    assert (nodes["plain"]["retries"], nodes["plain"]["timeout"]) == (2, 5.0)


# -- 23: alias bombs --------------------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9, style: str = "flow") -> str:
    lines = ["version: 1", "name: bomb"]
    if style == "flow":
        lines.append('x-a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]')
        for prev, name in itertools.pairwise("abcdefghijklmnop"[: levels + 1]):
            lines.append(f"x-{name}: &{name} [" + ", ".join([f"*{prev}"] * width) + "]")
    else:  # mappings, the keys differing so that no duplicate key stops it first
        lines.append("x-a: &a {k: lol}")
        for prev, name in itertools.pairwise("abcdefghijklmnop"[: levels + 1]):
            lines.append(f"x-{name}: &{name}")
            lines += [f"  k{i}: *{prev}" for i in range(width)]
    last = "abcdefghijklmnop"[levels]
    lines += ["steps:", "  - id: a", "    uses: noop", f"    with: {{x: *{last}}}"]
    return "\n".join(lines) + "\n"


@pytest.mark.fault(23)
@pytest.mark.parametrize("style", ["flow", "mapping"])
def test_an_alias_bomb_is_refused_fast_in_small_memory(
    run_cli: RunCli, tmp_path: Path, style: str
) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(style=style))  # 9**10 nodes, were it expanded
    assert len(path.read_bytes()) < 2000
    before = tree(tmp_path)
    result = measured("validate", str(path), cwd=tmp_path)
    assert_refused(result, tmp_path, before)
    (line,) = errors_of(result.stderr)
    assert "an alias bomb?" in line, line
    assert result.peak_kb < 100 * 1024, result.peak_kb

    # The budget of 100 ms is tighter than starting a process: measured in-process, where
    # tracemalloc also sees every allocation the refusal made.
    warm = tmp_path / "warm.yaml"  # the first plan imports jinja2 and the schema: not timed
    warm.write_text("version: 1\nname: warm\nsteps: [{id: a, uses: noop, with: {x: '{{ 1 }}'}}]\n")
    plan_file(str(warm))
    tracemalloc.start()
    began = time.perf_counter()
    with pytest.raises(PipelineError, match="alias bomb"):
        plan_file(str(path))
    took = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert took < 0.1, took
    assert peak < 16 * 1024 * 1024, peak


# -- 24: deep nesting -------------------------------------------------------------------------

HEAD = "version: 1\nname: deep\nsteps: [{id: a, uses: noop}]\nx-deep: "


def deep(style: str, depth: int) -> str:
    if style == "flow-sequence":
        return HEAD + "[" * depth + "]" * depth + "\n"
    if style == "flow-mapping":
        return HEAD + "{a: " * depth + "1" + "}" * depth + "\n"
    return HEAD + "\n  " + "- " * depth + "1\n"  # block sequences, one per level


@pytest.mark.fault(24)
def test_deep_nesting_is_a_clear_error_never_a_crash(run_cli: RunCli, tmp_path: Path) -> None:
    files = []
    for style, depth in itertools.product(
        ("flow-sequence", "flow-mapping", "block"), (100, 10_000, 50_000)
    ):
        path = tmp_path / f"{style}-{depth}.yaml"
        path.write_text(deep(style, depth))
        files.append(path)
    before = tree(tmp_path)
    result = measured("validate", *map(str, files), cwd=tmp_path)
    assert_refused(result, tmp_path, before)  # 2, not -11 (the C parser's stack) nor 70
    errors = errors_of(result.stderr)
    assert len(errors) == len(files), result.stderr
    for path, line in zip(files, errors, strict=True):
        assert re.match(rf"{re.escape(str(path))}:[45]:\d+: error: x-deep", line), line
        assert "nesting is deeper than the limit of 64 levels" in line, line
    assert result.seconds < 10, result.seconds
    assert result.peak_kb < 100 * 1024, result.peak_kb


# -- 25: files over the size limit ------------------------------------------------------------

LIMIT = 10 * 1024 * 1024


@pytest.mark.fault(25)
def test_a_file_over_the_size_limit_is_refused_before_it_is_read(
    run_cli: RunCli, tmp_path: Path
) -> None:
    small = tmp_path / "small.yaml"
    small.write_text("version: 1\nname: p\nsteps: [{id: a, uses: noop}]\n")
    # Valid YAML, a comment for padding: it would parse fine were it read.
    big = tmp_path / "big.yaml"
    big.write_bytes(small.read_bytes() + b"#" + b"x" * (3 * LIMIT) + b"\n")
    size = big.stat().st_size
    baselines = {
        "validate": measured("validate", str(small), cwd=tmp_path),
        "run": measured("run", str(small), "--dry-run", cwd=tmp_path),
    }
    assert all(b.code == 0 for b in baselines.values()), baselines
    before = tree(tmp_path)
    for command, baseline in baselines.items():
        result = measured(command, str(big), cwd=tmp_path)
        assert_refused(result, tmp_path, before)
        assert errors_of(result.stderr) == [
            f"{big}: error: file is {size:,} bytes, over the limit of {LIMIT:,} "
            "(raise it with --max-file-size)"
        ]
        # Refused from its size alone: reading 30 MiB would show in the runner's memory.
        assert result.peak_kb - baseline.peak_kb < 8 * 1024, (result, baseline)
    raised = run_cli("validate", "--max-file-size", str(4 * LIMIT), str(big))
    assert raised.code == 0, raised.output
    # A device that never ends is read no further than the limit.
    endless = measured("validate", "--max-file-size", "100000", "/dev/zero", cwd=tmp_path)
    assert endless.code == 2, endless.output
    assert "over the limit of 100,000 bytes" in endless.stderr, endless.stderr
    assert endless.peak_kb - baselines["validate"].peak_kb < 8 * 1024, endless


# -- 26: YAML tags -------------------------------------------------------------------------------

TAGS = [
    "!!python/object/apply:os.system ['touch {canary}']",
    "!!python/object/new:os.system ['touch {canary}']",
    "!!python/name:os.system",
    "!!python/module:os",
    "!Ref other",
]


@pytest.mark.fault(26)
@pytest.mark.parametrize("tag", TAGS, ids=lambda t: t.split()[0])
def test_a_yaml_tag_is_unsupported_and_nothing_runs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, tag: str
) -> None:
    canary = tmp_path / "CANARY"
    path = write_pipeline(
        "version: 1\nname: p\nsteps:\n  - id: a\n    uses: shell\n    with:\n"
        f"      cmd: touch {canary}\n      x: {tag.format(canary=canary)}\n"
    )
    before = tree(tmp_path)
    for command in ("validate", "run"):
        result = run_cli(command, str(path))
        assert_refused(result, tmp_path, before)
        name = tag.split()[0]
        assert errors_of(result.stderr) == [
            f"{path}:8:10: error: steps[0].with.x: unsupported YAML tag '{name}'"
        ], result.stderr
    assert not canary.exists()


# -- 27: YAML 1.1 surprises -------------------------------------------------------------------

SURPRISES = """
version: 3.10
name: 3.10
description: 1.0
steps:
  - {id: a, uses: noop, continue_on_error: NO}
  - {id: b, uses: noop, continue_on_error: on}
"""


@pytest.mark.fault(27)
def test_yaml_1_1_surprises_say_what_was_found_and_what_to_write(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(SURPRISES)
    before = tree(tmp_path)
    result = run_cli("validate", str(path))
    assert_refused(result, tmp_path, before)
    assert errors_of(result.stderr) == [
        f"{path}:1:10: error: version: expected 1, found number 3.1 "
        "(YAML reads 3.10 as the number 3.1)",
        f"{path}:2:7: error: name: expected a string, found number 3.1 "
        "(YAML reads 3.10 as a number; quote it: '3.10')",
        f"{path}:3:14: error: description: expected a string, found number 1.0 "
        "(YAML reads 1.0 as a number; quote it: '1.0')",
        f"{path}:5:44: error: steps[0].continue_on_error: expected true or false, found string "
        "'NO' (YAML 1.2 reads NO as a string; write false)",
        f"{path}:6:44: error: steps[1].continue_on_error: expected true or false, found string "
        "'on' (YAML 1.2 reads on as a string; write true)",
    ]
    # This runner reads YAML 1.2: where any value is fine, the 1.1 words stay the strings
    # they look like (`on: push` is no `true: push`, Norway's `NO` is no `false`).
    path.write_text(
        "version: 1\nname: p\nparams: {on: push, country: NO, off: Off, y: n}\n"
        "steps: [{id: a, uses: noop}]\n"
    )
    graph = run_cli("graph", "--json", str(path))
    assert graph.code == 0, graph.output
    params = json.loads(graph.stdout)["params"]
    assert params == {"on": "push", "country": "NO", "off": "Off", "y": "n"}


# -- 28: unknown keys, typos, wrong types, anywhere; fuzzed documents ---------------------------

TYPOS = """
version: 1
name: p
stpes: []
defaults: {retires: 2}
templates:
  etl:
    params: {tenant: {}}
    steps:
      - {id: x, uses: shell, with: {cmd: echo, cwdd: .}}
steps:
  - id: a
    uses: shel
    timout: 5s
  - id: b
    uses: python
    with: {call: "m:f", kwarg: {}}
    retries: {max: 2, dealy: 1s}
  - id: c
    needs: [aa]
    uses: noop
  - id: d
    template: etl
    with: {tenant: acme}
"""


@pytest.mark.fault(28)
def test_typos_anywhere_come_with_a_path_and_a_did_you_mean(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TYPOS)
    before = tree(tmp_path)
    result = run_cli("validate", str(path))
    assert_refused(result, tmp_path, before)
    found = {m.group(1): m.group(2) for m in re.finditer(r": error: (\S+): (.*)", result.stderr)}
    expected = {
        "stpes": "did you mean 'steps'?",
        "defaults.retires": "did you mean 'retries'?",
        "steps[0].timout": "did you mean 'timeout'?",
        "steps[1].retries.dealy": "did you mean 'delay'?",
    }
    for place, hint in expected.items():
        assert place in found and hint in found[place], (place, result.stderr)
    # What the schema phase did not stop is found too, when the schema errors are fixed.
    fixed = path.read_text()
    for typo, right in (("stpes: []\n", ""), ("retires", "retries"), ("timout", "timeout"),
                        ("dealy", "delay")):  # fmt: skip
        fixed = fixed.replace(typo, right)
    path.write_text(fixed)
    result = run_cli("validate", str(path))
    assert_refused(result, tmp_path, tree(tmp_path))
    found = {m.group(1): m.group(2) for m in re.finditer(r": error: (\S+): (.*)", result.stderr)}
    for place, hint in {
        "templates.etl.steps[0].with.cwdd": "did you mean 'cwd'?",
        "steps[0].uses": "did you mean 'shell'?",
        "steps[1].with.kwarg": "did you mean 'kwargs'?",
        "steps[2].needs[0]": "did you mean 'a'?",
    }.items():
        assert place in found and hint in found[place], (place, result.stderr)


BASE: dict[str, Any] = {
    "version": 1,
    "name": "base",
    "description": "a pipeline to mutate",
    "params": {"n": 2},
    "defaults": {"retries": 1, "timeout": "30s"},
    "pools": {"db": 1},
    "steps": [
        {
            "id": "prepare",
            "uses": "shell",
            "with": {"cmd": "echo hi", "parse": "text"},
            "timeout": "5s",
            "retries": {"max": 2, "delay": "1s"},
        },
        {
            "id": "build",
            "uses": "python",
            "needs": ["prepare"],
            "with": {"call": "m:f", "kwargs": {"a": 1}},
            "priority": 3,
            "pool": "db",
            "continue_on_error": True,
        },
        {
            "id": "fanout",
            "needs": "build",
            "for_each": ["a", "b"],
            "max_parallel": 1,
            "uses": "noop",
        },
    ],
    "outputs": {"o": "{{ steps.build.output }}"},
}


def _places(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every key of a mapping whose keys the schema fixes (not params, env, kwargs,
    outputs, pools: there any name is fine)."""
    out = []
    if isinstance(doc, dict):
        free = path and path[-1] in ("params", "kwargs", "outputs", "pools")
        for key, value in doc.items():
            if not free:
                out.append((*path, key))
            out.extend(_places(value, (*path, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out.extend(_places(value, (*path, index)))
    return out


KEYS = [p for p in _places(BASE) if len(str(p[-1])) >= 5]  # short keys give no did-you-mean


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


# Fields holding a scalar or a list, where a mapping is always wrong (`description` takes any
# text, but not a mapping either).
VALUES = [p for p in _places(BASE) if not isinstance(_at(BASE, p), dict)]


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@st.composite
def mutation(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """(document, the path where an error must be reported, what that error must say)."""
    doc = copy.deepcopy(BASE)
    if draw(st.booleans()):  # a typo in a key
        path = draw(st.sampled_from(KEYS))
        key = str(path[-1])
        i = draw(st.integers(0, len(key) - 2))
        typo = draw(
            st.sampled_from(
                [key[:i] + key[i + 1 :], key[:i] + key[i] + key[i:],
                 key[:i] + key[i + 1] + key[i] + key[i + 2 :]]
            )
        )  # fmt: skip
        if typo == key:  # swapping two equal letters changes nothing
            typo = key + "s"
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        parent[typo] = parent.pop(key)
        return doc, dotted((*path[:-1], typo)), "did you mean"
    path = draw(st.sampled_from(VALUES))  # a value of the wrong type: no mapping fits there
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = {"unexpected": {"nested": [1, None]}}
    return doc, dotted(path), ""


@pytest.mark.fault(28)
@FUZZ
@given(cases=st.lists(mutation(), min_size=6, max_size=6))
def test_mutated_documents_get_path_precise_errors_never_a_traceback(
    tmp_path: Path, cases: list[tuple[dict[str, Any], str, str]]
) -> None:
    folder = Path(__import__("tempfile").mkdtemp(dir=tmp_path))
    files = []
    for index, (doc, _, _) in enumerate(cases):
        path = folder / f"m{index}.yaml"
        path.write_text(json.dumps(doc, indent=2))  # JSON is YAML: one value per line
        files.append(path)
    result = measured("validate", *map(str, files), cwd=folder)
    assert result.code == 2, result.output
    assert no_traceback(result.output), result.output
    for line in result.stderr.splitlines():
        assert ERROR_LINE.match(line) or re.fullmatch(r"\d+ errors? found", line), line
    for path, (_, place, hint) in zip(files, cases, strict=True):
        mine = [line for line in errors_of(result.stderr) if line.startswith(f"{path}:")]
        at = [line for line in mine if re.search(rf": error: {re.escape(place)}\b", line)]
        assert at, (place, mine)
        assert all(re.match(rf"{re.escape(str(path))}:\d+:\d+: ", line) for line in at), at
        assert any(hint in line for line in at), (hint, at)


# -- 29: cycles, self-needs, unknown needs ------------------------------------------------------


@st.composite
def dag_with_a_back_edge(draw: st.DrawFn) -> dict[str, list[str]]:
    """step -> its needs: a random DAG (needs only on earlier steps), plus one need of an
    earlier step on a later one that depends on it, which closes a cycle."""
    n = draw(st.integers(3, 12))
    names = [f"s{i}" for i in range(n)]
    needs: dict[str, list[str]] = {name: [] for name in names}
    for j in range(1, n):
        earlier = draw(st.lists(st.integers(0, j - 1), max_size=3, unique=True))
        needs[names[j]] = [names[i] for i in sorted(earlier)]
    below = {name: set() for name in names}  # everything a step depends on, transitively
    for name in names:
        for need in needs[name]:
            below[name] |= {need} | below[need]
    candidates = [(b, a) for b in names for a in sorted(below[b])]
    if not candidates:  # no edges were drawn: chain the first two
        needs["s1"] = ["s0"]
        candidates = [("s1", "s0")]
    later, earlier = draw(st.sampled_from(candidates))
    needs[earlier].append(later)
    return needs


def pipeline_of(needs: dict[str, list[str]]) -> str:
    lines = ["version: 1", "name: cyc", "steps:"]
    for name, on in needs.items():
        lines.append(f"  - {{id: {name}, uses: noop, needs: [{', '.join(on)}]}}")
    return "\n".join(lines) + "\n"


@pytest.mark.fault(29)
@FUZZ
@given(graphs=st.lists(dag_with_a_back_edge(), min_size=5, max_size=5))
def test_a_cycle_is_printed_and_it_is_a_real_cycle(
    tmp_path: Path, graphs: list[dict[str, list[str]]]
) -> None:
    folder = Path(__import__("tempfile").mkdtemp(dir=tmp_path))
    files = []
    for index, needs in enumerate(graphs):
        path = folder / f"g{index}.yaml"
        path.write_text(pipeline_of(needs))
        files.append(path)
    result = measured("validate", *map(str, files), cwd=folder)
    assert result.code == 2, result.output
    assert no_traceback(result.output), result.output
    for path, needs in zip(files, graphs, strict=True):
        mine = [line for line in errors_of(result.stderr) if line.startswith(f"{path}:")]
        cycles = [re.search(r"dependency cycle: (\S+(?: -> \S+)+)", line) for line in mine]
        assert len(mine) == 1 and cycles[0], mine
        cycle = cycles[0].group(1).split(" -> ")
        assert cycle[0] == cycle[-1] and len(cycle) >= 3, cycle
        assert len(set(cycle[:-1])) == len(cycle) - 1, cycle  # a simple cycle
        for before, after in itertools.pairwise(cycle):
            assert before in needs[after], f"{after} does not need {before}: {cycle}"


@pytest.mark.fault(29)
def test_a_self_need_and_an_unknown_need_are_named(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        "version: 1\nname: p\nsteps:\n  - {id: build, uses: noop, needs: build}\n"
        "  - {id: test, uses: noop, needs: [biuld]}\n"
    )
    before = tree(tmp_path)
    result = run_cli("validate", str(path))
    assert_refused(result, tmp_path, before)
    lines = path.read_text().splitlines()
    self_col = lines[3].index("needs: build") + len("needs: ") + 1
    unknown_col = lines[4].index("biuld") + 1
    assert errors_of(result.stderr) == [
        f"{path}:4:{self_col}: error: steps[0].needs: step 'build' needs itself",
        f"{path}:5:{unknown_col}: error: steps[1].needs[0]: unknown step 'biuld' "
        "(did you mean 'build'?)",
    ]


# -- 30: template escapes ---------------------------------------------------------------------

ESCAPES = {
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "attr": "{{ '' | attr('__class__') }}",
    "format": "{{ '{0.__class__.__mro__}'.format('') }}",
    "cycler": "{{ cycler.__init__.__globals__.os.system('touch CANARY') }}",
    "namespace": "{{ namespace.__init__.__globals__['os'].system('touch CANARY') }}",
    "self": "{{ self.__init__.__globals__ }}",
}


@pytest.mark.fault(30)
def test_template_escapes_are_security_errors_naming_the_step_and_never_run(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    steps = "".join(
        f"  - id: {name}\n    uses: shell\n    with: {{cmd: {json.dumps(value)}}}\n"
        for name, value in ESCAPES.items()
    )
    path = write_pipeline("version: 1\nname: p\nsteps:\n" + steps)
    before = tree(tmp_path)
    for command in ("validate", "run"):
        result = run_cli(command, str(path))
        assert_refused(result, tmp_path, before)
        errors = errors_of(result.stderr)
        assert len(errors) == len(ESCAPES), errors
        for index, (name, line) in enumerate(zip(ESCAPES, errors, strict=True)):
            assert f": error: steps[{index}].with.cmd: " in line, line
            if name == "cycler":  # not in the sandbox at all
                assert "undefined name 'cycler'" in line, line
            else:
                assert "template security error: access to attribute" in line, line
    assert not (tmp_path / "CANARY").exists()


@pytest.mark.fault(30)
def test_an_escape_through_a_value_known_only_at_run_time_fails_its_step(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: late
        steps:
          - {id: gen, uses: shell, with: {cmd: "echo text"}}
          - id: mro
            needs: gen
            uses: shell
            with: {cmd: "echo {{ steps.gen.output.__class__.__mro__ }}; touch CANARY"}
          - id: attr
            needs: gen
            if: "(steps.gen.output | attr('__class__')) and true"
            uses: shell
            with: {cmd: "touch CANARY"}
        """
    )
    assert run_cli("validate", str(path)).code == 0  # nothing to see before the run
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 1, result.output
    for step in ("mro", "attr"):
        assert re.search(
            rf"failed\s+{step}: template error: template security error: access to attribute "
            r"'__class__' of 'str' object is unsafe",
            result.stdout,
        ), result.stdout
    assert not (tmp_path / "CANARY").exists()


# -- 31: template resource bombs --------------------------------------------------------------

BOMBS = {
    "repeat": "'a' * 10**9",
    # Jinja's ** is left-associative: `2 ** 10 ** 8` is (2**10)**8, a small number.
    "power": "2 ** (10 ** 8)",
    "range": "range(10**9) | list",
    "percent": "'%-1000000000s' % 'a'",
    "format": "'{:>1000000000}'.format(1)",
    "list_repeat": "['a' * 1000000] * 1000",
    "join": "range(10**8) | join(',')",
}


@pytest.mark.fault(31)
def test_template_bombs_are_errors_in_time_and_bounded_memory(tmp_path: Path) -> None:
    steps = "".join(
        f"  - id: {name}\n    uses: noop\n    with: {{x: {json.dumps('{{ ' + expr + ' }}')}}}\n"
        for name, expr in BOMBS.items()
    )
    path = tmp_path / "bombs.yaml"
    path.write_text("version: 1\nname: p\nsteps:\n" + steps)
    before = tree(tmp_path)
    result = measured("validate", str(path), cwd=tmp_path)
    assert_refused(result, tmp_path, before)
    errors = errors_of(result.stderr)
    assert [re.search(r"error: (\S+):", e).group(1) for e in errors] == [  # type: ignore[union-attr]
        f"steps[{i}].with.x" for i in range(len(BOMBS))
    ], errors
    # Seven bombs, each refused before it goes off: far under 2 s each, whole command included.
    assert result.seconds < 2 + 2, result.seconds
    assert result.peak_kb < 100 * 1024, result.peak_kb


@pytest.mark.fault(31)
def test_a_bomb_built_from_a_value_known_only_at_run_time_fails_its_step_in_time(
    write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: late-bomb
        steps:
          - {id: gen, uses: shell, with: {cmd: "echo 1000000000"}}
          - id: repeat
            needs: gen
            uses: noop
            with: {x: "{{ 'a' * (steps.gen.output | int) }}"}
          - id: power
            needs: gen
            uses: noop
            with: {x: "{{ 2 ** (steps.gen.output | int) }}"}
          - id: loop
            needs: gen
            uses: noop
            with: {x: "{% for i in range(steps.gen.output | int) %}x{% endfor %}"}
        """
    )
    result = measured("run", str(path), "--progress", "plain", cwd=tmp_path)
    assert result.code == 1, result.output
    for step in ("repeat", "power", "loop"):
        assert re.search(rf"failed\s+{step}: template error: ", result.stdout), result.stdout
    assert result.seconds < 2 + 3, result.seconds
    assert result.peak_kb < 100 * 1024, result.peak_kb
