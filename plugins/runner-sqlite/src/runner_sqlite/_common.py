"""What both steps share: their error root and the check of `with` against a step's schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator


class StepError(Exception):
    """A step of runner-sqlite failed; the message names the plugin, the file and the cause."""


def check_with(plugin: str, schema: Mapping[str, Any], with_: Mapping[str, Any]) -> None:
    """Raise StepError listing every way `with_` breaks `schema`.

    The runner checks `with` against the schema before a run; checking again here keeps a plugin
    called directly (or with a value only known at run time) from failing obscurely later.
    """
    errors = Draft202012Validator(schema).iter_errors(dict(with_))
    problems = sorted(_describe(error) for error in errors)
    if problems:
        raise StepError(f"{plugin}: invalid `with`: " + "; ".join(problems))


def _describe(error: Any) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"with{where}: {error.message}"
