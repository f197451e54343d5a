"""Durations as pipeline files write them: a number of seconds, or number+unit parts (`500ms`,
`30s`, `5m`, `2h`, `1h30m`).  Read by the planner (timeouts, retries, breakers) and at run
time (an approval gate's templated `timeout`)."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# The longest duration a step may ask for: 24 days, under the 2**31 milliseconds that the
# operating system's waits (poll, timers) take, so a long timeout or delay never overflows them.
MAX_DURATION = 24 * 24 * 3600.0


def parse_duration(value: Any) -> float:
    """Seconds, from a number or a text like `1h30m`; between 0 and MAX_DURATION."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) if value < MAX_DURATION * 2 else math.inf  # no float overflow
    else:
        text = str(value).strip()
        parts = _DURATION_RE.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
            raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 30s, 5m, 2h, 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"invalid duration {value!r}: over the limit of 24 days (576h)")
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: a duration cannot be negative")
    return seconds
