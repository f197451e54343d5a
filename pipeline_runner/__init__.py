"""pipeline-runner: declarative YAML pipelines, planned into a DAG and run in parallel.

The public API is small: load and plan a file, and the types a plugin author meets.  They are
imported when first asked for (PEP 562), so a command that needs none of them (`runner show`,
`runner --help`) does not pay for the plugin machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import Diagnostic, Location, PipelineError, RunnerError
    from .plugins import Plugin, StepContext, StepFailed

# The distribution's version (pyproject.toml reads it from here), known without reading metadata.
__version__ = "0.1.0"

__all__ = [
    "Diagnostic",
    "Location",
    "PipelineError",
    "Plugin",
    "RunnerError",
    "StepContext",
    "StepFailed",
    "__version__",
]

_HOMES = {
    "Diagnostic": "errors",
    "Location": "errors",
    "PipelineError": "errors",
    "RunnerError": "errors",
    "Plugin": "plugins",
    "StepContext": "plugins",
    "StepFailed": "plugins",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
