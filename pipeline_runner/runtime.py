"""Run-time rendering: `Deferred` plan values rendered against the outputs of finished steps.

A node's templates see the run-wide names (`params`, `env`, `pipeline`, `run`, `secrets`),
its scope's variables (template parameters, the `for_each` item; Deferred ones rendered first
in the parent scope) and `steps`, a read-only view that resolves the names the node may use
(its siblings, by the aliases of its scope) to `{output, outputs, state, key}`.

Secrets inside a shell command are never put on a command line: in a `cmd` string,
`{{ secrets.X }}` becomes `"${X}"` (`${X}` inside double quotes), expanded by the shell from the
step's environment; in an argv list it is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .errors import TemplateError
from .foreach import qualified
from .model import Deferred, Scope, has_deferred

if TYPE_CHECKING:
    from .shellquote import ShellSecret

StepLookup = Callable[[str], Mapping[str, Any]]


class StepsView(Mapping[str, Any]):
    """`steps` in a template: names as the node wrote them, resolved through its scope."""

    def __init__(self, aliases: Mapping[str, str], lookup: StepLookup) -> None:
        self._aliases = aliases
        self._lookup = lookup

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        qid = qualified(self._aliases, name)  # a sibling, or one instance of a sibling fan-out
        if qid is None:
            raise KeyError(name)
        return self._lookup(qid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._aliases)

    def __len__(self) -> int:
        return len(self._aliases)


class _ShellSecrets(Mapping[str, Any]):
    def __init__(self, names: Mapping[str, str]) -> None:
        self._names = names

    def __getitem__(self, name: str) -> ShellSecret:
        if name not in self._names:
            raise KeyError(name)
        from .shellquote import ShellSecret

        return ShellSecret(name)  # "${NAME}", written for the quotes it lands in

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class _NoSecrets(Mapping[str, Any]):
    def __getitem__(self, name: str) -> Any:
        raise TemplateError(
            f"secrets.{name} cannot go into an argv list (it would show on the command line); "
            f"read ${name} from the environment instead, or use a cmd string"
        )

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class Renderer:
    def __init__(self, base: Mapping[str, Any], secrets: Mapping[str, str], lookup: StepLookup):
        self.base = dict(base)
        self.secrets = secrets
        self.lookup = lookup

    def context(self, scope: Scope, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ctx = dict(self.base)
        ctx["secrets"] = self.secrets
        ctx["steps"] = StepsView(scope.aliases, self.lookup)
        for name, value in scope.vars.items():
            ctx[name] = self.value(value, scope.parent or Scope()) if has_deferred(value) else value
        if extra:
            ctx.update(extra)
        return ctx

    def value(
        self,
        value: Any,
        scope: Scope,
        extra: Mapping[str, Any] | None = None,
        shell_fields: frozenset[str] = frozenset(),
    ) -> Any:
        """Render every Deferred inside `value` (a with/env/outputs tree)."""
        if not has_deferred(value):
            return value
        ctx = self.context(scope, extra)
        return self._walk(value, ctx, shell_fields, 0, False)

    def _walk(
        self, value: Any, ctx: dict[str, Any], shell_fields: frozenset[str], depth: int, argv: bool
    ) -> Any:
        if isinstance(value, Deferred):
            from .templating import compile_value

            compiled = compile_value(value.source, value.shell)
            if "secrets" in compiled.names and (value.shell or argv):
                ctx = {
                    **ctx,
                    "secrets": _ShellSecrets(self.secrets) if value.shell else _NoSecrets(),
                }
            return compiled.render(ctx)
        if isinstance(value, Mapping):
            return {
                k: self._walk(v, ctx, shell_fields, depth + 1, depth == 0 and k in shell_fields)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._walk(v, ctx, shell_fields, depth + 1, argv) for v in value]
        return value
