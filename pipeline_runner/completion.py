"""Shell completion of the values users type most: run ids (from the run store) for `resume`,
`show`, `logs`; step ids for `logs RUN STEP`, `run --only/--force` (from the file on the
command line) and `resume --only/--rerun` (from the run).  Each reads what it needs lazily and
completes nothing, silently, when it cannot (no store, an invalid file): a completion never
prints an error into the user's command line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # imported when completing: `runner run` never needs it
    from click.shell_completion import CompletionItem

from . import defaults, envvars


def _state_dir(ctx: click.Context) -> str:
    root = ctx.find_root()
    found = ctx.params.get("state_dir") or root.params.get("state_dir")
    return str(found or envvars.get(defaults.STATE_DIR_ENV) or defaults.STATE_DIR)


def _store(ctx: click.Context) -> Any:
    from pathlib import Path

    from .store import open_store

    return open_store(Path(_state_dir(ctx)), create=False)


def _argument(ctx: click.Context, name: str) -> str | None:
    """The command's first argument; with an option's value still to type, click leaves it
    among the unparsed args."""
    found = ctx.params.get(name)
    return found or next((a for a in ctx.args if not a.startswith("-")), None)


def _matching(values: Iterable[tuple[str, str]], incomplete: str) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(v, help=h or None) for v, h in values if v.startswith(incomplete)]


def run_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Recorded runs, newest first, each with its status and pipeline as help."""
    try:
        store = _store(ctx)
        try:
            rows = store.runs(200)
        finally:
            store.close()
    except Exception:
        return []
    return _matching(((r["id"], f"{r['status']} {r['pipeline']}") for r in rows), incomplete)


def run_step_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The steps of the run named on the command line."""
    run_id = _argument(ctx, "run_id")
    if not run_id:
        return []
    try:
        store = _store(ctx)
        try:
            steps = store.steps(store.resolve(run_id))
        finally:
            store.close()
    except Exception:
        return []
    return _matching(((s["step_id"], s["state"]) for s in steps), incomplete)


def file_step_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The steps (and groups) the file on the command line plans with its own parameter
    defaults (a file that needs a --param completes nothing)."""
    file = _argument(ctx, "file")
    if not file:
        return []
    try:
        from .planner import Options, plan_file

        plan = plan_file(file, Options())
    except Exception:
        return []
    return _matching(((n.id, n.uses or n.kind.value) for n in plan.nodes.values()), incomplete)
