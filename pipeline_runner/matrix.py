"""A matrix: `for_each: {matrix: {os: [...], python: [...]}, include: [...], exclude: [...]}`.

GitHub Actions' rules (`jobs.<job_id>.strategy.matrix`): the cross product of the axes in the
order they are written (the first axis varies slowest); `exclude` removes each combination that
matches all the keys of one of its entries; then each `include` entry extends every original
combination whose original values it does not change (keys it adds may be changed by a later
entry), or, when it extends none, is added as a combination of its own.

Each combination is one instance; its item is the mapping of its values, and its key is built
from the values (`KEY RULE` below).  One place for the rules, used by the planner (a matrix
known before the run) and at run time (a matrix read from a step's output).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import did_you_mean

FIELDS = ("matrix", "include", "exclude", "fail_fast", "max_parallel")
MAX_COMBINATIONS = 256  # GitHub's limit of jobs per matrix (after exclude and include)
MAX_PRODUCT = 65536  # the cross product is not even built past this

_NOT_IN_KEY = re.compile(r"[^A-Za-z0-9_=-]+")


class Problem(NamedTuple):
    """A mistake in a matrix: where in the `for_each` mapping (a path below it) and what."""

    at: tuple[str | int, ...]
    message: str


class Leg(NamedTuple):
    key: str
    item: dict[str, Any]


def is_matrix(spec: Any) -> bool:
    return isinstance(spec, Mapping)


def problems(spec: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with a rendered matrix spec (empty when nothing is)."""
    found: list[Problem] = []
    for name in spec:
        if name not in FIELDS:
            hint = did_you_mean(str(name), FIELDS)
            found.append(Problem((name,), f"unknown key '{name}' in a matrix for_each{hint}"))
    axes = spec.get("matrix", {})
    if not isinstance(axes, Mapping):
        return [*found, Problem(("matrix",), "matrix must be a mapping of axis name to values")]
    found += _axis_problems(axes) + _entry_problems(spec, axes)
    if not axes and not spec.get("include"):
        found.append(Problem(("matrix",), "the matrix is empty: give it an axis or `include`"))
    if not isinstance(spec.get("fail_fast", False), bool):
        found.append(Problem(("fail_fast",), "fail_fast must be true or false"))
    limit = spec.get("max_parallel", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        found.append(Problem(("max_parallel",), "max_parallel must be an integer of at least 1"))
    return found


def _axis_problems(axes: Mapping[str, Any]) -> list[Problem]:
    found = []
    for name, values in axes.items():
        if name in ("include", "exclude"):
            message = f"write `{name}` beside `matrix` (in the for_each mapping), not inside it"
            found.append(Problem(("matrix", name), message))
        elif not isinstance(values, list):
            message = f"the values of axis '{name}' must be a list, got {_describe(values)}"
            found.append(Problem(("matrix", name), message))
        elif not values:
            found.append(Problem(("matrix", name), f"axis '{name}' has no values"))
    return found


def _entry_problems(spec: Mapping[str, Any], axes: Mapping[str, Any]) -> list[Problem]:
    found = []
    for field in ("include", "exclude"):
        entries = spec.get(field, [])
        if not isinstance(entries, list):
            found.append(Problem((field,), f"{field} must be a list of mappings"))
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or not entry:
                found.append(Problem((field, i), f"an {field} entry must be a non-empty mapping"))
            elif field == "exclude":
                found.extend(_unknown_axes(entry, axes, i))
    return found


def _unknown_axes(entry: Mapping[str, Any], axes: Mapping[str, Any], i: int) -> list[Problem]:
    """An exclude entry may only name axes (GitHub refuses the workflow otherwise)."""
    out = []
    for name in entry:
        if name not in axes:
            hint = did_you_mean(str(name), list(axes)) or f" (axes: {', '.join(map(str, axes))})"
            message = f"exclude names '{name}', which is not an axis of the matrix{hint}"
            out.append(Problem(("exclude", i, name), message))
    return out


def _describe(value: Any) -> str:
    from .schema import describe

    return describe(value)


def combinations(spec: Mapping[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """The combinations of a valid spec, in order; each with whether `include` added it as
    a combination of its own (its key is then made of all its values)."""
    axes: Mapping[str, list[Any]] = spec.get("matrix") or {}
    combos: list[dict[str, Any]] = [{}] if axes else []
    for name, values in axes.items():
        combos = [{**c, name: v} for c in combos for v in values]
    excluded = spec.get("exclude") or []
    combos = [c for c in combos if not any(_matches(c, e) for e in excluded)]
    originals = [dict(c) for c in combos]
    added: list[dict[str, Any]] = []
    for entry in spec.get("include") or []:
        extended = False
        for combo, original in zip(combos, originals, strict=True):
            if all(original[k] == v for k, v in entry.items() if k in original):
                combo.update(entry)
                extended = True
        if not extended:
            added.append(dict(entry))
    return [(c, False) for c in combos] + [(c, True) for c in added]


def _matches(combo: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(k in combo and combo[k] == v for k, v in entry.items())


def value_key(value: Any) -> str:
    """One part of a key: a scalar's text (`3.12` -> `3-12`, `true`, `null`), a mapping's
    `name` or `id` field; every run of characters other than letters, digits, `_`, `=` and
    `-` becomes one `-`."""
    if isinstance(value, Mapping):
        value = value.get("name", value.get("id", ""))
    if isinstance(value, bool) or value is None:
        text = "true" if value is True else "false" if value is False else "null"
    else:
        text = str(value) if not isinstance(value, (list, Mapping)) else ""
    return _NOT_IN_KEY.sub("-", text).strip("-")


def combination_key(combo: Mapping[str, Any], axes: list[str], added: bool) -> str:
    """KEY RULE: the parts of the combination's axis values, in the order the axes are
    written, joined by `.` (`linux.3-12`); a combination `include` added on its own has its
    axis values first, then its other values in the order the entry gives them."""
    names = [a for a in axes if a in combo]
    if added:
        names += [k for k in combo if k not in axes]
    parts = [value_key(combo[name]) for name in names]
    return ".".join(parts) if all(parts) else ""


def legs(spec: Mapping[str, Any]) -> tuple[list[Leg], str | None]:
    """The legs of a valid spec, each with its default key, or the problem that keeps the
    keys from naming them (a value with no key text, two legs with the same key)."""
    axes = list(spec.get("matrix") or {})
    most = math.prod(len(v) for v in (spec.get("matrix") or {}).values()) if axes else 0
    most += len(spec.get("include") or [])
    if most > MAX_PRODUCT:  # counted before the product is built
        return [], f"the matrix's axes make {most} combinations; at most {MAX_COMBINATIONS}"
    combos = combinations(spec)
    if len(combos) > MAX_COMBINATIONS:
        return [], f"the matrix gives {len(combos)} combinations; at most {MAX_COMBINATIONS}"
    out: list[Leg] = []
    seen: dict[str, dict[str, Any]] = {}
    for combo, added in combos:
        key = combination_key(combo, axes, added)
        if not key:
            return [], f"the combination {_text(combo)} gives no key text; set `key:`"
        if key in seen:
            return [], (
                f"the combinations {_text(seen[key])} and {_text(combo)} both have the key "
                f"'{key}'; "
                "set `key:` to tell them apart"
            )
        seen[key] = combo
        out.append(Leg(key, combo))
    return out, None


def _text(combo: Mapping[str, Any]) -> str:
    return json.dumps(combo, default=str)
