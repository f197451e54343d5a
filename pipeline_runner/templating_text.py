"""What can be told about a template value, and how a value reads as text, without Jinja2
(kept apart so that planning a file with no templates, and running a step, never import it)."""

from __future__ import annotations

import json
from typing import Any

from .errors import TemplateError

MAX_SEQUENCE = 1024 * 1024


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def to_text(value: Any) -> str:
    """How a value reads when inserted into a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        check_weight(value, "this value as text")
        return json.dumps(value, default=str)
    return str(value)


_SAMPLE = 16


def weight(value: Any, depth: int = 3) -> int:
    """About how many characters `value` renders to.  Containers are sampled, so the cost is
    bounded and a list of many references to one big string weighs what it renders to."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3 + 1
    if isinstance(value, (list, tuple, dict)):
        n = len(value)
        if n == 0 or depth == 0:
            return n
        if isinstance(value, dict):
            sample = [x for pair in list(value.items())[:_SAMPLE] for x in pair]
            per = sum(weight(x, depth - 1) for x in sample) / min(n, _SAMPLE)
        else:
            picks = sorted({i * n // _SAMPLE for i in range(_SAMPLE)} | {n - 1})
            per = sum(weight(value[i], depth - 1) for i in picks) / len(picks)
        return n + int(per * n)
    return 1


def check_weight(value: Any, what: str) -> None:
    size = weight(value)
    if size > MAX_SEQUENCE:
        raise TemplateError(
            f"{what} would build about {size:,} characters, over the limit of {MAX_SEQUENCE:,}"
        )
