"""A pipeline's parameters: the declared defaults merged with what the user gave.

Precedence, lowest first: the file's `params` defaults < `--params-file` < `RUNNER_PARAM_<NAME>`
< `--param`. A name the file does not declare is a problem, with a did-you-mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import Diagnostic, Location, PipelineError, did_you_mean
from .loader import load_text as load_yaml_text
from .loader import load_values_file


def parse_param_value(text: str) -> Any:
    """`--param n=3` gives 3, `--param tenants=[a,b]` a list: the value is a YAML scalar/flow."""
    try:
        return load_yaml_text(text, "--param").data
    except PipelineError:
        return text


def merge_params(
    declared: Mapping[str, Any],
    given: Mapping[str, Any],
    environ: Mapping[str, str],
    params_file: tuple[str, int] | None,
    problems: list[Diagnostic],
) -> dict[str, Any]:
    """The values of the declared parameters; `given` is --param (already parsed),
    `params_file` the --params-file and the largest file size to read. Unknown names go to
    `problems`."""
    params = dict(declared)
    if params_file is not None:
        params.update(read_params_file(*params_file, declared, problems))
    by_upper = {name.upper(): name for name in declared}
    for var, text in environ.items():
        if var.startswith("RUNNER_PARAM_"):
            name = by_upper.get(var[len("RUNNER_PARAM_") :].upper())
            if name is not None:
                params[name] = parse_param_value(text)
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
        params[name] = value
    return params


def read_params_file(
    path: str, max_file_size: int, declared: Mapping[str, Any], problems: list[Diagnostic]
) -> dict[str, Any]:
    """The declared parameters a `--params-file` sets; its unknown names go to `problems`."""
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
    return {k: v for k, v in doc.data.items() if k in declared}
