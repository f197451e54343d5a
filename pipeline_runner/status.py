"""`runner status FILE`: what a run of the file would do now, step by step, and what changed
since its last recorded run (as `dvc status` tells which stages changed).

The reasons are the dry run's (`engine.dry_run_reasons`): an answer from the cache, a run and
why the cache cannot answer, a skip known before the run.  Nothing is run or written; the store
is only read.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .engine import dry_run_cache, dry_run_reasons, plan_fingerprint
from .model import Plan


def status(plan: Plan, state_dir: str, use_cache: bool = True) -> dict[str, Any]:
    """What `runner status --json` prints."""
    store = dry_run_cache(state_dir)
    try:
        last = last_run(store, plan.file) if store is not None else None
        before: dict[str, Any] = {}
        if last is not None:
            before = {n["id"]: n for n in json.loads(store.plan_json(last["id"]))["nodes"]}
        now = {n["id"]: n for n in json.loads(plan_fingerprint(plan))["nodes"]}
        steps = []
        for node, why in dry_run_reasons(plan, (), store, use_cache):
            change = None
            if last is not None:
                old = before.get(node.id)
                change = "new" if old is None else ("changed" if old != now[node.id] else None)
            steps.append(
                {"id": node.id, "action": why.split(" ", 1)[0], "why": why, "change": change}
            )
    finally:
        if store is not None:
            store.close()
    return {
        "pipeline": plan.name,
        "file": plan.file,
        "last_run": None
        if last is None
        else {"id": last["id"], "status": last["status"], "started": last["started"]},
        "steps": steps,
    }


def last_run(store: Any, file: str) -> dict[str, Any] | None:
    """The newest recorded run of `file`, if any."""
    path = os.path.abspath(file)
    for row in store.runs(1000):
        if json.loads(row["request_json"] or "{}").get("file") == path:
            return dict(row)
    return None


def status_text(data: dict[str, Any]) -> str:
    steps = data["steps"]
    counts = {a: sum(1 for s in steps if s["action"] == a) for a in ("cached", "run", "skip")}
    last = data["last_run"]
    since = f"last run {last['id']} {last['status']}" if last else "never run here"
    lines = [
        f"status of {data['pipeline']}: {counts['cached']} cached, {counts['run']} would run, "
        f"{counts['skip']} skipped; {since}"
    ]
    width = max((len(s["id"]) for s in steps), default=0)
    for step in steps:
        note = f"  [{step['change']} since the last run]" if step["change"] else ""
        lines.append(f"  {step['action']:<6} {step['id']:<{width}}  {step['why']}{note}")
    return "\n".join(lines) + "\n"
