"""pipeline-runner: declarative YAML pipelines, planned into a DAG and run in parallel.

The public API is small: load and plan a file, and the types a plugin author meets.
"""

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
