"""The layout of the state folder (`--state-dir`, `.runner` by default), in one place.

    runs.db                  the run store (SQLite: runs, steps, events, cache entries)
    runs/<run id>/logs/      one log file per step attempt
    runs/<run id>/scratch/   steps' scratch folders
    runs/<run id>/run.lock   held (an OS lock) by the one runner running or resuming the run
    groups/<group>.lock      held by the one run of a `concurrency` group (concurrency.py)

Step cache entries live in the store; there is no cache folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STORE_FILE = "runs.db"


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The folder of one run and what it holds."""

    folder: Path

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def scratch(self) -> Path:
        return self.folder / "scratch"

    @property
    def lock(self) -> Path:
        return self.folder / "run.lock"


@dataclass(frozen=True, slots=True)
class StatePaths:
    """Where each part of the state folder `root` lives."""

    root: Path

    @property
    def store(self) -> Path:
        return self.root / STORE_FILE

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, run_id: str) -> RunPaths:
        return RunPaths(self.runs / run_id)

    def group_lock(self, file_name: str) -> Path:
        """The lock of a concurrency group (`file_name`: the group's name made a file name)."""
        return self.root / "groups" / f"{file_name}.lock"
