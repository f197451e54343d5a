"""`noop`: does nothing; its output is null.  Useful for joins and for benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..plugins import StepContext


class Noop:
    """Do nothing; the output is null."""

    summary = "Do nothing; the output is null (joins, placeholders, benchmarks)."
    schema: Mapping[str, Any] = {
        "type": "object",
        "description": "noop takes no arguments; anything given is ignored.",
    }

    def run(self, with_: Mapping[str, Any], ctx: StepContext) -> Any:
        return None


plugin = Noop()
