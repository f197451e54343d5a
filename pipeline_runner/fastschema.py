"""A fast yes/no JSON Schema check for the keywords our schemas use.

jsonschema is the reference: it explains what is wrong, with paths.  It is also slow (about
200 µs a step), and nearly every file a user validates is valid.  So a schema is compiled here
once into nested closures that answer only "valid?" (a few µs a step); `schema.check` asks
jsonschema for the errors only when this says no.  A schema with a keyword this module does not
know compiles to None, and jsonschema does all the work.  A test checks that both agree on
generated documents.  The closures loop rather than call all()/any() over a generator: on a
10,000-step file that halves the check's time (hence the `noqa: SIM110`s).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Check = Callable[[Any], bool]

_IGNORED = {
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "$defs",
    "definitions",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}


class Unsupported(Exception):
    pass


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _key(v: Any) -> Any:
    """A key equal for values JSON Schema calls equal: `1 == 1.0`, but `true != 1`.  A string
    is its own key (most lists checked for unique items are lists of names), never equal to
    the JSON text that keys anything else."""
    if type(v) is str:
        return v
    return (json.dumps(_integral(v), sort_keys=True),)


def _integral(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, list):
        return [_integral(x) for x in v]
    if isinstance(v, dict):
        return {k: _integral(x) for k, x in v.items()}
    return v


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, pointer: str) -> Check:
        if pointer in self.refs:
            return self.refs[pointer]
        if not pointer.startswith("#"):
            raise Unsupported(pointer)
        box: list[Check] = []
        self.refs[pointer] = lambda v: box[0](v)
        target: Any = self.root
        for part in pointer[1:].split("/")[1:] if pointer != "#" else []:
            target = target[part.replace("~1", "/").replace("~0", "~")]
        box.append(self.compile(target))
        return self.refs[pointer]

    def compile(self, schema: Any) -> Check:
        if schema is True or schema == {}:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, Mapping):
            raise Unsupported(str(schema))
        checks: list[Check] = []
        for keyword, value in schema.items():
            if keyword in _IGNORED:
                continue
            builder = getattr(self, "k_" + keyword.lstrip("$"), None)
            if builder is None:
                raise Unsupported(keyword)
            check = builder(value, schema)
            if check is not None:
                checks.append(check)
        if not checks:
            return lambda v: True
        if len(checks) == 1:
            return checks[0]
        if len(checks) == 2:
            first, second = checks
            return lambda v: first(v) and second(v)
        every = tuple(checks)

        def all_of(v: Any) -> bool:  # a loop: all() over a generator costs twice as much here
            for check in every:  # noqa: SIM110
                if not check(v):
                    return False
            return True

        return all_of

    # -- keywords ---------------------------------------------------------------------------

    def k_ref(self, value: str, schema: Any) -> Check:
        return self.ref(value)

    def k_type(self, value: Any, schema: Any) -> Check:
        names = [value] if isinstance(value, str) else list(value)
        plain: dict[str, type] = {"object": dict, "array": list, "string": str, "null": type(None)}
        if all(n in plain for n in names):  # one isinstance call, no bool/int subtleties
            kinds = tuple(plain[n] for n in names)
            return lambda v: isinstance(v, kinds)
        tests = [_TYPES[t] for t in names]
        if len(tests) == 1:
            return tests[0]
        return lambda v: any(t(v) for t in tests)

    def k_properties(self, value: Mapping[str, Any], schema: Any) -> Check:
        props = {k: self.compile(s) for k, s in value.items()}

        checks = tuple(props.items())

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, c in checks:  # noqa: SIM110
                if k in v and not c(v[k]):
                    return False
            return True

        return check

    def k_patternProperties(self, value: Mapping[str, Any], schema: Any) -> Check:
        pats = [(re.compile(p), self.compile(s)) for p, s in value.items()]

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, item in v.items():
                for p, c in pats:
                    if p.search(k) and not c(item):
                        return False
            return True

        return check

    def k_additionalProperties(self, value: Any, schema: Any) -> Check:
        known = set(schema.get("properties", {}))
        pats = [re.compile(p) for p in schema.get("patternProperties", {})]
        extra = self.compile(value)

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, item in v.items():
                if k in known or (pats and _matches_any(pats, k)):
                    continue
                if not extra(item):
                    return False
            return True

        return check

    def k_required(self, value: list[str], schema: Any) -> Check:
        names = frozenset(value)
        return lambda v: not isinstance(v, dict) or names.issubset(v)

    def k_items(self, value: Any, schema: Any) -> Check:
        item = self.compile(value)
        return lambda v: not isinstance(v, list) or _each(item, v)

    def k_enum(self, value: list[Any], schema: Any) -> Check:
        keys = {_key(x) for x in value}
        return lambda v: _key(v) in keys

    def k_const(self, value: Any, schema: Any) -> Check:
        key = _key(value)
        return lambda v: _key(v) == key

    def k_pattern(self, value: str, schema: Any) -> Check:
        pat = re.compile(value)
        return lambda v: not isinstance(v, str) or pat.search(v) is not None

    def k_minimum(self, value: float, schema: Any) -> Check:
        return lambda v: not _is_number(v) or v >= value

    def k_maximum(self, value: float, schema: Any) -> Check:
        return lambda v: not _is_number(v) or v <= value

    def k_exclusiveMinimum(self, value: float, schema: Any) -> Check:
        return lambda v: not _is_number(v) or v > value

    def k_minItems(self, value: int, schema: Any) -> Check:
        return lambda v: not isinstance(v, list) or len(v) >= value

    def k_maxItems(self, value: int, schema: Any) -> Check:
        return lambda v: not isinstance(v, list) or len(v) <= value

    def k_minLength(self, value: int, schema: Any) -> Check:
        return lambda v: not isinstance(v, str) or len(v) >= value

    def k_maxLength(self, value: int, schema: Any) -> Check:
        return lambda v: not isinstance(v, str) or len(v) <= value

    def k_minProperties(self, value: int, schema: Any) -> Check:
        return lambda v: not isinstance(v, dict) or len(v) >= value

    def k_uniqueItems(self, value: bool, schema: Any) -> Check | None:
        if not value:
            return None
        return lambda v: not isinstance(v, list) or len({_key(x) for x in v}) == len(v)

    def k_propertyNames(self, value: Any, schema: Any) -> Check:
        sub = self.compile(value)
        return lambda v: not isinstance(v, dict) or _each(sub, v)

    def k_maxProperties(self, value: int, schema: Any) -> Check:
        return lambda v: not isinstance(v, dict) or len(v) <= value

    def k_exclusiveMaximum(self, value: float, schema: Any) -> Check:
        return lambda v: not _is_number(v) or v < value

    def k_anyOf(self, value: list[Any], schema: Any) -> Check:
        subs = tuple(self.compile(s) for s in value)

        def check(v: Any) -> bool:
            for c in subs:  # noqa: SIM110
                if c(v):
                    return True
            return False

        return check

    def k_allOf(self, value: list[Any], schema: Any) -> Check:
        subs = [self.compile(s) for s in value]
        return lambda v: all(c(v) for c in subs)

    def k_oneOf(self, value: list[Any], schema: Any) -> Check:
        subs = [self.compile(s) for s in value]
        return lambda v: sum(1 for c in subs if c(v)) == 1

    def k_not(self, value: Any, schema: Any) -> Check:
        sub = self.compile(value)
        return lambda v: not sub(v)


def _each(check: Check, values: Iterable[Any]) -> bool:
    for value in values:  # noqa: SIM110
        if not check(value):
            return False
    return True


def _matches_any(patterns: list[re.Pattern[str]], key: str) -> bool:
    for p in patterns:  # noqa: SIM110
        if p.search(key):
            return True
    return False


def compile_schema(schema: Mapping[str, Any]) -> Check | None:
    """A fast validity check for `schema`, or None when it uses keywords not handled here."""
    try:
        return _Compiler(schema).compile(schema)
    except (Unsupported, KeyError, re.error, TypeError):
        return None
