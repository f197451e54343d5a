"""The layout of the state folder (`--state-dir`, `.runner` by default), in one place.

runs.db                  the run store (SQLite: runs, steps, events, cache entries)
runs/<run id>/logs/      one log file per step attempt
runs/<run id>/scratch/   steps' scratch folders
runs/<run id>/run.lock   held (an OS lock) by the one runner running or resuming the run
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STORE_FILE = "runs.db"


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

    def run(self, run_id: str) -> Path:
        return self.runs / run_id

    def logs(self, run_id: str) -> Path:
        return self.run(run_id) / "logs"

    def scratch(self, run_id: str) -> Path:
        return self.run(run_id) / "scratch"

    def lock(self, run_id: str) -> Path:
        return self.run(run_id) / "run.lock"
