"""One root exception for everything the runner reports to a user.

Every error the library raises on purpose derives from `RunnerError` and carries the exit code
the command line turns it into (`exit_code` is a class attribute, as click does it).  Only
`cli.py` prints errors and exits; the library never does.

Errors about a pipeline file carry `Diagnostic`s: a `Location` (file, line, column), the place
in the document (`steps[2].needs[0]`) and a message, printed as
`FILE:LINE:COLUMN: error: PATH: MESSAGE`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_INTERNAL = 70  # a bug in the runner (an exception no error class covers)
# a run not started: its concurrency group is busy and its `if_running` is `skip`
EXIT_SKIPPED = 76
# A failed saga whose undo did not finish: a compensation failed (or was stopped), so effects
# of succeeded steps may remain.  A run whose compensations all succeeded exits EXIT_FAILED.
EXIT_COMPENSATION_FAILED = 77
EXIT_WAITING = 75  # only approval gates waiting for an answer (and what needs them) are left
EXIT_SIGINT = 130
EXIT_BROKEN_PIPE = 141  # the reader of our output went away (128 + SIGPIPE)
EXIT_SIGTERM = 143


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a file; line and column are 1-based."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a pipeline file."""

    location: Location
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.location}: error: {where}{self.message}"

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "path": self.path,
            "message": self.message,
        }


class RunnerError(Exception):
    """The root of every error the runner reports to its user."""

    exit_code = EXIT_USAGE


class UsageError(RunnerError):
    """The command line was used wrongly."""

    exit_code = EXIT_USAGE


class PlatformError(RunnerError):
    """This operating system lacks what running steps needs; nothing was run."""

    exit_code = EXIT_USAGE


class PipelineError(RunnerError):
    """One or more problems in pipeline files; nothing was run."""

    exit_code = EXIT_USAGE

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @classmethod
    def single(cls, location: Location, path: str, message: str) -> PipelineError:
        return cls([Diagnostic(location, path, message)])


class TemplateError(RunnerError):
    """A template failed to parse or render (the caller adds the location)."""

    exit_code = EXIT_USAGE


class StoreError(RunnerError):
    """The run store could not be used: corrupt, unwritable, or the disk is full."""

    exit_code = EXIT_STORE


class RunNotFound(RunnerError):
    exit_code = EXIT_USAGE


class RunBusy(RunnerError):
    """Another runner is running or resuming this run (it holds the run's lock)."""

    exit_code = EXIT_USAGE


class RunSkipped(RunnerError):
    """A run was not started: another run of its concurrency group is going (`if_running:
    skip`)."""

    exit_code = EXIT_SKIPPED


class NotRunning(RunnerError):
    """`runner cancel` of a run that is not running."""

    exit_code = EXIT_USAGE


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix naming the closest choice, or nothing."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
