"""The functions behind scheduled-ingestion.yaml: read the events after a watermark, write them
as one batch file, and say the new watermark (which `runner schedule` feeds to the next run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_new(path: str, after: int, limit: int) -> list[dict[str, Any]]:
    """At most `limit` events of the JSON-lines file `path` whose id is above `after`."""
    events = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            event = json.loads(line)
            if event["id"] > after:
                events.append(event)
    return sorted(events, key=lambda e: e["id"])[:limit]


def write_batch(events: list[dict[str, Any]], out_dir: str, after: int) -> dict[str, Any]:
    """Write the events to `out_dir/batch-FIRST-LAST.jsonl`; the watermark is the last id
    written (`after` again when there was nothing new)."""
    if not events:
        return {"watermark": after, "count": 0, "file": None}
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    first, last = events[0]["id"], events[-1]["id"]
    target = folder / f"batch-{first:04d}-{last:04d}.jsonl"
    target.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
    return {"watermark": last, "count": len(events), "file": str(target)}
