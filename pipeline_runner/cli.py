"""The `runner` command line: the only place that prints errors and turns them into exit codes.

Heavy modules (jsonschema, jinja2, rich, the engine) are imported inside the commands that use
them, so `runner --help` stays fast.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from . import __version__, completion, defaults
from .errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_SIGINT,
    EXIT_USAGE,
    Diagnostic,
    PipelineError,
    RunnerError,
    RunSkipped,
    UsageError,
)
from .escape import ci_report, printable
from .jsonout import echo_json
from .runfilter import ENDED_STATUSES, STATUSES

F = TypeVar("F", bound=Callable[..., Any])
REPORT_URL = "https://github.com/pipeline-runner/pipeline-runner/issues"


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


def fail(exc: RunnerError) -> NoReturn:
    if isinstance(exc, PipelineError):
        for diagnostic in exc.diagnostics:
            _echo_err(printable(str(diagnostic)))
        count = len(exc.diagnostics)
        _echo_err(f"{count} error{'s' if count != 1 else ''} found; nothing was run")
    else:
        # A message may quote a value from a file or the command line: escaped, on its lines.
        what = "skipped" if isinstance(exc, RunSkipped) else "error"
        _echo_err(f"runner: {what}: {printable(str(exc), one_line=False)}")
    sys.exit(exc.exit_code)


class Command(click.Command):
    """A command whose summary in `runner --help` is its first sentence whole: click cuts it at
    45 characters with `...`; the help screen wraps it instead."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return super().get_short_help_str(limit=max(limit, 200))


class Group(click.Group):
    """Turns the library's errors into messages and exit codes, and hides tracebacks."""

    command_class = Command

    def invoke(self, ctx: click.Context) -> Any:
        from .gcpolicy import for_a_command

        for_a_command()
        try:
            return self._invoke(ctx)
        finally:
            # Nothing made so far is garbage the collector could free before exit; freezing it
            # spares the interpreter's last collections (~20 ms of every command's exit).
            gc.freeze()

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RunnerError as exc:
            fail(exc)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            _echo_err("runner: interrupted")
            sys.exit(EXIT_SIGINT)
        except BrokenPipeError:
            # The reader of our output went away; say nothing more on a closed pipe.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                import traceback

                traceback.print_exc()
            else:
                _echo_err(
                    f"runner: internal error: {type(exc).__name__}: {printable(str(exc))} -- "
                    "this is a bug in "
                    f"runner; please report it at {REPORT_URL} (run with --debug for details)"
                )
            sys.exit(EXIT_INTERNAL)


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, shown in the order given."""

    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


# The options of every command that plans a file (validate, graph, run).
param_options = _options(
    click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="NAME=VALUE",
        help="Set a parameter; VALUE is read as YAML (3 is a number, [a,b] a list).",
    ),
    click.option(
        "--params-file", type=click.Path(dir_okay=False), help="YAML or JSON file of parameters."
    ),
    click.option(
        "--max-file-size",
        type=int,
        default=defaults.MAX_FILE_SIZE,
        show_default=True,
        help="Refuse pipeline files larger than this many bytes.",
    ),
)


def planner_options(params: Sequence[str], params_file: str | None, max_file_size: int) -> Any:
    from .loader import format_path, non_finite
    from .planner import Options, parse_param_value

    parsed: dict[str, Any] = {}
    texts: dict[str, str] = {}  # as written: a `string` parameter takes the text itself
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--param takes NAME=VALUE, got {item!r}")
        texts[name.strip()] = value
        parsed[name.strip()] = parse_param_value(value)
        bad = non_finite(parsed[name.strip()], (name.strip(),))
        if bad:
            raise UsageError(
                f"--param {item!r}: {format_path(bad[0])}: a number must be finite "
                "(quote it to pass the text)"
            )
    return Options(
        params=parsed, param_texts=texts, params_file=params_file, max_file_size=max_file_size
    )


class Seconds(click.FloatRange):
    """A finite number of seconds in a range (FloatRange alone lets nan through)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if seconds != seconds:  # nan compares false to every bound
            self.fail(f"{value!r} is not a number of seconds.", param, ctx)
        return seconds


GRACE_MAX = defaults.GRACE_MAX
GRACE = Seconds(min=0, max=GRACE_MAX)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="runner")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Run declarative YAML pipelines: a DAG of steps in parallel worker processes.

    \b
    Start with:
      runner validate pipeline.yaml     check a file, run nothing
      runner graph pipeline.yaml --dot  draw the plan
      runner run pipeline.yaml          run it
    """
    ctx.obj = {"debug": debug}
    from .envvars import note_old_names

    note_old_names()


@main.command(short_help="Check pipeline files; run nothing.")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github", "gitlab"]),
    help="text (default); json; github: text and `::error` annotations (the default when "
    "GITHUB_ACTIONS=true); gitlab: a GitLab Code Quality report on stdout.",
)
@click.option(
    "--codequality",
    metavar="FILE",
    help="Also write a GitLab Code Quality report (JSON) to FILE (- for stdout).",
)
@click.option(
    "--skip-non-pipelines",
    is_flag=True,
    help="Skip YAML files that are not pipelines: neither named NAME.runner.yaml nor with "
    "top-level `version` and `steps` (for the pre-commit hook).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout (--format json).")
@param_options
def validate(
    files: tuple[str, ...],
    fmt: str | None,
    codequality: str | None,
    skip_non_pipelines: bool,
    as_json: bool,
    **planning: Any,
) -> None:
    """Check pipeline files without running anything (every error, not only the first)."""
    from .planner import plan_file

    max_file_size: int = planning["max_file_size"]  # the parameter options (param_options)
    fmt = "json" if as_json else fmt
    if fmt is None:
        fmt = "github" if os.environ.get("GITHUB_ACTIONS") == "true" else "text"
    if skip_non_pipelines:
        from .pipelinefiles import pipeline_files

        files = pipeline_files(files, max_file_size)
    options = planner_options(**planning)
    results: list[dict[str, Any]] = []
    found: list[Diagnostic] = []
    for path in files:
        try:
            plan = plan_file(path, options)
        except PipelineError as exc:
            found.extend(exc.diagnostics)
            results.append(
                {"file": path, "valid": False, "errors": [d.as_json() for d in exc.diagnostics]}
            )
            if fmt in ("text", "github", "gitlab"):
                for diagnostic in exc.diagnostics:
                    click.echo(printable(str(diagnostic)), err=True)
            continue
        steps = len(plan.steps())
        results.append({"file": path, "valid": True, "steps": steps, "errors": []})
        if fmt in ("text", "github"):
            click.echo(f"{printable(path)}: ok ({steps} step{'s' if steps != 1 else ''})")
    validate_reports(fmt, codequality, results, found)
    sys.exit(EXIT_USAGE if found else 0)


def validate_reports(
    fmt: str, codequality: str | None, results: list[dict[str, Any]], found: list[Diagnostic]
) -> None:
    """What `runner validate` writes after checking: JSON, annotations, a Code Quality report."""
    from .annotations import codequality_json, github_diagnostics

    if fmt == "json":
        click.echo(ci_report(json.dumps(results, indent=2)))
    elif fmt == "github":
        click.echo(github_diagnostics(found), nl=False)
    elif fmt == "gitlab":
        click.echo(codequality_json(found), nl=False)
    if codequality:
        from .exports import write_report

        write_report(codequality, codequality_json(found))
    if found and fmt != "json":
        count = len(found)
        click.echo(f"{count} error{'s' if count != 1 else ''} found", err=True)


@main.command(short_help="Print or draw the planned DAG.")
@click.argument("file", type=click.Path())
@click.option("--text", "fmt", flag_value="text", default=True, help="Levelled text (default).")
@click.option("--dot", "fmt", flag_value="dot", help="Graphviz DOT.")
@click.option("--mermaid", "fmt", flag_value="mermaid", help="Mermaid flowchart.")
@click.option("--json", "fmt", flag_value="json", help="JSON for tools.")
@click.option("--md", is_flag=True, help="With --mermaid: a fenced ```mermaid block for Markdown.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write to a file (- for stdout); .svg/.png/.pdf render the DOT through Graphviz.",
)
@param_options
def graph(
    file: str,
    fmt: str,
    md: bool,
    output: str | None,
    params: tuple[str, ...],
    params_file: str | None,
    max_file_size: int,
) -> None:
    """Print the planned DAG (templates, tenants and for_each expanded)."""
    from . import graph as graphs
    from .planner import plan_file

    if md and fmt != "mermaid":
        raise UsageError("--md goes with --mermaid (a fenced ```mermaid block)")
    plan = plan_file(file, planner_options(params, params_file, max_file_size))
    ext = os.path.splitext(output or "")[1].lower().lstrip(".")
    if ext in ("svg", "png", "pdf"):
        render_graphviz(graphs.to_dot(plan), output or "", ext)
        click.echo(f"wrote {output}")
        return
    render = {
        "text": graphs.to_text,
        "dot": graphs.to_dot,
        "mermaid": graphs.to_mermaid,
        "json": graphs.to_json,
    }[fmt]
    text = render(plan)
    if md:
        text = graphs.mermaid_markdown(text)
    if output:
        from .exports import write_report

        write_report(output, text)
    else:
        click.echo(text, nl=False)


def render_graphviz(dot: str, output: str, ext: str) -> None:
    import shutil
    import subprocess

    exe = shutil.which("dot")
    if exe is None:
        raise UsageError(
            "rendering to ." + ext + " needs Graphviz's `dot`, which is not installed "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz); "
            "or print DOT with --dot and render it elsewhere"
        )
    proc = subprocess.run(
        [exe, f"-T{ext}", "-o", output], input=dot.encode(), capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise RunnerError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")


@main.command()
@click.option(
    "--plugins",
    "with_plugins",
    is_flag=True,
    help="Add every installed plugin's `with` schema, chosen by the step's `uses` (for editors).",
)
def schema(with_plugins: bool) -> None:
    """Print the JSON Schema of pipeline files."""
    from .schema import plugins_schema_text, schema_text

    if not with_plugins:
        click.echo(schema_text(), nl=False)
        return
    text, broken = plugins_schema_text()
    for message in broken:
        click.echo(f"runner: warning: {message}; its `with` is not in the schema", err=True)
    click.echo(text)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON for tools.")
def plugins(as_json: bool) -> None:
    """List installed plugins: name, distribution, version and summary."""
    from .plugins import registry

    infos = registry().info()
    if as_json:
        click.echo(json.dumps([i.__dict__ for i in infos], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("plugin", "distribution", "version", "summary"):
        table.add_column(column)
    for info in infos:
        summary = info.summary if info.error is None else f"[red]broken:[/] {info.error}"
        table.add_row(info.name, info.distribution, info.version, summary)
    Console(soft_wrap=True).print(table)


REPORTS = {
    "--junit": ("junit", "Write a JUnit XML report"),
    "--json": ("json_path", "Write a JSON summary"),
    "--events": ("events", "Write state changes as JSON lines"),
    "--trace": ("trace", "Write a Chrome/Perfetto trace"),
    "--metrics": ("metrics", "Write Prometheus metrics at the end, a node_exporter textfile"),
}


def report_options(func: F) -> F:
    """The report files of `run` and `resume`; `-` is stdout.  Their paths are checked by
    `check_reports` before anything runs (click's own check would print a usage screen)."""
    for option, (name, text) in reversed(REPORTS.items()):
        func = click.option(option, name, metavar="FILE", help=f"{text} (- for stdout).")(func)
    return func


def check_reports(options: dict[str, Any]) -> None:
    """A report file that cannot be written is found before the first step, not after the last."""
    for option, (name, _) in REPORTS.items():
        path = options.get(name)
        problem = report_problem(path) if path else None
        if problem is not None:
            raise UsageError(f"{option} {printable(path or '')}: {problem}; nothing was run")


def report_problem(path: str) -> str | None:
    """Why a report could not be written at `path`, or None."""
    if path == "-":
        return None
    target = os.path.realpath(path)
    if os.path.isdir(target):
        return "is a folder, not a file"
    if os.path.lexists(target):
        return None if os.access(target, os.W_OK) else "the file is not writable"
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        missing = not os.path.lexists(folder)
        return f"folder {printable(folder)} {'does not exist' if missing else 'is not a folder'}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create a file in folder {printable(folder)}"
    return None


def quiet(options: dict[str, Any]) -> None:
    """`-q` is `--progress none`."""
    if options.pop("quiet"):
        options["progress"] = "none"


# The options `run` and `resume` share, defined once (click makes a new Option each use).
run_options = _options(
    click.option(
        "-j", "--workers", type=int, help="Parallel workers (default: the number of CPUs)."
    ),
    click.option(
        "--executor",
        type=click.Choice(defaults.EXECUTORS),
        default=defaults.EXECUTOR,
        show_default=True,
        help="Where steps run.",
    ),
    click.option(
        "--scheduler", "dask_scheduler", metavar="ADDRESS", help="Dask scheduler address."
    ),
    click.option(
        "--progress",
        type=click.Choice(defaults.PROGRESS_CHOICES),
        default=defaults.PROGRESS,
        show_default=True,
        help="Live view on a terminal that can redraw, plain lines otherwise.",
    ),
    click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="Show only failures and the last line, on stderr (--progress none).",
    ),
    report_options,
    click.option(
        "--otlp",
        is_flag=True,
        help="Send spans of the run, its steps and attempts to an OTLP/HTTP collector "
        "(OTEL_EXPORTER_OTLP_ENDPOINT; needs the otlp extra).",
    ),
    click.option(
        "--grace",
        type=GRACE,
        default=defaults.GRACE,
        show_default=True,
        help=f"Seconds between SIGTERM and SIGKILL when stopping a step (0 to {GRACE_MAX:g}).",
    ),
)


def state_dir_option(func: F) -> F:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        envvar=[defaults.STATE_DIR_ENV, defaults.STATE_DIR_ENV_OLD],
        default=defaults.STATE_DIR,
        show_default=True,
        help=f"Where runs are recorded (also {defaults.STATE_DIR_ENV}).",
    )(func)


@main.command()
@click.argument("file", type=click.Path())
@param_options
@run_options
@click.option(
    "--only",
    multiple=True,
    metavar="SEL",
    shell_complete=completion.file_step_ids,
    help="Run these steps (id or glob) and their needs.",
)
@click.option(
    "-n",
    "--dry-run",
    is_flag=True,
    help="Print the plan and why each step would run; run nothing.",
)
@click.option("--fail-fast", is_flag=True, help="Stop at the first failure.")
@click.option("--secrets-file", type=click.Path(dir_okay=False), help="YAML file of secret values.")
@click.option("--no-cache", is_flag=True, help="Run every step, ignoring cached results.")
@click.option(
    "--force",
    "force_steps",
    multiple=True,
    metavar="GLOB",
    shell_complete=completion.file_step_ids,
    help="Run these steps (id or glob) even if cached; what follows them only if its key changed.",
)
@click.option("--no-compensate", is_flag=True, help="Do not run compensations on failure.")
@state_dir_option
def run(file: str, **options: Any) -> None:
    """Run a pipeline."""
    from .engine import RunRequest, run_pipeline

    check_reports(options)
    quiet(options)
    request = RunRequest(
        file=file,
        planner=planner_options(
            options.pop("params"), options.pop("params_file"), options.pop("max_file_size")
        ),
        **options,
    )
    sys.exit(run_pipeline(request))


@main.command()
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="JSON for tools.")
@click.option("--no-cache", is_flag=True, help="As `run --no-cache` would: every step runs.")
@param_options
@state_dir_option
def status(file: str, as_json: bool, no_cache: bool, state_dir: str, **planner: Any) -> None:
    """Show what a run would do now: each step cached, run or skipped, and why."""
    from .planner import plan_file
    from .status import status as find
    from .status import status_text

    plan = plan_file(file, planner_options(**planner))
    data = find(plan, state_dir, use_cache=not no_cache)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(status_text(data), nl=False)


@main.command()
@click.argument("run_id", shell_complete=completion.run_ids)
@click.option(
    "--only",
    multiple=True,
    metavar="SEL",
    shell_complete=completion.run_step_ids,
    help="Re-run only these steps (and needs).",
)
@click.option("--force", is_flag=True, help="Resume even if steps that succeeded changed.")
@click.option(
    "--rerun",
    multiple=True,
    metavar="GLOB",
    shell_complete=completion.run_step_ids,
    help="Run these steps (id or glob) and everything downstream again, even if they succeeded.",
)
@click.option(
    "--failed",
    is_flag=True,
    help="Re-drive only the failed steps (and what depends on them); keep the rest.",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Change a parameter for the steps that run again.",
)
@click.option(
    "--params-file",
    type=click.Path(dir_okay=False),
    help="Read parameters from this file again (default: the values the run recorded).",
)
@run_options
@state_dir_option
def resume(
    run_id: str,
    only: tuple[str, ...],
    force: bool,
    rerun: tuple[str, ...],
    state_dir: str,
    **options: Any,
) -> None:
    """Run again what did not succeed in a run, keeping what did."""
    from pathlib import Path

    failed: bool = options.pop("failed")
    params: tuple[str, ...] = options.pop("params")
    params_file: str | None = options.pop("params_file")
    check_reports(options)
    quiet(options)
    if failed and (only or rerun):
        raise UsageError("--failed chooses the steps itself: leave out --only and --rerun")
    from .engine import RunRequest, run_pipeline
    from .store import open_store

    store = open_store(Path(state_dir), create=False)
    try:
        full_id = store.resolve(run_id)
        row = store.run(full_id)
    finally:
        store.close()
    recorded = json.loads(row["request_json"])
    request = RunRequest(
        file=recorded["file"],
        planner=resume_planner(recorded, params, params_file),
        only=only or tuple(recorded.get("only") or ()),
        secrets_file=recorded.get("secrets_file"),
        state_dir=state_dir,
        rerun=rerun,
        failed=failed,
        **options,
    )
    sys.exit(run_pipeline(request, resume=full_id, force=force))


def resume_planner(recorded: dict[str, Any], params: Sequence[str], params_file: str | None) -> Any:
    """The parameters of a resumed run: those it recorded (the params file's values as read
    then, and its --param values), with a params file given again read instead of the recorded
    values, and --param given again on top."""
    overrides = planner_options(params, params_file, recorded["max_file_size"])
    from_file = recorded.get("params_file_values")
    if params_file is None and from_file is None:
        # A run recorded before its params file's values were: read the file, as it did then.
        overrides.params_file = recorded["params_file"]
    base = (from_file or {}) if params_file is None else {}
    overrides.params = {**base, **recorded["params"], **overrides.params}
    overrides.param_texts = {**(recorded.get("param_texts") or {}), **overrides.param_texts}
    return overrides


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON for tools.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=defaults.RUNS_LIMIT,
    show_default=True,
    help="Show at most this many runs.",
)
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    help="Only runs with this status (stopped: its runner died while it ran).",
)
@click.option("--pipeline", metavar="NAME", help="Only runs of this pipeline (a name or a glob).")
@click.option(
    "--since",
    metavar="WHEN",
    help="Only runs started since: a duration before now (2h, 7d) or an ISO date (2026-12-01).",
)
@state_dir_option
def runs(
    as_json: bool,
    limit: int,
    status: str | None,
    pipeline: str | None,
    since: str | None,
    state_dir: str,
) -> None:
    """List recorded runs, newest first."""
    from pathlib import Path

    from .history import live_status
    from .runfilter import RunFilter, parse_since
    from .store import db_path, open_store

    where = RunFilter(status, pipeline, parse_since(since) if since is not None else None)
    rows: list[dict[str, Any]] = []
    if db_path(Path(state_dir)).exists():  # no store yet: no runs, and nothing is created
        store = open_store(Path(state_dir), create=False)
        try:
            rows = store.runs(None if where.needs_live_check else limit, where)
        finally:
            store.close()
    for row in rows:
        row["status"] = live_status(row)
    if where.needs_live_check:
        rows = [row for row in rows if row["status"] == status][:limit]
    if as_json:
        for row in rows:
            row["request"] = json.loads(row.pop("request_json") or "{}")
            row["outputs"] = json.loads(row.pop("outputs_json") or "null")
        echo_json(rows)
        return
    if not rows:
        filtered = status or pipeline or since
        click.echo("no runs match" if filtered else "no runs yet")
        return
    for row in rows:
        click.echo(run_line(row))


def run_line(row: dict[str, Any]) -> str:
    """A recorded run on one line, as `runner runs` lists it."""
    took = f"{row['finished'] - row['started']:.1f}s" if row["finished"] else "-"
    failed = f", {row['failed']} failed" if row.get("failed") else ""
    return (
        f"{row['id']}  {row['status']:<10} {printable(row['pipeline']):<20} {row['steps']} steps"
        f"{failed}  {took}"
    )


@main.command()
@click.argument("run_ids", nargs=-1, required=True, shell_complete=completion.run_ids)
@state_dir_option
def rm(run_ids: tuple[str, ...], state_dir: str) -> None:
    """Delete runs: their records, logs, and the cache entries no other run uses."""
    from pathlib import Path

    from .retention import delete, named
    from .store import open_store

    store = open_store(Path(state_dir), create=False)
    try:
        deleted = delete(store, named(store, run_ids))
    finally:
        store.close()
    report_deleted(deleted.runs, deleted.cache_entries, "deleted")


@main.command()
@click.option(
    "--older-than",
    "older",
    metavar="AGE",
    required=True,
    help="Delete runs that ended longer ago than this (30d, 12h, 1w).",
)
@click.option(
    "--status",
    type=click.Choice(ENDED_STATUSES),
    help="Only runs with this status.",
)
@click.option("-n", "--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@state_dir_option
def prune(older: str, status: str | None, dry_run: bool, state_dir: str) -> None:
    """Delete runs that ended long ago, with their logs and unused cache entries."""
    from pathlib import Path

    from .retention import delete, older_than
    from .runfilter import parse_age
    from .store import db_path, open_store

    age = parse_age(older, "--older-than")
    if not db_path(Path(state_dir)).exists():
        click.echo("no runs recorded; nothing to prune")
        return
    store = open_store(Path(state_dir), create=False)
    try:
        rows = older_than(store, age, status)
        if dry_run:
            report_deleted(rows, None, "would delete")
            return
        deleted = delete(store, rows)
    finally:
        store.close()
    report_deleted(deleted.runs, deleted.cache_entries, "deleted")


def report_deleted(rows: Sequence[dict[str, Any]], cache_entries: int | None, verb: str) -> None:
    """One line per run deleted (or to delete), then the count."""
    for row in rows:
        click.echo(f"{verb} {row['id']}  {row['status']:<10} {printable(row['pipeline'])}")
    count = f"{len(rows)} run{'s' if len(rows) != 1 else ''}"
    cache = f" and {cache_entries} cache entr{'ies' if cache_entries != 1 else 'y'}"
    click.echo(f"{verb} {count}{cache if cache_entries is not None else ''}")


@main.command()
@click.argument("run_id", shell_complete=completion.run_ids)
@click.option("--json", "as_json", is_flag=True, help="JSON for tools.")
@state_dir_option
def show(run_id: str, as_json: bool, state_dir: str) -> None:
    """Show a run's steps: state, attempts, duration, error."""
    from pathlib import Path

    from .showview import show as show_run

    show_run(Path(state_dir), run_id, as_json)


@main.command()
@click.argument("run_id", shell_complete=completion.run_ids)
@click.argument("step", shell_complete=completion.run_step_ids)
@click.option("--value", metavar="V", help="The answer, the gate's output (one of its choices).")
@state_dir_option
def approve(run_id: str, step: str, value: str | None, state_dir: str) -> None:
    """Approve an approval gate that is waiting; its output is the value."""
    from pathlib import Path

    from .gatebook import record_answer

    click.echo(record_answer(Path(state_dir), run_id, step, True, value))


@main.command()
@click.argument("run_id", shell_complete=completion.run_ids)
@click.argument("step", shell_complete=completion.run_step_ids)
@click.option("--message", metavar="M", help="Why: shown as the step's error.")
@state_dir_option
def reject(run_id: str, step: str, message: str | None, state_dir: str) -> None:
    """Reject an approval gate that is waiting; the step fails with kind `rejected`."""
    from pathlib import Path

    from .gatebook import record_answer

    click.echo(record_answer(Path(state_dir), run_id, step, False, message))


@main.command()
@click.argument("run_id", shell_complete=completion.run_ids)
@click.option("--json", "as_json", is_flag=True, help="JSON for tools.")
@state_dir_option
def failed(run_id: str, as_json: bool, state_dir: str) -> None:
    """List a run's failed steps: inputs, error kind, message, attempts."""
    from pathlib import Path

    from . import deadletters
    from .store import open_store

    store = open_store(Path(state_dir), create=False)
    try:
        full_id = store.resolve(run_id)
        found = deadletters.letters(store.steps(full_id))
    finally:
        store.close()
    if as_json:
        click.echo(ci_report(json.dumps(found, indent=2, default=str, ensure_ascii=False)))
        return
    click.echo(deadletters.text(full_id, found), nl=False)


@main.command()
@click.argument("run_id", shell_complete=completion.run_ids)
@click.argument("step", required=False, shell_complete=completion.run_step_ids)
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the run goes on.")
@click.option("--json", "as_json", is_flag=True, help="JSON: step -> log text.")
@state_dir_option
def logs(run_id: str, step: str | None, follow: bool, as_json: bool, state_dir: str) -> None:
    """Print the logs of a run's steps (all, or one)."""
    from pathlib import Path

    from .history import follow_logs, read_logs

    if follow:
        follow_logs(Path(state_dir), run_id, step, click.echo)
        return
    found = read_logs(Path(state_dir), run_id, step)
    if as_json:
        click.echo(ci_report(json.dumps(found, indent=2)))
        return
    for name, text in found.items():
        if step is None:
            click.echo(f"==> {printable(name)} <==")
        # As written, but with no escape sequence for the terminal and no CI command.
        click.echo(printable(text, one_line=False), nl=False)


@main.command(short_help="Start runs of pipelines on their `schedule:`, in the foreground.")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--max-runs",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop once N runs of each file have started and ended (default: run until stopped).",
)
@click.option(
    "--print-crontab",
    is_flag=True,
    help="Print crontab lines (`runner run FILE ...`) for the schedules instead; run nothing.",
)
@click.option(
    "--progress",
    type=click.Choice(defaults.PROGRESS_CHOICES),
    default=defaults.SCHEDULE_PROGRESS,
    show_default=True,
    help="The --progress of each run (none: its failures and last line).",
)
@param_options
@state_dir_option
def schedule(
    files: tuple[str, ...],
    max_runs: int | None,
    print_crontab: bool,
    progress: str,
    state_dir: str,
    **planner: Any,
) -> None:
    """Start runs of pipelines on their `schedule:` (cron or interval) until stopped.

    Each run is a `runner run FILE` of its own, recorded in the state folder; one line is
    logged per start and finish.  SIGINT/SIGTERM stop the schedule cleanly: a run in progress is
    cancelled as a first Ctrl-C would.
    """
    from .crontab import crontab_text
    from .periodic import schedule_plans, start_schedule

    options = planner_options(**planner)
    plans = schedule_plans(files, options)
    if print_crontab:
        text, unsaid = crontab_text(plans, state_dir, planner["params"], options.params_file)
        click.echo(text, nl=False)
        for line in unsaid:
            _echo_err(f"runner: warning: {line}")
        return
    sys.exit(start_schedule(plans, state_dir, options, max_runs, progress, click.echo))


@main.command()
@click.argument("run_id", shell_complete=completion.run_ids)
@click.option("--no-wait", is_flag=True, help="Return once the run is told, not once it ended.")
@state_dir_option
def cancel(run_id: str, no_wait: bool, state_dir: str) -> None:
    """Cancel a running run from another terminal, as a first Ctrl-C in its own would."""
    from pathlib import Path

    from .cancel import cancel as cancel_run
    from .cancel import wait_ended

    row = cancel_run(Path(state_dir), run_id)
    click.echo(f"cancelling run {row['id']} (pid {row['pid']})")
    if not no_wait:
        click.echo(f"run {row['id']}: {wait_ended(Path(state_dir), row)}")
