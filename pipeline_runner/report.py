"""Event sinks that show a run: a live terminal view, plain lines for CI logs, GitHub Actions
annotations, and the summary table printed at the end.

Nothing a step printed reaches the terminal raw: control characters are escaped (a step cannot
move the cursor or retitle the terminal), and log lines are shown indented behind `| `, so a
line such as `::add-mask::` or `::error::` from a step is never read by CI as a command (see
escape.py, the one place that makes untrusted text printable).  Every reporter masks secrets in
what it prints, whatever the text came from (an error message, an id built from a secret).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, TextIO

from .changes import RunInfo, RunResult, StepChanged
from .escape import printable
from .kinds import FailureKind
from .model import NodeKind, State
from .secrets import Masker
from .verdicts import is_verdict

SYMBOLS = {
    State.PENDING: "·",
    State.RUNNING: "▶",
    State.RETRYING: "↻",
    State.SUCCEEDED: "✓",
    State.FAILED: "✗",
    State.FAILED_ALLOWED: "✗",
    State.SKIPPED: "○",
    State.UPSTREAM_FAILED: "⊘",
    State.CANCELLED: "■",
    State.CACHED: "≡",
    State.COMPENSATED: "↶",
    State.WAITING: "⏸",
    State.PARTIAL: "◐",
}
COLORS = {
    State.RUNNING: "cyan",
    State.RETRYING: "yellow",
    State.SUCCEEDED: "green",
    State.FAILED: "red",
    State.FAILED_ALLOWED: "yellow",
    State.SKIPPED: "dim",
    State.UPSTREAM_FAILED: "magenta",
    State.CANCELLED: "magenta",
    State.CACHED: "blue",
    State.COMPENSATED: "yellow",
    State.WAITING: "yellow",
    State.PARTIAL: "yellow",
}
TAIL_LINES = 10
TAIL_BYTES = 64 * 1024


def safe(text: str) -> str:
    """Escape what a terminal or a CI log would interpret (line breaks kept)."""
    return printable(text, one_line=False)


def one_line(text: str) -> str:
    """`safe`, on one line: a message shown within a line of the runner's own (a state change,
    the summary, `runner show`) keeps its line breaks as a visible `\\n`, so that no line of it
    (`::add-mask::`, `::error::`, `::stop-commands::`) starts a line a CI system would read as
    a command, or one that passes for the runner's."""
    return printable(text)


def log_tail(path: str, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of a log, read from its end (a huge log costs nothing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - TAIL_BYTES, 0))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    kept = (line for line in text.splitlines() if not line.startswith("--- attempt "))
    # Shown behind `| ` by every caller: a step's `::error::` line is quoted, never a command.
    out = [printable(line, behind=True)[:400] for line in kept]
    return out[-lines:]


def duration(nr: StepChanged) -> str:
    if nr.started is None or nr.finished is None:
        return ""
    seconds = max(nr.finished - nr.started, 0.0)
    return f"{seconds:.2f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class PlainReporter:
    """One line per state change of a step, with a timestamp; no ANSI codes."""

    def __init__(
        self, out: TextIO | None = None, github: bool = False, masker: Masker | None = None
    ) -> None:
        self.out = out or sys.stdout
        self.github = github
        self.pending: list[str] = []
        self.mask = (masker or Masker()).text

    def run_started(self, run: RunInfo) -> None:
        # As `runner validate` counts: a mapped step is one step until it is expanded.
        steps = sum(1 for nr in run.nodes.values() if nr.kind is not NodeKind.GROUP)
        self.line(
            f"run {run.run_id}: {run.plan.name}, {_count(steps, 'step')}, {run.executor} "
            f"executor, {_count(run.workers, 'worker')}"
        )
        self.turn()  # at once: the run is recorded, and its id is what `resume` needs

    def line(self, text: str) -> None:
        # Buffered until the end of the scheduler's turn: the store (an earlier sink) has
        # committed the turn by the time these lines are printed.
        stamp = time.strftime("%H:%M:%S")
        self.pending.append(f"{stamp} {self.mask(text)}\n")

    def changed(self, nr: StepChanged) -> None:
        if nr.state is State.PENDING or nr.state is nr.old:
            return
        if nr.kind is NodeKind.GROUP and not is_verdict(nr.state.value, nr.error):
            return  # a fan-out is told only when its success policy decided
        # Masked before escaped: escaping could change a secret's spelling.
        text = f"{SYMBOLS[nr.state]} {nr.state.value:<15} {safe(self.mask(nr.id))}"
        if nr.state is State.RUNNING and nr.attempt > 1:
            text += f" (attempt {nr.attempt})"
        if nr.state.finished and duration(nr):
            text += f" ({duration(nr)})"
        if nr.state in (State.FAILED, State.FAILED_ALLOWED, State.RETRYING) and nr.error:
            text += f": {one_line(self.mask(nr.error))}"
            if nr.error_kind not in (
                None,
                FailureKind.ERROR,
            ):  # what `retries.on` matches: crash, timeout
                text += f" [{nr.error_kind}]"
        elif nr.state is State.WAITING and nr.error:  # an approval gate: its prompt
            text += f": {one_line(self.mask(nr.error))}"
        elif nr.state in (State.SKIPPED, State.UPSTREAM_FAILED, State.PARTIAL) and nr.error:
            # why: which need, which exit code (after its id and a space, as a duration is)
            why = one_line(self.mask(nr.error))
            text += f": {why}" if duration(nr) else f" ({why})"
        self.line(text)

    def turn(self) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending.clear()
        try:
            self.out.write(text)
            self.out.flush()
        except (BrokenPipeError, ValueError):
            # Whoever read our output went away (`runner run | head`): the run goes on and is
            # recorded; only the printing stops.
            self.out = open(os.devnull, "w")  # noqa: SIM115

    def run_finished(self, result: RunResult) -> None:
        self.turn()


# The annotations of a run's failures live with validate's (annotations.py); kept importable here.
from .annotations import GitHubAnnotations as GitHubAnnotations  # noqa: E402


class LiveReporter:
    """A rich live view: the run id and pipeline in a header, an overall bar (steps done of all,
    elapsed, ETA) and a bar per group (rich.progress columns), counts per state, the running steps
    with their elapsed time; failures printed above it as they happen.  The view stays on screen
    at the end (the summary follows it)."""

    def __init__(
        self, masker: Masker | None = None, color: bool = True, out: TextIO | None = None
    ) -> None:
        from rich.console import Console

        # No colour system at all without colour (NO_COLOR): no bold or dim either.
        self.console = Console(
            file=out, color_system="auto" if color else None, no_color=not color, highlight=False
        )
        self.mask = (masker or Masker()).text
        self.counts: Counter[State] = Counter()
        self.running: dict[str, float] = {}
        self.groups: dict[str, Any] = {}  # top group -> its progress task
        self.progress: Any = None
        self.overall: Any = None
        self.title = ""
        self.total = 0
        self.last = 0.0

    def run_started(self, run: RunInfo) -> None:
        self.title = f"run {run.run_id}: {safe(self.mask(run.plan.name))}"
        self.progress = _progress(self)
        self.overall = self.progress.add_task("all steps", total=0)
        self.group_of = {nid: nr.group for nid, nr in run.nodes.items()}
        for nr in run.nodes.values():
            if nr.kind is NodeKind.STEP:
                self.counts[nr.state] += 1
                self._add_step(nr.id)
                if nr.state.finished:  # kept from the run resumed
                    self._advance(nr.id)
        self.progress.start()

    def _add_step(self, nid: str) -> None:
        self.total += 1
        self.progress.update(self.overall, total=self.total)
        top = _top_group(nid, self.group_of)
        if top is not None:
            if top not in self.groups:
                self.groups[top] = self.progress.add_task(f"  {safe(self.mask(top))}", total=0)
            task = self.groups[top]
            self.progress.update(task, total=self.progress.tasks[task].total + 1)

    def _advance(self, nid: str) -> None:
        self.progress.advance(self.overall)
        top = _top_group(nid, self.group_of)
        if top is not None:
            self.progress.advance(self.groups[top])

    def changed(self, nr: StepChanged) -> None:
        old = nr.old
        if nr.kind is not NodeKind.STEP or (nr.state is old and old is not State.PENDING):
            return
        if nr.id not in self.group_of:
            self.group_of[nr.id] = nr.group
        if old is State.PENDING and nr.id not in self.running and nr.state is State.PENDING:
            self._add_step(nr.id)  # a run-time for_each instance
        self.counts[old] -= 1
        self.counts[nr.state] += 1
        if nr.state is State.RUNNING:
            self.running[nr.id] = time.monotonic()
        else:
            self.running.pop(nr.id, None)
        if nr.state.finished and not old.finished:
            self._advance(nr.id)
        if nr.state is State.FAILED:
            from rich.text import Text

            error = one_line(self.mask(nr.error))
            # A Text, not markup: a message holding `[/]` or `[link=...]` is shown as it is.
            line = Text.assemble((f"✗ {safe(self.mask(nr.id))}", "red"), f": {error}")
            self.console.print(line, highlight=False, soft_wrap=True)  # no line breaks added

    def turn(self) -> None:
        now = time.monotonic()
        if self.progress is not None and now - self.last > 0.1:
            self.last = now
            self.progress.refresh()

    def renderables(self, progress: Any) -> list[Any]:
        """What the view shows (read by rich's refresh thread too: it copies what it reads)."""
        from rich.table import Table
        from rich.text import Text

        header = Text(self.title + "  ", style="bold")
        for state in HEADER_STATES:
            n = self.counts[state]
            if n > 0:
                header.append(f"{SYMBOLS[state]} {n} {state.value}  ", style=COLORS.get(state, ""))
        table = Table.grid(padding=(0, 1))
        now = time.monotonic()
        running = list(self.running.items())
        for nid, since in running[:10]:
            label = Text(safe(self.mask(nid)))
            table.add_row(Text("▶", style="cyan"), label, Text(f"{now - since:5.1f}s"))
        if len(running) > 10:
            table.add_row("", Text(f"... and {len(running) - 10} more running"), "")
        return [header, progress.make_tasks_table(progress.tasks[:9]), table]

    def run_finished(self, result: RunResult) -> None:
        if self.progress is not None:
            self.running.clear()
            self.progress.refresh()
            self.progress.stop()  # not transient: the last view stays above the summary


HEADER_STATES = (
    State.RUNNING,
    State.RETRYING,
    State.WAITING,
    State.SUCCEEDED,
    State.CACHED,
    State.FAILED,
    State.UPSTREAM_FAILED,
    State.SKIPPED,
    State.CANCELLED,
    State.COMPENSATED,
)


def _progress(view: LiveReporter) -> Any:
    """A rich Progress showing `view`: its columns draw the bars, `view` the rest."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class View(Progress):
        def get_renderables(self) -> Any:
            yield from view.renderables(self)

    return View(
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=view.console,
        refresh_per_second=8,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )


class FailuresOnly(PlainReporter):
    """`--progress none`: no progress, but a failed step is still told (on stderr)."""

    def run_started(self, run: RunInfo) -> None:
        pass

    def changed(self, nr: StepChanged) -> None:
        if nr.kind is NodeKind.STEP and nr.state is State.FAILED and nr.old is not State.FAILED:
            super().changed(nr)


def _top_group(nid: str, group_of: Mapping[str, str | None]) -> str | None:
    """The outermost group `nid` is in (`group_of`: each node's group)."""
    group = group_of.get(nid)
    top = None
    while group is not None:
        top = group
        group = group_of.get(group)
    return top


def can_redraw(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether `stream` is a terminal that can redraw a live view: a TTY, not `TERM=dumb`, and
    not a CI job (`CI` set, as every CI system does; GitHub Actions' log is not a terminal)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return (
        tty
        and environ.get("TERM", "") != "dumb"
        and environ.get("CI", "").lower() in ("", "0", "false")
        and environ.get("GITHUB_ACTIONS") != "true"
    )


def wants_color(stream: TextIO, environ: Mapping[str, str], forced: bool = False) -> bool:
    """Colour on a terminal (or when asked with `--progress rich`), never with `NO_COLOR` set
    to anything (no-color.org) or on `TERM=dumb`."""
    if environ.get("NO_COLOR") or environ.get("TERM", "") == "dumb":
        return False
    try:
        return forced or stream.isatty()
    except (AttributeError, ValueError):
        return forced


def summary(result: RunResult, color: bool) -> str:
    """The table printed at the end: counts, failures with their log tails, outputs."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    buffer = StringIO()
    console = Console(
        file=buffer,
        force_terminal=color,
        no_color=not color,
        width=110,
        highlight=False,
        soft_wrap=True,
    )
    steps = [nr for nr in result.nodes.values() if nr.kind is NodeKind.STEP]
    table = Table(title=None, box=None, pad_edge=False, show_edge=False)
    table.add_column("state")
    table.add_column("steps", justify="right")
    for state in State:
        n = sum(1 for nr in steps if nr.state is state)
        if n:
            style = COLORS.get(state, "") if color else ""
            table.add_row(
                f"[{style}]{SYMBOLS[state]} {state.value}[/]"
                if style
                else f"{SYMBOLS[state]} {state.value}",
                str(n),
            )
    console.print(table)
    failed = [nr for nr in steps if nr.state in (State.FAILED, State.FAILED_ALLOWED)]
    for nr in failed[:20]:
        console.print(
            f"{SYMBOLS[nr.state]} {safe(nr.id)} ({nr.state.value}, attempt "
            f"{nr.attempt}): {one_line(nr.error)}",
            markup=False,
        )
        for line in log_tail(nr.log_path):
            console.print(f"    | {line}", markup=False)
    if len(failed) > 20:
        console.print(f"... and {len(failed) - 20} more failed steps", markup=False)
    console.print(summary_line(result), markup=False)
    return buffer.getvalue()


def summary_line(result: RunResult) -> str:
    """The run's last line: `run ID STATUS in 1.23s (why)`."""
    elapsed = result.finished - result.started
    why = f" ({result.failure})" if result.failure else ""
    return f"run {result.run_id} {result.status} in {elapsed:.2f}s{why}"
