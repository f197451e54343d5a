"""The environment variables runner reads for its own settings, under the prefix
`PIPELINE_RUNNER_`: GitHub Actions owns the `RUNNER_*` namespace (it sets RUNNER_OS,
RUNNER_TEMP, RUNNER_DEBUG, ... in every job), so a name of ours there could be set, or read, by
the CI system.  The old `RUNNER_*` names still work for this release, the new name winning when
both are set; `runner` says once, on stderr, which old names it read.

This module imports nothing of the runner, so any module may read it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

PREFIX = "PIPELINE_RUNNER_"
OLD_PREFIX = "RUNNER_"
STATE_DIR = PREFIX + "STATE_DIR"
NO_SHORTCUTS = PREFIX + "NO_SHORTCUTS"
PARAM = PREFIX + "PARAM_"
OLD_PARAM = OLD_PREFIX + "PARAM_"
# The settings the old prefix still names (a RUNNER_* variable not here is not ours).
SETTINGS = ("STATE_DIR", "NO_SHORTCUTS")


def old_name(name: str) -> str:
    """`PIPELINE_RUNNER_STATE_DIR` -> `RUNNER_STATE_DIR`."""
    return OLD_PREFIX + name.removeprefix(PREFIX)


def get(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A setting by its new name, else by its old one."""
    env = os.environ if environ is None else environ
    found = env.get(name)
    return found if found is not None else env.get(old_name(name))


def params(environ: Mapping[str, str]) -> dict[str, str]:
    """`PIPELINE_RUNNER_PARAM_<NAME>` (and the old `RUNNER_PARAM_<NAME>`): NAME -> text."""
    out: dict[str, str] = {}
    for prefix in (OLD_PARAM, PARAM):  # the new prefix last: it wins
        for var, text in environ.items():
            if var.startswith(prefix) and len(var) > len(prefix):
                out[var[len(prefix) :]] = text
    return out


def old_names_used(environ: Mapping[str, str]) -> list[str]:
    """The deprecated names set in `environ`."""
    settings = {OLD_PREFIX + s for s in SETTINGS}
    return sorted(
        v for v in environ if v in settings or (v.startswith(OLD_PARAM) and v != OLD_PARAM)
    )


def note_old_names(environ: Mapping[str, str] | None = None) -> None:
    """Say once (the command does, at its start) which deprecated names were read."""
    used = old_names_used(os.environ if environ is None else environ)
    if used:
        new = ", ".join(PREFIX + v.removeprefix(OLD_PREFIX) for v in used)
        sys.stderr.write(
            f"runner: note: {', '.join(used)}: the RUNNER_* names are deprecated and go in the "
            f"next release (GitHub Actions owns that prefix); use {new}\n"
        )
