"""Hypothesis against the loader, the schema check and the planner, in-process.

Generated YAML-ish text and mutated example pipelines must only ever raise the runner's own
errors (never a traceback a user would see) and take well under a second each; a random DAG
with one back edge must be reported as a cycle made of real dependency edges; and the fast
schema check must agree with jsonschema.
"""

from __future__ import annotations

import copy
import itertools
import re
import time
from pathlib import Path
from typing import Any

import yaml
from conftest import PIPELINES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pipeline_runner.errors import PipelineError, RunnerError
from pipeline_runner.fastschema import compile_schema
from pipeline_runner.loader import decode, load_text
from pipeline_runner.planner import Options, Planner
from pipeline_runner.schema import checked_schema, pipeline_schema

EXAMPLES = {p.name: p.read_bytes() for p in sorted(PIPELINES.glob("*.yaml"))}
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SCHEMA = pipeline_schema()
FAST = compile_schema(SCHEMA)
REFERENCE = Draft202012Validator(SCHEMA)
# What `runner validate` checks: the same schema, its one-branch-per-type anyOfs folded.
CHECKED = compile_schema(checked_schema())


def plan(text: str) -> None:
    """The in-process API; only RunnerError may escape, and it must be quick.

    Quick is measured in CPU time, so that other work on a busy CI machine cannot fail it."""
    start = time.process_time()
    try:
        Planner(Options(environ={})).plan_document(load_text(text, "f.yaml"))
    except RunnerError as exc:
        assert str(exc)
    finally:
        elapsed = time.process_time() - start
        assert elapsed < 1.0, f"planning took {elapsed:.2f}s of CPU"


def plan_bytes(raw: bytes) -> None:
    try:
        text = decode(raw, "f.yaml")
    except PipelineError:
        return
    plan(text)


# Warm the caches (plugin registry, Jinja, jsonschema) so the 1 s limit measures the work.
for _raw in EXAMPLES.values():
    plan_bytes(_raw)


# -- (a) generated YAML-ish text ------------------------------------------------------------------

WORDS = [
    "version", "name", "steps", "id", "uses", "with", "needs", "template", "templates",
    "params", "for_each", "as", "key", "if", "env", "defaults", "pools", "retries", "timeout",
    "finally", "outputs", "secrets", "compensate", "cache", "priority", "max_parallel", "x-a",
    "<<", "shell", "noop", "python", "pipeline", "cmd", "call", "file", "a", "b", "c", "1",
    "-1", "3.10", "on", "NO", "yes", "~", "null", "true", "1e999", ".nan", "0x1F", "30s",
    "5m", "item", "steps.a.output", "params.x", "secrets.T", "9" * 4400,
]  # fmt: skip
PUNCT = [
    ": ", ":", "- ", "-", "\n", "\n  ", "\n    ", "\n      ", "  ", "\t", "[", "]", "{", "}",
    ", ", '"', "'", "&a ", "*a", "!!python/object/apply:os.system ", "!!str ", "!!binary ",
    "{{ ", " }}", "{% ", " %}", "|", ">", "# c", "---\n", "...\n", "? ", "%YAML 1.1\n", "\\",
    "\x00", "\ufeff", "é", "😀", "*", "**", "~",
]  # fmt: skip
TEMPLATE_BITS = [
    "{{ params.x }}", "{{ steps.a.output }}", "{{ item }}", "{{ parms.x }}", "{{ 'a' * 10**9 }}",
    "{{ ''.__class__ }}", "{{ range(10**9)|list }}", "{{ x }", "{% for %}", "{{ 2 ** (10**8) }}",
    "{{ run.id }}", "{{ secrets.T }}", "{{ env.HOME }}", "{{ params.x | attr('__class__') }}",
]  # fmt: skip

yamlish = st.lists(
    st.one_of(st.sampled_from(WORDS), st.sampled_from(PUNCT), st.sampled_from(TEMPLATE_BITS)),
    max_size=80,
).map("".join)


@SETTINGS
@given(yamlish)
def test_yamlish_text_never_escapes(text: str) -> None:
    plan(text)


@SETTINGS
@given(yamlish)
def test_yamlish_text_after_a_valid_head_never_escapes(tail: str) -> None:
    plan("version: 1\nname: p\nsteps:\n  - id: a\n    uses: noop\n" + tail)


# -- structured documents over the pipeline vocabulary ------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(WORDS),
    st.sampled_from(TEMPLATE_BITS),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(WORDS), inner, max_size=4),
    ),
    max_leaves=12,
)
step_ids = st.sampled_from(["a", "b", "c", "d", "1x", "a b"])
steps = st.fixed_dictionaries(
    {"id": step_ids},
    optional={
        "uses": st.one_of(st.sampled_from(["shell", "noop", "python", "nope"]), values),
        "template": st.sampled_from(["t", "u"]),
        "with": st.one_of(
            st.fixed_dictionaries({}, optional={"cmd": values, "call": values, "tenant": values}),
            values,
        ),
        "needs": st.one_of(step_ids, st.lists(step_ids, max_size=3), values),
        "for_each": st.one_of(st.lists(scalars, max_size=4), st.sampled_from(TEMPLATE_BITS)),
        "as": st.sampled_from(["item", "tenant", "1bad"]),
        "key": st.sampled_from(TEMPLATE_BITS),
        "if": st.one_of(st.booleans(), st.sampled_from(["params.x", "steps.a.output", "x =="])),
        "retries": st.one_of(st.integers(-1, 5), values),
        "timeout": st.one_of(st.sampled_from(["30s", "1h30m", "soon", "5 m"]), values),
        "pool": st.sampled_from(["db", "nope"]),
        "env": values,
        "compensate": values,
        "cache": values,
    },
)
_documents = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), values), "name": st.one_of(st.just("p"), values)},
    optional={
        "steps": st.one_of(st.lists(steps, min_size=1, max_size=4), values),
        "params": st.one_of(st.dictionaries(st.sampled_from(["x", "tenants"]), values), values),
        "pools": st.one_of(st.just({"db": 1}), values),
        "templates": st.one_of(
            st.fixed_dictionaries(
                {"t": st.fixed_dictionaries({"steps": st.lists(steps, min_size=1, max_size=3)})},
                optional={"u": values},
            ),
            values,
        ),
        "finally": st.lists(steps, max_size=2),
        "outputs": values,
        "env": values,
        "defaults": values,
        "x-a": values,
        "stesp": values,
    },
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A pipeline-shaped document (a named strategy: its repr stays short in reports)."""
    doc: dict[str, Any] = draw(_documents)
    return doc


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@SETTINGS
@given(documents())
def test_generated_documents_never_escape(doc: dict[str, Any]) -> None:
    plan(dump(doc))


# -- (b) mutations of the example pipelines ----------------------------------------------------


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    data = copy.deepcopy(load_text(EXAMPLES[name].decode()).data)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(data, path), path[-1]
        op = draw(st.sampled_from(["delete", "retype", "rename", "duplicate", "swap"]))
        if op == "delete":
            del parent[last]
        elif op == "retype":
            parent[last] = draw(values)
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.sampled_from([*WORDS, last + "s", last[:-1] or "x"]))
            parent[new] = parent.pop(last)
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        elif op == "swap":
            other = draw(st.sampled_from(paths))
            parent[last] = copy.deepcopy(_parent(data, other)[other[-1]])
    return data


@SETTINGS
@given(mutated_documents())
def test_mutated_examples_never_escape(doc: Any) -> None:
    plan(dump(doc))


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    raw = bytearray(EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))])
    op = draw(st.sampled_from(["flip", "truncate", "duplicate_line", "delete_line", "indent"]))
    if op == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
    elif op == "truncate":
        del raw[draw(st.integers(0, len(raw))) :]
    else:
        lines = bytes(raw).split(b"\n")
        i = draw(st.integers(0, len(lines) - 1))
        if op == "duplicate_line":
            lines.insert(i, lines[i])
        elif op == "delete_line":
            del lines[i]
        else:
            lines[i] = b" " * draw(st.integers(1, 3)) + lines[i]
        raw = bytearray(b"\n".join(lines))
    return bytes(raw)


@SETTINGS
@given(mutated_bytes())
def test_byte_mutations_of_examples_never_escape(raw: bytes) -> None:
    plan_bytes(raw)


# -- (c) cycles ---------------------------------------------------------------------------------


@st.composite
def dags_with_a_back_edge(draw: st.DrawFn) -> dict[str, list[str]]:
    """Steps s0..sN-1 where s_j may need s_i for i < j, plus one need that closes a cycle."""
    n = draw(st.integers(2, 12))
    names = [f"s{i}" for i in range(n)]
    needs: dict[str, list[str]] = {name: [] for name in names}
    for j in range(1, n):
        for i in range(j):
            if draw(st.booleans()):
                needs[names[j]].append(names[i])
    # Pairs (early, late) where `late` depends on `early`, directly or not.
    pairs = [(a, b) for b in names for a in names if a != b and _depends(needs, b, a)]
    if not pairs:
        needs[names[1]].append(names[0])
        pairs = [(names[0], names[1])]
    early, late = draw(st.sampled_from(pairs))
    needs[early].append(late)  # the back edge
    order = draw(st.permutations(names))
    return {name: needs[name] for name in order}


def _depends(needs: dict[str, list[str]], step: str, target: str) -> bool:
    stack, seen = list(needs[step]), set()
    while stack:
        nid = stack.pop()
        if nid == target:
            return True
        if nid not in seen:
            seen.add(nid)
            stack.extend(needs[nid])
    return False


@SETTINGS
@given(dags_with_a_back_edge())
def test_a_back_edge_is_reported_as_a_real_cycle(needs: dict[str, list[str]]) -> None:
    doc = {
        "version": 1,
        "name": "dag",
        "steps": [{"id": sid, "uses": "noop", "needs": deps} for sid, deps in needs.items()],
    }
    try:
        Planner(Options(environ={})).plan_document(load_text(dump(doc), "f.yaml"))
    except PipelineError as exc:
        messages = [d.message for d in exc.diagnostics]
    else:
        raise AssertionError("a cycle was not reported")
    cycles = [m for m in messages if m.startswith("dependency cycle: ")]
    assert cycles, messages
    for message in cycles:
        chain = re.sub(r" \(.*\)$", "", message.removeprefix("dependency cycle: "))
        cycle = chain.split(" -> ")
        assert len(cycle) >= 3 and cycle[0] == cycle[-1], message
        assert len(set(cycle[:-1])) == len(cycle) - 1, f"not a simple cycle: {message}"
        for before, after in itertools.pairwise(cycle):
            assert before in needs[after], f"{after} does not need {before}: {message}"


# -- (d) the fast schema check agrees with jsonschema ------------------------------------------


def agree(doc: Any) -> None:
    assert FAST is not None, "the pipeline schema must compile to a fast check"
    assert FAST(doc) == REFERENCE.is_valid(doc), doc
    assert CHECKED is not None and CHECKED(doc) == FAST(doc), doc


@SETTINGS
@given(documents())
def test_fast_schema_agrees_on_generated_documents(doc: dict[str, Any]) -> None:
    agree(doc)
    try:
        # What the loader makes of it (YAML 1.2: `1e999` written by PyYAML is a number).
        loaded = load_text(dump(doc)).data
    except PipelineError:
        return
    agree(loaded)


@SETTINGS
@given(mutated_documents())
def test_fast_schema_agrees_on_mutated_examples(doc: Any) -> None:
    agree(doc)


def test_fast_schema_agrees_on_the_examples_and_the_corpus() -> None:
    corpus = Path(__file__).parent / "pipelines" / "invalid"
    texts = [raw.decode() for raw in EXAMPLES.values()]
    texts += [p.read_text() for p in corpus.glob("*.yaml") if p.name != "non_utf8.yaml"]
    for text in texts:
        try:
            agree(load_text(text).data)
        except PipelineError:
            continue
    for example in EXAMPLES.values():
        assert FAST is not None and FAST(load_text(example.decode()).data)
