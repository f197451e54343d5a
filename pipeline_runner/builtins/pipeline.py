"""`pipeline`: a nested pipeline file, inlined at plan time as a group.

The planner expands it (see `Planner.inline_pipeline`); this plugin exists so the name is
registered, documented and its `with` checked like any other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..plugins import StepContext


class Pipeline:
    """Run another pipeline file as a group of steps."""

    summary = "Inline another pipeline file as a group of steps; output: its `outputs`."
    schema: Mapping[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["file"],
        "properties": {
            "file": {
                "type": "string",
                "description": "Path of the pipeline file, relative to this file's folder.",
            },
            "params": {
                "type": "object",
                "description": "Parameters of the nested pipeline (override its `params`).",
            },
        },
    }

    def run(self, with_: Mapping[str, Any], ctx: StepContext) -> Any:
        raise RuntimeError("a `pipeline` step is inlined at plan time and never runs itself")


plugin = Pipeline()
