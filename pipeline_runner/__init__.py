"""pipeline-runner: declarative YAML pipelines, planned into a DAG and run in parallel.

The public API is small: load and plan a file, and the types a plugin author meets.
"""

from .errors import Diagnostic, Location, PipelineError, RunnerError
from .plugins import Plugin, StepContext, StepFailed

__all__ = [
    "Diagnostic",
    "Location",
    "PipelineError",
    "Plugin",
    "RunnerError",
    "StepContext",
    "StepFailed",
]
