"""`runner run` from end to end: plan, secrets, state folder, executor, scheduler, reports.

This is the glue between the command line and the pieces; each piece stays ignorant of the
others (the scheduler of processes, the executors of the plan, the reporters of both).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import defaults, gcpolicy
from .errors import EXIT_OK, PlatformError, UsageError
from .graph import plain, topological
from .keeping import recorded_plan, resume_state
from .kinds import RunStatus
from .model import Node, NodeKind, Plan, State
from .paths import StatePaths
from .planner import Options as PlannerOptions
from .planner import plan_file
from .rerun import Chosen, rerun_notes
from .scheduler import Options as SchedulerOptions
from .scheduler import RunResult, Scheduler, Sink
from .secrets import Masker, read_secrets


@dataclass
class RunRequest:
    """Everything `runner run` and `runner resume` ask of the engine: the file, the options
    and where the reports go."""

    file: str
    planner: PlannerOptions
    workers: int | None = None
    executor: str = defaults.EXECUTOR
    dask_scheduler: str | None = None
    only: Sequence[str] = ()
    dry_run: bool = False
    fail_fast: bool = False
    junit: str | None = None
    json_path: str | None = None
    events: str | None = None
    trace: str | None = None
    metrics: str | None = None  # a Prometheus textfile written at the end (metrics.py)
    otlp: bool = False  # spans sent to an OTLP collector (otlp.py)
    progress: str = defaults.PROGRESS
    secrets_file: str | None = None
    grace: float = defaults.GRACE
    no_cache: bool = False
    force_steps: Sequence[str] = ()  # run --force GLOB: these skip the cache lookup
    rerun: Sequence[str] = ()  # resume --rerun GLOB: these and their downstream run again
    failed: bool = False  # resume --failed: the failed steps and their downstream run again
    no_compensate: bool = False
    state_dir: str = defaults.STATE_DIR
    extra: dict[str, Any] = field(default_factory=dict)


def new_run_id() -> str:
    """Sortable by time: 20261121T231808-3fa2c1."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()


def run_pipeline(request: RunRequest, resume: str | None = None, force: bool = False) -> int:
    """`runner run`, or with `resume` (a run id) `runner resume`."""
    absolute_paths(request)
    if resume is None:
        return _start(request, None, force)
    # Before anything of the run is read: a second resume must not plan from the same state.
    from .runlock import hold

    lock = hold(StatePaths(Path(request.state_dir)).run(resume).lock, resume, "resume")
    try:
        refuse_if_running(request.state_dir, resume)
        return _start(request, resume, force)
    finally:
        lock.release()


def refuse_if_running(state_dir: str, run_id: str) -> None:
    """A run recorded `running` by a runner that is still alive and holds no lock (a runner
    older than the lock) is refused too."""
    from .store import open_store

    store = open_store(Path(state_dir), create=False)
    try:
        row = store.run(run_id)
    finally:
        store.close()
    pid = row.get("pid")
    if row["status"] != "running" or not pid or pid == os.getpid():
        return
    from .procs import still_running

    # The pid AND its start time: after a while the pid may belong to another process.  A run
    # recorded without the start time: a process with the pid whose command line is runner's.
    start = row.get("pid_start")
    if start:
        alive = still_running(pid, start)
    else:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                alive = b"runner" in f.read()
        except OSError:
            alive = False
    if alive:
        raise UsageError(f"run {row['id']} is still running (pid {pid}); stop it first")


def _start(request: RunRequest, resume: str | None, force: bool) -> int:
    from .executors import early_start

    # The executor may start what takes long (a Dask cluster) while the file is planned.
    executor = "" if request.dry_run else request.executor  # a dry run starts none
    with early_start(executor, request.workers, request.dask_scheduler) as early:
        return _planned(request, resume, force, early)


def _planned(request: RunRequest, resume: str | None, force: bool, early: Any) -> int:
    plan = plan_file(request.file, request.planner)
    if request.otlp and not request.dry_run:
        from .otlp import check_installed

        check_installed()
    if request.failed and resume is not None:
        redrive_failed(request, plan, resume)
    check_only(plan, request.only)
    chosen = choose(request, plan, resume)
    # The plan lives as long as the run: keep the collector's passes during the run off it.
    gcpolicy.for_the_run()
    secret_values = read_secrets(plan.secrets, os.environ, request.secrets_file)
    masker = Masker(secret_values.values())
    if request.dry_run:
        cache = dry_run_cache(request.state_dir)
        text = dry_run_text(plan, request.only, cache, not request.no_cache, chosen.forced)
        progress_stream(request).write(masker.text(text))
        if request.json_path:
            from .exports import write_report
            from .graph import to_json

            write_report(request.json_path, masker.json(json.loads(to_json(plan)), indent=2) + "\n")
        return EXIT_OK
    from .concurrency import enter

    group = enter(Path(request.state_dir), plan.concurrency, _note)
    try:
        return _execute(request, plan, (secret_values, masker), resume, (force, chosen), early)
    finally:
        group.release()  # once the run's end is recorded: the next of the group may start


def _note(text: str) -> None:
    sys.stderr.write(f"runner: {text}\n")
    sys.stderr.flush()


def _execute(
    request: RunRequest,
    plan: Plan,
    secrets: tuple[dict[str, str], Masker],
    resume: str | None,
    choice: tuple[bool, Chosen],
    early: Any,
) -> int:
    """The run itself, once the plan may run (its concurrency group is held); `early` is what
    the executor started while the file was planned (executors.early_start)."""
    secret_values, masker = secrets
    force, chosen = choice
    if request.workers is not None and request.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {request.workers}")
    workers = request.workers or defaults.workers()
    bound = parallel_bound(plan)
    if bound is not None:  # a worker no step can use is only a process to start and stop
        workers = min(workers, bound)
    from .procs import platform_problem

    problem = platform_problem()
    if problem is not None:
        raise PlatformError(problem)
    from .executors import make_executor

    executor = make_executor(
        request.executor,
        workers,
        list(secret_values.values()),
        scheduler=request.dask_scheduler,
        early=early,
    )
    if request.executor == "process":
        executor.start()  # now, while this process has one thread (see executors/process.py)
    handed_over: list[bool] = []
    try:
        session = Session(request, plan, secret_values, masker, resume, force, chosen)
        return _run(session, executor, handed_over)
    except BaseException:
        if not handed_over:  # the scheduler closes the executor once it has it
            executor.close()
        raise


@dataclass(frozen=True)
class Session:
    """What a run (or a resume: `resume` is its run id) works with once its file is planned."""

    request: RunRequest
    plan: Plan
    secret_values: dict[str, str]
    masker: Masker
    resume: str | None
    force: bool
    chosen: Chosen


def redrive_failed(request: RunRequest, plan: Plan, run_id: str) -> None:
    """`resume --failed`: the run's failed steps run again, with what is downstream of them
    (deadletters.py): the slice is `--only`, the failed steps `--rerun`."""
    from . import deadletters
    from .store import open_store

    store = open_store(Path(request.state_dir), create=False)
    try:
        rows = store.steps(run_id)
    finally:
        store.close()
    request.only = deadletters.redrive(plan, run_id, rows)
    request.rerun = deadletters.failed_ids(rows)


def choose(request: RunRequest, plan: Plan, resume: str | None) -> Chosen:
    """`--force` and `--rerun`, checked before anything runs: a glob that selects nothing
    (in the `--only` slice, when there is one) is an error."""
    from . import rerun as sel

    scope = " in the --only selection" if request.only else ""
    if request.force_steps:
        ids = sel.selectable(plan, request.only)
        sel.check_globs("--force", request.force_steps, ids, "step" + scope)
        return Chosen(forced=frozenset(sel.whole(plan, sel.matching(request.force_steps, ids))))
    if not request.rerun or resume is None:
        return Chosen()
    from .store import open_store

    store = open_store(Path(request.state_dir), create=False)
    try:
        recorded = [str(r["step_id"]) for r in store.steps(resume)]
    finally:
        store.close()
    ids = sel.selectable(plan, request.only, recorded)
    sel.check_globs("--rerun", request.rerun, ids, "step of the run" + scope)
    matched = sel.matching(request.rerun, ids)
    cleared, held = sel.downstream(plan, matched, recorded)
    given = sel.whole(plan, matched, recorded)
    shown = tuple(nid for nid in ids if nid in given)
    return Chosen(frozenset(cleared), frozenset(cleared - held), shown)


def _run(session: Session, executor: Any, handed_over: list[bool]) -> int:
    from .gatebook import StoreBook
    from .store import open_store
    from .storesink import StoreSink

    request, plan, masker = session.request, session.plan, session.masker
    secret_values, resume, force = session.secret_values, session.resume, session.force

    paths = StatePaths(Path(request.state_dir))
    store = open_store(paths.root)
    plan_json = plan_fingerprint(plan)
    plan_hash = _sha256(plan_json.encode())
    options = SchedulerOptions(
        fail_fast=request.fail_fast,
        only=request.only,
        grace=request.grace,
        cache=store,
        use_cache=not request.no_cache,
        compensate=not request.no_compensate,
        forced=session.chosen.forced,
        gates=StoreBook(store),
    )
    lock = None  # a resume holds its run's lock already
    if resume is not None:
        run_id = resume
        rerun = frozenset(nid for nid, node in plan.nodes.items() if node.is_finally)
        rerun |= session.chosen.rerun
        results = store.step_results(run_id)
        recorded = recorded_plan(store, run_id, plan_json, plan_hash)
        options.preset, options.attempts_done = resume_state(
            run_id, plan, recorded, plan_json, results, force, rerun
        )
        del recorded
        if session.chosen.matched:
            store.note_rerun(run_id, rerun_notes(plan, session.chosen, request.rerun, results))
        del results  # not held through the run
        if request.only:  # a slice: the steps it leaves out are kept as recorded (runsetup)
            options.recorded_rows = {str(row["step_id"]): row for row in store.steps(run_id)}
    else:
        run_id = new_run_id()
        from .runlock import hold

        lock = hold(paths.run(run_id).lock, run_id, "run")  # released when this process ends
    run_dir = paths.run(run_id).folder
    run_dir.mkdir(parents=True, exist_ok=True)
    record = StoreSink(
        store,
        request_record(request, plan),
        plan_json,
        plan_hash,
        _sha256(Path(request.file).read_bytes()),
        masker,
        resumed=resume is not None,
    )
    del plan_json  # kept packed by the sink: about 200 bytes a step, not held through the run
    # The store comes first: every turn is committed before any reporter shows it.
    sinks: list[Sink] = [record]
    if request.events:
        from .exports import EventsFile

        sinks.append(EventsFile(request.events, masker))
    sinks.extend(choose_reporter(request, masker))
    if request.otlp:
        from .otlp import OtlpSink

        tracing = OtlpSink(run_id, plan.name, masker, resumed=resume is not None)
        options.trace = tracing.trace
        sinks.append(tracing)
    scheduler = Scheduler(plan, executor, run_id, run_dir, secret_values, sinks, options)
    handed_over.append(True)
    try:
        result = scheduler.run()
    finally:
        store.close()
        if lock is not None:
            lock.release()
    finish(result, request, masker, plan)
    return result.exit_code


def parallel_bound(plan: Plan) -> int | None:
    """The most attempts the plan can have running at once: its steps and their compensations
    (None when a `for_each` expanded at run time makes the count unknown)."""
    nodes = plan.nodes.values()
    if any(node.kind is NodeKind.MAPPED for node in nodes):
        return None
    steps = [node for node in nodes if node.kind is NodeKind.STEP]
    return max(1, len(steps) + sum(1 for node in steps if node.compensate is not None))


def absolute_paths(request: RunRequest) -> None:
    """Paths the user gave, fixed against the current folder now: steps run in the
    pipeline's folder (and with the inline executor, in this very process)."""
    request.state_dir = os.path.abspath(request.state_dir)
    for name in ("junit", "json_path", "events", "trace", "metrics", "secrets_file"):
        value = getattr(request, name)
        if value and value != "-":  # a report to `-` goes to stdout
            setattr(request, name, os.path.abspath(value))


def plan_fingerprint(plan: Plan) -> str:
    """The plan as stored with the run, and compared by `resume`."""
    from .graph import node_json

    nodes = [node_json(node, location=False) for node in plan.nodes.values()]
    # No sort_keys: the planner builds every node in a fixed order, and `resume` compares the
    # parsed nodes, not the text.
    return json.dumps(
        {"name": plan.name, "params": plain(plan.params), "nodes": nodes}, default=str
    )


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def check_only(plan: Plan, only: Sequence[str]) -> None:
    """Each `--only` pattern must select a node of the plan: one that selects nothing is a
    mistake (a typo, a wrong case), not an empty run."""
    from .rerun import check_globs

    check_globs("--only", only, plan.nodes, "step")


def request_record(request: RunRequest, plan: Plan) -> dict[str, Any]:
    """What `resume` needs to plan the same run again, with the values read from the params
    file (a resume uses them, not the file as it is by then)."""
    return {
        "file": os.path.abspath(request.file),
        "params": dict(request.planner.params),
        "param_texts": dict(request.planner.param_texts),
        "params_file": os.path.abspath(request.planner.params_file)
        if request.planner.params_file
        else None,
        "max_file_size": request.planner.max_file_size,
        "secrets_file": request.secrets_file,
        "only": list(request.only),
        "params_file_values": params_file_values(request, plan),
    }


def params_file_values(request: RunRequest, plan: Plan) -> dict[str, Any] | None:
    """The parameters the params file gave this run (those the pipeline declares)."""
    path = request.planner.params_file
    if not path:
        return None
    from .loader import load_values_file

    data = load_values_file(path, request.planner.max_file_size).data
    return {k: plain(v) for k, v in data.items() if k in plan.params}


def choose_reporter(request: RunRequest, masker: Masker) -> list[Sink]:
    """The live view when the terminal can redraw (or `--progress rich`), plain lines otherwise
    (TERM=dumb, a CI job, not a TTY), failures only with `--progress none`.  Progress goes to
    stderr when a report is written to stdout (`--json -`), so stdout holds the report alone."""
    from .report import FailuresOnly, GitHubAnnotations, LiveReporter, PlainReporter, can_redraw

    progress = request.progress
    github = os.environ.get("GITHUB_ACTIONS") == "true"
    out = progress_stream(request)
    sinks: list[Sink] = []
    if progress == "none":
        sinks.append(FailuresOnly(out=sys.stderr, masker=masker))
    elif progress == "rich" or (progress == "auto" and can_redraw(out, os.environ)):
        sinks.append(LiveReporter(masker, color=summary_color(request, out), out=out))
    else:
        sinks.append(PlainReporter(out=out, masker=masker))
    if github and progress != "none":
        sinks.append(GitHubAnnotations(out=out, masker=masker, state_dir=request.state_dir))
    return sinks


def progress_stream(request: RunRequest) -> TextIO:
    """stdout, or stderr when a report goes to stdout or with `--progress none`."""
    reports = (request.json_path, request.junit, request.trace, request.events, request.metrics)
    to_stdout = "-" in reports
    return sys.stderr if to_stdout or request.progress == "none" else sys.stdout


def summary_color(request: RunRequest, out: TextIO) -> bool:
    from .report import wants_color

    return request.progress != "plain" and wants_color(
        out, os.environ, forced=request.progress == "rich"
    )


def finish(result: RunResult, request: RunRequest, masker: Masker, plan: Plan) -> None:
    if request.json_path or request.junit or request.trace or request.metrics:
        from . import exports

        if request.json_path:
            exports.write_json(request.json_path, result, plan.name, masker)
        if request.junit:
            exports.write_junit(request.junit, result, plan.name, masker)
        if request.trace:
            exports.write_trace(request.trace, result, masker)
        if request.metrics:
            from .metrics import metrics_text

            exports.write_report(request.metrics, metrics_text(result, plan.name))
    out = progress_stream(request)
    if request.progress == "none":
        _print_last_line(result, masker, out)
    else:
        _print_summary(result, masker, summary_color(request, out), out)
    if result.status == "waiting":
        _print_waiting(result, masker, out, request.state_dir)
    sys.stdout.flush()


def _print_last_line(result: RunResult, masker: Masker, out: TextIO) -> None:
    """`--progress none`: the run's last line only (and how to resume it)."""
    from .report import summary_line

    lines = [summary_line(result)]
    if result.status is not RunStatus.SUCCEEDED:
        lines.append(f"resume with: runner resume {result.run_id}")
    _write(out, masker.text("\n".join(lines) + "\n"))


def _print_summary(result: RunResult, masker: Masker, color: bool, out: TextIO) -> None:
    from .escape import ci_report
    from .report import summary

    text = masker.text(summary(result, color))
    if result.outputs:
        # outputs can hold a step's text: no `##[` command in CI
        text += "outputs:\n" + ci_report(masker.json(result.outputs, indent=2, default=str)) + "\n"
    if result.status is not RunStatus.SUCCEEDED:
        text += f"resume with: runner resume {result.run_id}\n"
    _write(out, text)


def _print_waiting(result: RunResult, masker: Masker, out: TextIO, state_dir: str) -> None:
    """A run stopped `waiting`: each gate, the commands that answer it, and how to go on."""
    from .approvals import waiting_lines

    gates = [(nid, nr.output) for nid, nr in result.nodes.items() if nr.state is State.WAITING]
    _write(out, masker.text("\n".join(waiting_lines(result.run_id, gates, state_dir)) + "\n"))


def _write(out: TextIO, text: str) -> None:
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())


def dry_run_cache(state_dir: str) -> Any:
    """The run store, read for cache lookups, when it exists (a dry run creates nothing)."""
    from .errors import RunNotFound, StoreError
    from .store import open_store

    try:
        return open_store(Path(state_dir), create=False)
    except (RunNotFound, StoreError):
        return None  # no store to read: every cached step says why it would run


def dry_run_reasons(
    plan: Plan,
    only: Sequence[str] = (),
    cache: Any = None,
    use_cache: bool = True,
    forced: frozenset[str] = frozenset(),
) -> Iterator[tuple[Node, str]]:
    """Each step in execution order with what a run would do with it and why (`run`, `skip
    (...)`, `cached (...)`): what `run --dry-run` and `runner status` print."""
    import fnmatch

    from .graph import DryRun

    dry = DryRun(plan, cache, use_cache, forced)
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
        else:
            why = dry.reason(node)
        if node.kind is NodeKind.MAPPED and node.cache is not None and node.id in forced:
            why += " (--force: its instances look nothing up in the cache)"
        yield node, why


def dry_run_text(
    plan: Plan,
    only: Sequence[str],
    cache: Any = None,
    use_cache: bool = True,
    forced: frozenset[str] = frozenset(),
) -> str:
    lines = [f"plan of {plan.name}: steps in execution order"]
    for node, why in dry_run_reasons(plan, only, cache, use_cache, forced):
        kind = " (mapped: expanded at run time)" if node.kind is NodeKind.MAPPED else ""
        if node.loop is not None:
            kind = f" (loop: at most {node.loop.max_iterations} iterations, made at run time)"
        lines.append(f"- {node.id} [{node.uses or 'template'}]{kind}: {why}")
        if node.needs:
            lines.append(f"    needs: {', '.join(node.needs)}")
        if node.with_:
            lines.append(f"    with: {json.dumps(plain(node.with_), default=str)}")
    return "\n".join(lines) + "\n"
