"""A pipeline's parameters: the declared defaults merged with what the user gave.

Precedence, lowest first: the file's `params` defaults < `--params-file` <
`PIPELINE_RUNNER_PARAM_<NAME>` (or the deprecated `RUNNER_PARAM_<NAME>`) < `--param`.  A name
the file does not declare is a problem, with a did-you-mean.

A parameter is declared by its default value (`region: eu-west-1`), or by a mapping with a
`type` key, which is a declaration (GitHub's workflow_dispatch inputs, Airflow's `Param`):
`{type, enum, default, description}`.  A typed parameter's values are checked (and the text of
a `--param` or `PIPELINE_RUNNER_PARAM_` for a `string` parameter is taken as it is, never read as
YAML);
one without a default must be given.  A plain default that is itself a mapping with a `type`
key is written as a declaration: `{type: object, default: {type: ...}}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import envvars
from .errors import Diagnostic, Location, PipelineError, did_you_mean
from .loader import Path_, SourceMap, load_values_file
from .loader import load_text as load_yaml_text

TYPES = ("string", "integer", "number", "boolean", "array", "list", "object")
_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "integer": (
        "an integer",
        lambda v: (
            (isinstance(v, int) and not isinstance(v, bool))
            or (isinstance(v, float) and v.is_integer())
        ),
    ),
    "number": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "boolean": ("true or false", lambda v: isinstance(v, bool)),
    "array": ("a list", lambda v: isinstance(v, list)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "object": ("a mapping", lambda v: isinstance(v, dict)),
}
_MISSING: Any = object()


@dataclass(frozen=True)
class Param:
    """A typed parameter's declaration."""

    type: str
    enum: tuple[Any, ...] | None = None
    default: Any = _MISSING
    description: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` is not a value of this parameter, or None."""
        what, ok = _CHECKS[self.type]
        if not ok(value):
            return f"expected {what}, got {_describe(value)}"
        if self.enum is not None and value not in self.enum:
            choices = ", ".join(_show(v) for v in self.enum)
            return f"{_show(value)} is not one of {choices}"
        return None

    def coerce(self, value: Any) -> Any:
        if self.type == "integer" and isinstance(value, float):
            return int(value)
        return value


def is_declaration(value: Any) -> bool:
    return isinstance(value, dict) and "type" in value


def _describe(value: Any) -> str:
    from .schema import describe

    return describe(value)


def _show(value: Any) -> str:
    return (
        repr(value)
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def parse_param_value(text: str) -> Any:
    """`--param n=3` gives 3, `--param tenants=[a,b]` a list: the value is a YAML scalar/flow."""
    try:
        return load_yaml_text(text, "--param").data
    except PipelineError:
        return text


def declarations(
    declared: Mapping[str, Any], source: SourceMap | None, problems: list[Diagnostic]
) -> tuple[dict[str, Any], dict[str, Param]]:
    """The defaults of the declared parameters (a typed one without a default is left out) and
    the typed declarations; a default that does not fit its declaration goes to `problems`."""
    defaults: dict[str, Any] = {}
    typed: dict[str, Param] = {}
    for name, value in declared.items():
        if not is_declaration(value):
            defaults[name] = value
            continue
        enum = value.get("enum")
        spec = Param(
            value["type"],
            tuple(enum) if enum is not None else None,
            value.get("default", _MISSING),
            str(value.get("description") or ""),
        )
        typed[name] = spec
        if spec.default is _MISSING:
            continue
        problem = spec.problem(spec.default)
        if problem and source is not None:
            where: Path_ = ("params", name, "default")
            problems.append(Diagnostic(source.locate(where), f"params.{name}.default", problem))
        defaults[name] = spec.coerce(spec.default)
    return defaults, typed


def merge_params(
    declared: Mapping[str, Any],
    given: Mapping[str, Any],
    environ: Mapping[str, str],
    params_file: tuple[str, int] | None,
    problems: list[Diagnostic],
    texts: Mapping[str, str] | None = None,
    source: SourceMap | None = None,
) -> dict[str, Any]:
    """The values of the declared parameters; `given` is --param (already parsed; `texts` the
    same as written), `params_file` the --params-file and the largest file size to read.
    Unknown names, values that do not fit a typed parameter and typed parameters without a
    value go to `problems`."""
    params, typed = declarations(declared, source, problems)
    check = _Checker(typed, problems)
    if params_file is not None:
        for name, (value, where) in read_params_file(*params_file, declared, problems).items():
            params[name] = check.value(name, value, where)
    by_upper = {name.upper(): name for name in declared}
    for var, text in envvars.params(environ).items():
        known = by_upper.get(var.upper())
        if known is not None:
            found = text if check.wants_text(known) else parse_param_value(text)
            params[known] = check.value(known, found, Location(envvars.PARAM + var))
    for name, value in given.items():
        if name not in declared:
            problems.append(
                Diagnostic(
                    Location("--param"),
                    name,
                    f"unknown parameter '{name}'{did_you_mean(name, declared)}"
                    f" (the file declares: {', '.join(sorted(declared)) or 'none'})",
                )
            )
            continue
        written = (texts or {}).get(name)
        if written is not None and check.wants_text(name):
            value = written
        params[name] = check.value(name, value, Location("--param"))
    for name in typed:
        if name not in params and source is not None:
            problems.append(
                Diagnostic(
                    source.locate(("params", name), key=True),
                    f"params.{name}",
                    f"parameter '{name}' has no default: give it with --param {name}=VALUE "
                    f"(or --params-file, {envvars.PARAM}{name.upper()})",
                )
            )
            params[name] = None  # known to templates: the one error is this one
    return params


class _Checker:
    """Given values against their typed declarations."""

    def __init__(self, typed: Mapping[str, Param], problems: list[Diagnostic]) -> None:
        self.typed = typed
        self.problems = problems

    def wants_text(self, name: str) -> bool:
        spec = self.typed.get(name)
        return spec is not None and spec.type == "string"

    def value(self, name: str, value: Any, where: Location) -> Any:
        spec = self.typed.get(name)
        if spec is None:
            return value
        problem = spec.problem(value)
        if problem:
            message = f"{problem} (parameter '{name}' is of type {spec.type})"
            self.problems.append(Diagnostic(where, name, message))
            return value
        return spec.coerce(value)


def read_params_file(
    path: str, max_file_size: int, declared: Mapping[str, Any], problems: list[Diagnostic]
) -> dict[str, tuple[Any, Location]]:
    """The declared parameters a `--params-file` sets, each with where it is written; its
    unknown names go to `problems`."""
    doc = load_values_file(path, max_file_size)
    if not isinstance(doc.data, dict):
        raise PipelineError.single(
            doc.source.locate(()), "", "a params file must hold a mapping of name to value"
        )
    for name in doc.data:
        if name not in declared:
            problems.append(
                Diagnostic(
                    doc.source.locate((name,), key=True),
                    str(name),
                    f"unknown parameter '{name}'{did_you_mean(str(name), declared)}",
                )
            )
    return {k: (v, doc.source.locate((k,))) for k, v in doc.data.items() if k in declared}
