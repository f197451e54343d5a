"""Reading recorded runs: logs of steps, and following a run that is still going."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import RunNotFound
from .procs import still_running
from .report import safe
from .store import open_store


def _steps(state_dir: Path, run_id: str) -> tuple[str, list[dict[str, object]], str]:
    """The run's full id, its steps, and its status (`running` only while its runner lives:
    a runner killed with SIGKILL leaves its run `running` in the store)."""
    store = open_store(state_dir, create=False)
    try:
        full_id = store.resolve(run_id)
        steps = [s for s in store.steps(full_id) if s["kind"] != "group"]
        run = store.run(full_id)
    finally:
        store.close()
    return full_id, steps, live_status(run)


def live_status(run: Mapping[str, Any]) -> str:
    """A recorded run's status, `stopped` for a run recorded as running whose runner is gone
    (killed with SIGKILL, it could not record its end).  The runner is its pid AND that
    process's start time: after a reboot or a while, the pid may belong to another process."""
    status = str(run["status"])
    if status == "running" and not still_running(run.get("pid"), run.get("pid_start")):
        return "stopped"
    return status


def read_logs(state_dir: Path, run_id: str, step: str | None) -> dict[str, str]:
    full_id, steps, _ = _steps(state_dir, run_id)
    names = [str(s["step_id"]) for s in steps]
    if step is not None and step not in names:
        from .errors import did_you_mean

        raise RunNotFound(f"run {full_id} has no step {step!r}{did_you_mean(step, names)}")
    out: dict[str, str] = {}
    for s in steps:
        if step is not None and s["step_id"] != step:
            continue
        path = str(s["log_path"] or "")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                out[str(s["step_id"])] = "".join(safe(line.rstrip("\n")) + "\n" for line in f)
        except OSError:
            if step is not None:
                out[str(s["step_id"])] = "(no output)\n"
    return out


def follow_logs(
    state_dir: Path, run_id: str, step: str | None, emit: Callable[[str], None]
) -> None:
    """Print new log lines as they are written, until the run is no longer running."""
    offsets: dict[str, int] = {}
    while True:
        _, steps, status = _steps(state_dir, run_id)
        for s in steps:
            if step is not None and s["step_id"] != step:
                continue
            path = str(s["log_path"] or "")
            if not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                f.seek(offsets.get(path, 0))
                data = f.read()
                offsets[path] = f.tell()
            for line in data.decode("utf-8", errors="replace").splitlines():
                emit(safe(line) if step is not None else f"{s['step_id']}: {safe(line)}")
        if status != "running":
            return
        time.sleep(0.2)
