"""Which YAML files are pipeline files (`runner validate --skip-non-pipelines`, the pre-commit
hook): a file named by the convention `NAME.runner.yaml`, or one whose top level is a mapping
with both `version` and `steps`.  Other YAML (docker-compose.yml, CI workflows, Kubernetes
manifests) is skipped without a word."""

from __future__ import annotations

import re

from .errors import PipelineError, RunnerError
from .loader import load_text, read_text

CONVENTION = re.compile(r"\.runner\.ya?ml$")
# The two top-level keys, for a file the loader refuses (a YAML error in a pipeline is still
# reported, as the pipeline's error).
_TOP_LEVEL_KEY = re.compile(r"^(version|steps)[ \t]*:", re.MULTILINE)


def is_pipeline(path: str, max_size: int) -> bool:
    if CONVENTION.search(path):
        return True
    try:
        text = read_text(path, max_size)
    except RunnerError:
        return True  # unreadable or too large: validate says why
    try:
        data = load_text(text, path).data
    except PipelineError:
        return {m.group(1) for m in _TOP_LEVEL_KEY.finditer(text)} == {"version", "steps"}
    return isinstance(data, dict) and "version" in data and "steps" in data


def pipeline_files(paths: tuple[str, ...], max_size: int) -> tuple[str, ...]:
    return tuple(path for path in paths if is_pipeline(path, max_size))
