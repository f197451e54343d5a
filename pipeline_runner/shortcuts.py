"""The switch for the speed shortcuts.

Every shortcut (the compiled schema check in fastschema.py, chains of follow-up attempts queued
behind a running step, the compact wire format between workers and the runner, the runner
reading short steps' completions together, a worker sending its completions in batches kept in a
journal until sent, no state restore after a `noop` attempt and, after one, neither the working
folder asked of the kernel nor a named-outputs file looked for, the attempt's folder and
$RUNNER_OUTPUT kept between attempts and the named-outputs folder made once per worker, a pool
worker's sys.stdout kept from one attempt to the next, its signal handlers compared only after
an attempt that set one, its outputs file not looked at before an attempt when the one before
left it empty and no process behind; on resume, the recorded plan not read when its hash is the
plan's now, else compared as text before it is parsed, and the plan and the step rows already
recorded as they are not written again; the records of a run's end made when read; no count of
held slots in a run nothing can limit) sits
behind the interface of a plain implementation that does the same work the straightforward way.
`PIPELINE_RUNNER_NO_SHORTCUTS=1` in the environment turns them all off, so the plain path can be
run and tested (`make test` runs a part of the suite that way) and a suspected shortcut bug can be
ruled in or out by a user without a new release.
"""

from __future__ import annotations

from . import envvars

ENV = envvars.NO_SHORTCUTS  # or the deprecated RUNNER_NO_SHORTCUTS


def enabled() -> bool:
    """True unless PIPELINE_RUNNER_NO_SHORTCUTS is set to something other than empty or 0."""
    return (envvars.get(ENV) or "") in ("", "0")
