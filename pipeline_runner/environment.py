"""What a step's environment may hold: the names and values the operating system accepts.

A name is not empty and has no `=` or NUL; a value has no NUL.  Anything else cannot be put in
an environment (`os.environ`, a child process's `env`), and used to kill the worker.  Names and
values known before the run are checked by the planner (located errors); values rendered at run
time by `checked_env`, which fails the step before it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import TemplateError

E = TypeVar("E", bound=Mapping[str, Any])


def name_problem(name: Any) -> str | None:
    """Why `name` cannot be an environment variable's name, or None."""
    if isinstance(name, str) and name and "=" not in name and "\0" not in name:
        return None
    return (
        f"invalid environment variable name {name!r}: a name is not empty and has no '=' "
        "or NUL character"
    )


def value_problem(name: str, value: Any) -> str | None:
    """Why `value` (as the step will get it) cannot be the value of `name`, or None."""
    if isinstance(value, str) and "\0" in value:
        return (
            f"the value of environment variable {name} contains a NUL character, which no "
            "environment can hold"
        )
    return None


def checked_env(env: E) -> E:
    """`env` as it is, or a TemplateError naming the first name or value the system refuses."""
    for name, value in env.items():
        problem = name_problem(name) or value_problem(name, value)
        if problem:
            raise TemplateError(problem)
    return env
