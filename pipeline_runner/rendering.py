"""Plan-time rendering of values: render what can be rendered before the run, keep the rest.

A value (a mapping, a list, or a text with `{{ }}`) is walked; each template is compiled, its
names are checked (`namecheck`), and then it is either rendered now with the file's plan-time
names (params, env, pipeline) and the scope's variables, or kept as a `Deferred` when it reads
a name known only at run time (`steps`, `run`, `secrets`, a run-time `for_each` item). A broken
value gives `INVALID` and a diagnostic, never an exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import TemplateError
from .loader import Path_
from .model import Deferred, Scope, has_deferred
from .templating_text import is_template

if TYPE_CHECKING:  # jinja2 is imported only when a file has templates
    from .namecheck import NameChecker
    from .site import FileContext, Problems
    from .templating import Compiled


class _Invalid:
    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Any = _Invalid()  # what a broken value renders to (its problem is recorded)
_NO_FIELDS: frozenset[str] = frozenset()


class Rules(NamedTuple):
    """How one value is rendered and checked.

    `runtime`: the names known only at run time here (`"*"`: keep the value for the run);
    `refs_for`: the reading step's needs, for the upstream check of `steps.X` (None where every
    step is upstream, as in `outputs`); `self_id`: a step whose own `steps.X` may be read (a
    compensation reads its step's output); `shell_fields`: the keys of the top mapping that are
    shell command text (quoted as such); `argv`: the value is (inside) the argv list of a shell
    field, which shows on the command line, so no secret may go there; `nested`: below the top.
    A named tuple, not a frozen dataclass: one is made for every value of every step.
    """

    runtime: frozenset[str]
    refs_for: tuple[str, ...] | None = None
    self_id: str | None = None
    shell_fields: frozenset[str] = frozenset()
    argv: bool = False
    nested: bool = False


class ValueRenderer:
    def __init__(self, problems: Problems, names: NameChecker) -> None:
        self.problems = problems
        self.names = names

    def render(self, f: FileContext, value: Any, path: Path_, scope: Scope, rules: Rules) -> Any:
        """Render what can be rendered now; keep the rest as Deferred; check names.

        Returns `INVALID` (and records a diagnostic) when the value is broken."""
        if isinstance(value, dict):
            out = {
                k: self.render(f, v, (*path, k), scope, _member(rules, k, v))
                for k, v in value.items()
            }
            return INVALID if any(v is INVALID for v in out.values()) else out
        if isinstance(value, list):
            inner = rules._replace(nested=True, shell_fields=_NO_FIELDS)
            items = [self.render(f, v, (*path, i), scope, inner) for i, v in enumerate(value)]
            return INVALID if any(v is INVALID for v in items) else items
        deferred = isinstance(value, Deferred)
        source = value.source if isinstance(value, Deferred) else value
        if not isinstance(source, str) or not is_template(source):
            return value
        shell = bool(rules.shell_fields) or (isinstance(value, Deferred) and value.shell)
        try:
            from .templating import compile_value

            compiled = compile_value(source, shell)
        except TemplateError as exc:
            self.problems.error(f, path, str(exc))
            return INVALID
        if not self.names.check(f, compiled, path, scope, rules):
            return INVALID
        if deferred or "*" in rules.runtime or needs_runtime(compiled, scope, rules.runtime):
            return Deferred(source, shell)
        try:
            return compiled.render(plan_context(f, scope))
        except TemplateError as exc:
            self.problems.error(f, path, str(exc))
            return INVALID


def _member(rules: Rules, key: str, value: Any) -> Rules:
    """The rules for one entry of a mapping: a shell field of the top mapping is shell text
    when it is a string, an argv list otherwise."""
    shell_field = not rules.nested and key in rules.shell_fields
    return Rules(  # not dataclasses.replace: this runs for every entry of every step's `with`
        rules.runtime,
        rules.refs_for,
        rules.self_id,
        frozenset({key}) if shell_field and isinstance(value, str) else _NO_FIELDS,
        rules.argv or (shell_field and not isinstance(value, str)),
        True,
    )


def needs_runtime(compiled: Compiled, scope: Scope, runtime: frozenset[str]) -> bool:
    if compiled.names & runtime:
        return True
    return any(has_deferred(scope.vars[n]) for n in compiled.names if n in scope.vars)


def plan_context(f: FileContext, scope: Scope) -> dict[str, Any]:
    """The names a value rendered before the run sees."""
    ctx = dict(f.context)
    ctx.update(scope.vars)
    return ctx
