"""`approval`: a gate that waits for a person's answer (`runner approve` / `runner reject`).

The scheduler never hands a gate to a worker: it records the step `waiting` and finishes it
when an answer comes (approvals.py).  Only the schema lives here, so that `runner validate`,
`runner plugins` and `runner schema --plugins` know the step's `with`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..plugins import StepContext

DURATION_PATTERN = "^\\s*(\\d+(\\.\\d+)?(ms|s|m|h))+\\s*$|\\{\\{"


class Approval:
    """Wait for an answer given with `runner approve` or `runner reject`."""

    summary = (
        "Wait for a person's answer (runner approve / runner reject); its value is the output."
    )
    schema: Mapping[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "prompt": {
                "type": "string",
                "description": "The question shown to whoever answers.",
            },
            "choices": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "description": "The values `runner approve --value` accepts (any when not given).",
            },
            "timeout": {
                # a number of seconds, or a duration's text (approvals.with_problems checks
                # its range)
                "type": ["number", "string"],
                "minimum": 0,
                "pattern": DURATION_PATTERN,
                "description": "How long to wait from when the gate first waits (e.g. 30m, "
                "1h30m); then the step fails with kind `timeout`.",
            },
        },
    }

    def run(self, with_: Mapping[str, Any], ctx: StepContext) -> Any:
        raise RuntimeError("an approval gate is answered with `runner approve`; it never runs")


plugin = Approval()
