"""`runner run` from end to end: plan, secrets, state folder, executor, scheduler, reports.

This is the glue between the command line and the pieces; each piece stays ignorant of the
others (the scheduler of processes, the executors of the plan, the reporters of both).
"""

from __future__ import annotations

import json
import os
import secrets as _random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EXIT_OK, UsageError
from .graph import plain, topological
from .model import NodeKind, Plan
from .planner import Options as PlannerOptions
from .planner import plan_file
from .scheduler import Options as SchedulerOptions
from .scheduler import RunResult, Scheduler, Sink
from .secrets import Masker, read_secrets


@dataclass
class RunRequest:
    file: str
    planner: PlannerOptions
    workers: int | None = None
    executor: str = "process"
    dask_scheduler: str | None = None
    only: Sequence[str] = ()
    dry_run: bool = False
    fail_fast: bool = False
    junit: str | None = None
    json_path: str | None = None
    events: str | None = None
    trace: str | None = None
    progress: str = "auto"
    secrets_file: str | None = None
    grace: float = 3.0
    no_cache: bool = False
    no_compensate: bool = False
    state_dir: str = ".runner"
    extra: dict[str, Any] = field(default_factory=dict)


def new_run_id() -> str:
    """Sortable by time: 20261121T231808-3fa2c1."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + _random.token_hex(3)


def choose_reporter(progress: str) -> list[Sink]:
    from .report import GitHubAnnotations, LiveReporter, PlainReporter, Quiet

    github = os.environ.get("GITHUB_ACTIONS") == "true"
    sinks: list[Sink] = []
    if progress == "none":
        sinks.append(Quiet())
    elif progress == "rich" or (progress == "auto" and sys.stdout.isatty() and not github):
        sinks.append(LiveReporter())
    else:
        sinks.append(PlainReporter())
    if github and progress != "none":
        sinks.append(GitHubAnnotations())
    return sinks


def run_pipeline(request: RunRequest) -> int:
    if request.executor == "process" and not request.dry_run:
        from .executors.process import warm_up

        warm_up()  # the forkserver imports the worker code while we plan
    plan = plan_file(request.file, request.planner)
    secret_values = read_secrets(plan.secrets, os.environ, request.secrets_file)
    masker = Masker(secret_values.values())
    if request.dry_run:
        print(masker.text(dry_run_text(plan, request.only)), end="")
        if request.json_path:
            from .graph import to_json

            Path(request.json_path).write_text(masker.text(to_json(plan)))
        return EXIT_OK
    workers = request.workers or os.cpu_count() or 1
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    state_dir = Path(request.state_dir)
    run_id = new_run_id()
    run_dir = state_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    from .executors import make_executor

    executor = make_executor(
        request.executor, workers, list(secret_values.values()), scheduler=request.dask_scheduler
    )
    sinks = choose_reporter(request.progress)
    scheduler = Scheduler(
        plan,
        executor,
        run_id,
        run_dir,
        secret_values,
        sinks,
        SchedulerOptions(fail_fast=request.fail_fast, only=request.only, grace=request.grace),
    )
    result = scheduler.run()
    finish(result, request, masker)
    return result.exit_code


def finish(result: RunResult, request: RunRequest, masker: Masker) -> None:
    from .report import summary

    if request.progress != "none":
        color = request.progress == "rich" or (request.progress == "auto" and sys.stdout.isatty())
        print(masker.text(summary(result, color)), end="")
        if result.outputs:
            print("outputs:")
            print(masker.text(json.dumps(result.outputs, indent=2, default=str)))
        if result.status == "cancelled":
            print(f"resume with: runner resume {result.run_id}")
    sys.stdout.flush()


def dry_run_text(plan: Plan, only: Sequence[str]) -> str:
    import fnmatch

    lines = [f"plan of {plan.name}: steps in execution order"]
    chosen: set[str] | None = None
    if only:
        chosen = {n for n in plan.nodes if any(fnmatch.fnmatchcase(n, p) for p in only)}
        stack = list(chosen)
        while stack:
            for need in plan.nodes[stack.pop()].needs:
                if need not in chosen:
                    chosen.add(need)
                    stack.append(need)
    for node in topological(plan.nodes):
        if node.kind is NodeKind.GROUP:
            continue
        if chosen is not None and node.id not in chosen:
            why = "skip: not selected by --only"
        elif node.condition is not None:
            why = f"run if {plain(node.condition)}"
        else:
            why = "run"
        kind = " (mapped: expanded at run time)" if node.kind is NodeKind.MAPPED else ""
        lines.append(f"- {node.id} [{node.uses}]{kind}: {why}")
        if node.needs:
            lines.append(f"    needs: {', '.join(node.needs)}")
        if node.with_:
            lines.append(f"    with: {json.dumps(plain(node.with_), default=str)}")
    return "\n".join(lines) + "\n"
