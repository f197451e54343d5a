"""JSON Schema validation with every error located and worded for people.

`validate_document` checks a loaded pipeline against `pipeline.schema.json`; `check_with`
checks a step's `with` against its plugin's schema.  Both return `Diagnostic`s (all of them,
not only the first) pointing at the offending node through the document's source map, and
reword jsonschema's messages: unknown keys get a did-you-mean, type errors say what YAML read and
suggest quoting when YAML 1.x read a plain word as something else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from . import shortcuts
from .errors import Diagnostic, did_you_mean
from .fastschema import compile_schema
from .loader import Path_, SourceMap, format_path

_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}

_PATTERN_HELP = {
    "^[A-Za-z_][A-Za-z0-9_-]*$": "a name that starts with a letter or '_' and has only "
    "letters, digits, '_' and '-'",
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$": "a name of letters, digits, '_', '.' and '-' "
    "that starts with a letter or digit",
    "^[A-Za-z_][A-Za-z0-9_]*$": "an identifier (letters, digits and '_')",
}
_TEMPLATE_PATTERN = "\\{\\{"  # a control field's text must be a {{ }} template
# Patterns whose whole message is known (plugins' `env` mappings, as a step's own `env`).
_PATTERN_MESSAGES = {
    "^[^=\\u0000]+$": "invalid environment variable name {value!r}: a name is not empty and "
    "has no '=' or NUL character",
    "^[^\\u0000]*$": "an environment variable's value cannot hold a NUL character",
}


def schema_text() -> str:
    """The schema shipped in the package, read through its loader (a wheel on a zip path too)."""
    import pkgutil

    data = pkgutil.get_data(__package__ or "pipeline_runner", "data/pipeline.schema.json")
    if data is None:  # a loader that cannot read package data
        raise RuntimeError("the package's data/pipeline.schema.json cannot be read")
    return data.decode("utf-8")


@cache
def pipeline_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text())
    return schema


def plugins_schema_text() -> tuple[str, list[str]]:
    """The schema with every installed plugin's `with` schema (`runner schema --plugins`),
    and the load errors of the plugins left out."""
    from .plugins import PluginLoadError, registry
    from .schemaforms import with_plugins

    found, broken = {}, []
    for name in registry().names():
        try:
            found[name] = registry().load(name).schema
        except PluginLoadError as exc:
            broken.append(str(exc))
    return json.dumps(with_plugins(pipeline_schema(), found), indent=2), broken


@cache
def checked_schema() -> dict[str, Any]:
    """The pipeline schema as `runner validate` checks it: its `anyOf`s of one branch per type
    folded into `type` lists, so a wrong type is one message naming every type allowed."""
    from .schemaforms import fold_types

    folded: dict[str, Any] = fold_types(pipeline_schema())
    return folded


_validators: dict[int, tuple[Mapping[str, Any], Any, Any]] = {}


def _compiled(schema: Mapping[str, Any]) -> tuple[Any, Any]:
    """(fast check or None, jsonschema validator) for a schema, built once per schema object."""
    entry = _validators.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = (schema, compile_schema(schema), _LazyValidator(schema))
        _validators[id(schema)] = entry
    return entry[1], entry[2]


class _LazyValidator:
    """jsonschema's validator, built on first need (most documents never need it)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self.validator: Any = None

    def __getattr__(self, name: str) -> Any:
        if self.validator is None:
            import jsonschema

            cls = jsonschema.validators.validator_for(
                self.schema, default=jsonschema.Draft202012Validator
            )
            self.validator = cls(self.schema)
        return getattr(self.validator, name)


def describe(value: Any) -> str:
    """`integer 3`, `string 'x'`, `a mapping` ... for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean " + ("true" if value else "false")
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return type(value).__name__


def _expected(types: Any) -> str:
    if isinstance(types, str):
        types = [types]
    names = [str(_TYPE_NAMES.get(t, t)) for t in types]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


_BOUNDS = {
    "minimum": "at least {}",
    "maximum": "at most {}",
    "exclusiveMinimum": "more than {}",
    "exclusiveMaximum": "less than {}",
    "minItems": "a list of at least {} item(s)",
    "maxItems": "a list of at most {} item(s)",
    "minLength": "at least {} character(s)",
    "maxLength": "at most {} character(s)",
    "minProperties": "at least {} key(s)",
    "maxProperties": "at most {} key(s)",
}

# Plain words that YAML 1.1 read as booleans; this loader reads them as strings (YAML 1.2).
_YAML11_BOOLS = frozenset(
    w for b in ("yes", "no", "on", "off", "y", "n") for w in (b, b.upper(), b.capitalize())
)
_ALTERNATION_RE = re.compile(r"^\^\(?((?:[A-Za-z0-9_-]+\|)+[A-Za-z0-9_-]+)\)?\$$")


def _alternatives(pattern: str) -> list[str]:
    """The words of a pattern that is only a choice of literal words (`^(a|b|c)$`), or []."""
    match = _ALTERNATION_RE.match(pattern)
    return match.group(1).split("|") if match else []


def _yaml_note(source: SourceMap, path: Path_, value: Any) -> str:
    """Say how YAML read a plain scalar when the text differs from the value (`3.10` -> 3.1)."""
    text = source.texts.get(path)
    if text is None or text == str(value):
        return ""
    return f" (YAML reads {text} as the {describe(value).split()[0]} {_plain(value)})"


def _quote_hint(source: SourceMap, path: Path_, value: Any, types: Any) -> str:
    """For a field that wants a string or a boolean: how to write what was meant."""
    text = source.texts.get(path)
    if text is not None and "string" in str(types):
        kind = describe(value).split()[0]
        article = "an" if kind == "integer" else "a"
        return f" (YAML reads {text} as {article} {kind}; quote it: '{text}')"
    if isinstance(value, str) and value in _YAML11_BOOLS and "boolean" in str(types):
        truth = "true" if value.lower() in ("yes", "on", "y") else "false"
        return f" (YAML 1.2 reads {value} as a string; write {truth})"
    return ""


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _schema_keys(schema: Mapping[str, Any]) -> list[str]:
    return list(schema.get("properties", {}))


def _message(error: Any, source: SourceMap, path: Path_) -> tuple[str, Path_, bool]:
    """The message, the path to point at, and whether to point at the key."""
    kind = error.validator
    value = error.instance
    schema = error.schema
    if kind in ("additionalProperties", "unevaluatedProperties") and isinstance(value, dict):
        allowed = _schema_keys(schema)
        patterns = list(schema.get("patternProperties", {}))
        extra = [
            k for k in value if k not in allowed and not any(re.search(p, str(k)) for p in patterns)
        ]
        if extra:
            key = str(extra[0])
            hint = did_you_mean(key, allowed)
            if not hint and allowed:
                shown = ", ".join(allowed[:12])
                hint = f" (allowed: {shown})"
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            return f"unknown key '{key}'{hint}{more}", (*path, key), True
    if kind == "type":
        # A `const` at the same place says more than its type ("expected 1"); the const
        # error then words the same message and the duplicate is dropped.
        wanted = (
            json.dumps(schema["const"]) if "const" in schema else _expected(error.validator_value)
        )
        note = _quote_hint(source, path, value, error.validator_value) or _yaml_note(
            source, path, value
        )
        return f"expected {wanted}, found {describe(value)}{note}", path, False
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        name = missing[0] if missing else error.validator_value[0]
        return f"missing required key '{name}'", path, False
    if kind == "pattern":
        known = _PATTERN_MESSAGES.get(error.validator_value)
        if known:
            return known.format(value=value), path, False
        help_text = _PATTERN_HELP.get(error.validator_value)
        if help_text:
            return f"invalid name {value!r}: expected {help_text}", path, False
        if error.validator_value == _TEMPLATE_PATTERN:
            # A control field's text that is no {{ }} template: worded as the type error it
            # is (the template form is for those who mean it).
            types = [t for t in schema.get("type", ()) if t != "string"]
            note = _quote_hint(source, path, value, types) or _yaml_note(source, path, value)
            return f"expected {_expected(types)}, found {describe(value)}{note}", path, False
        if "ms|s|m|h" in error.validator_value:
            return (
                f"invalid duration {value!r}: expected e.g. 500ms, 30s, 5m, 2h, 1h30m",
                path,
                False,
            )
        words = _alternatives(error.validator_value)
        if words:
            hint = did_you_mean(str(value), words)
            shown = ", ".join(words)
            return f"expected one of {shown}, found {describe(value)}{hint}", path, False
        if isinstance(schema.get("description"), str):
            form = schema["description"].strip().rstrip(".")
            return f"invalid value {value!r}: expected {form[:1].lower()}{form[1:]}", path, False
        return f"{value!r} does not match {error.validator_value}", path, False
    if kind == "const":
        note = _yaml_note(source, path, value)
        return (
            f"expected {json.dumps(error.validator_value)}, found {describe(value)}{note}",
            path,
            False,
        )
    if kind in _BOUNDS:
        return (
            f"expected {_BOUNDS[kind].format(error.validator_value)}, found {describe(value)}",
            path,
            False,
        )
    if kind == "enum":
        choices = ", ".join(json.dumps(c) for c in error.validator_value)
        hint = did_you_mean(str(value), [str(c) for c in error.validator_value])
        return f"expected one of {choices}, found {describe(value)}{hint}", path, False
    return error.message, path, False


def _leaf_errors(errors: Iterable[Any]) -> Iterable[Any]:
    """Descend into anyOf/oneOf groups so the most specific error is reported."""
    for error in errors:
        if error.context and error.validator in ("anyOf", "oneOf"):
            import jsonschema

            # A failed `not` branch ("should not be valid under ...") explains nothing when
            # another branch says what is wrong (a typed parameter's declaration).
            specific = [e for e in error.context if e.validator != "not"]
            yield jsonschema.exceptions.best_match(specific or error.context)
        else:
            yield error


def check(
    data: Any,
    schema: Mapping[str, Any],
    source: SourceMap,
    base: Path_ = (),
    prefix: str = "",
) -> list[Diagnostic]:
    """Every schema violation of `data` (found at `base` in the document) as a Diagnostic."""
    fast, v = _compiled(schema)
    if not shortcuts.enabled():
        fast = None  # the plain path: jsonschema answers "valid?" too
    if fast is not None and fast(data):
        return []
    if fast is None and v.is_valid(data):
        return []
    out: list[Diagnostic] = []
    seen: set[tuple[Path_, str]] = set()
    errors = sorted(v.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    for error in _leaf_errors(errors):
        path: Path_ = (*base, *error.absolute_path)
        message, at, on_key = _message(error, source, path)
        if (at, message) in seen:
            continue
        seen.add((at, message))
        out.append(Diagnostic(source.locate(at, key=on_key), format_path(at), prefix + message))
    return out


def validate_document(data: Any, source: SourceMap) -> list[Diagnostic]:
    if not isinstance(data, dict):
        return [
            Diagnostic(
                source.locate(()),
                "",
                f"a pipeline file must be a mapping at the top level, found {describe(data)}",
            )
        ]
    return check(data, checked_schema(), source)
