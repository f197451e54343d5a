"""The one piece that writes a command's JSON on stdout: `json.dumps(data, indent=2)` and a
line end, in blocks, spelled for CI systems that read stdout (`escape.ci_report`)."""

from __future__ import annotations

import json
import sys
from typing import Any

from .escape import ci_report

BLOCK = 1 << 16  # characters gathered before they are written
# How every command's JSON is spelled (showfast.py writes the same bytes its own way).
ENCODER = json.JSONEncoder(indent=2, default=str)


def echo_json(data: Any) -> None:
    """`data` as indented JSON on stdout (as `json.dumps(data, indent=2)` and a line end),
    written in blocks as it is encoded: the text of a big run is never whole in memory.  Each
    block is a run of whole JSON tokens, so `ci_report` sees every string whole."""
    out = sys.stdout
    block: list[str] = []
    size = 0
    for chunk in ENCODER.iterencode(data):
        block.append(chunk)
        size += len(chunk)
        if size >= BLOCK:
            out.write(ci_report("".join(block)))
            block, size = [], 0
    block.append("\n")
    out.write(ci_report("".join(block)))
    out.flush()
