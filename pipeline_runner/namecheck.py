"""Name checks of a compiled template, apart from rendering it.

Every name a template reads must be known where it stands (`params`, `env`, `pipeline`, the
run-time names, the scope's variables); `params.X` must be declared, `secrets.X` declared and
never put on a command line, and `steps.X` must name a step here. Each `steps.X` read is noted
(`RefCheck`) for the graph check, which needs the whole plan: is X upstream of the reader?
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import Location, did_you_mean
from .foreach import qualified
from .loader import Path_, format_path
from .model import Scope
from .triggers import STATUS_FUNCTIONS

if TYPE_CHECKING:
    from .rendering import Rules
    from .site import FileContext, Problems
    from .templating import Compiled

RUN_NAMES = frozenset({"steps", "run", "secrets"})
STEP_NAMES = RUN_NAMES | {"step"}  # in a step's own fields: also `step` (its id and key)
BASE_NAMES = frozenset({"params", "env", "pipeline"}) | RUN_NAMES
FINALLY_RUN_NAMES = frozenset({"failures", "duration"})  # run.X known to `finally` steps only


@dataclass
class RefCheck:
    """One reference in a template to check: what it names and where it was written."""

    node_needs: tuple[str, ...]
    self_id: str | None
    target: str
    name: str
    location: Location
    path: str
    in_finally: bool = False


class NameChecker:
    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.ref_checks: list[RefCheck] = []
        self.in_finally = False  # expanding `finally`: every main step is upstream of it

    def check(
        self, f: FileContext, compiled: Compiled, path: Path_, scope: Scope, rules: Rules
    ) -> bool:
        """False (and the problem recorded) when the template reads a name it cannot."""
        if not (
            self.known_names(f, compiled, path, scope, rules.runtime)
            and self.param_refs(f, compiled, path, scope)
            and self.secret_refs(f, compiled, path, scope)
            and self.finally_refs(f, compiled, path, scope)
            and self.argv_secrets(f, compiled, path, scope, rules)
        ):
            return False
        self.note_refs(f, compiled, path, scope, rules)
        return True

    def known_names(
        self, f: FileContext, compiled: Compiled, path: Path_, scope: Scope, runtime: frozenset[str]
    ) -> bool:
        known = BASE_NAMES | set(scope.vars) | runtime
        unknown = compiled.names - known
        ok = True
        for ref, parts in _hyphenated_refs(compiled.source, unknown):
            hint = "" if ref in scope.aliases else step_hint(ref, scope.aliases)
            self.problems.error(
                f,
                path,
                f"steps.{ref} reads as steps.{' - '.join(ref.split('-'))} (a subtraction); "
                f"write steps['{ref}']{hint}",
            )
            unknown -= parts
            ok = False
        for name in sorted(unknown):
            self.problems.error(f, path, _undefined(name, compiled.source, known - {"*"}))
            ok = False
        return ok

    def param_refs(self, f: FileContext, compiled: Compiled, path: Path_, scope: Scope) -> bool:
        """`params.X` must name a declared parameter, in values rendered now or at run time."""
        if "params" not in compiled.names or "params" in scope.vars:
            return True
        declared = f.context["params"]
        ok = True
        for name in sorted(compiled.param_refs - set(declared)):
            hint = did_you_mean(name, declared) or (
                f" (declared: {', '.join(sorted(declared)[:10]) or 'none'})"
            )
            self.problems.error(f, path, f"unknown parameter '{name}' in params.{name}{hint}")
            ok = False
        return ok

    def secret_refs(self, f: FileContext, compiled: Compiled, path: Path_, scope: Scope) -> bool:
        """`secrets.X` must name a secret the file declares (it is read before the run)."""
        if "secrets" not in compiled.names or "secrets" in scope.vars:
            return True
        declared = [str(s) for s in f.data.get("secrets") or ()]
        ok = True
        for name in sorted(compiled.secret_refs - set(declared)):
            hint = did_you_mean(name, declared) or f"; declare it: `secrets: [{name}]`"
            self.problems.error(f, path, f"unknown secret '{name}' in secrets.{name}{hint}")
            ok = False
        return ok

    def finally_refs(self, f: FileContext, compiled: Compiled, path: Path_, scope: Scope) -> bool:
        """`run.failures` and `run.duration` are known once every main step has ended: only
        `finally` steps read them."""
        if "run" not in compiled.names or "run" in scope.vars or self.in_finally:
            return True
        late = sorted(compiled.run_refs & FINALLY_RUN_NAMES)
        for name in late:
            self.problems.error(
                f,
                path,
                f"run.{name} is known only to `finally` steps (they start once every main step "
                "has ended); read it in a step under `finally:`",
            )
        return not late

    def argv_secrets(
        self, f: FileContext, compiled: Compiled, path: Path_, scope: Scope, rules: Rules
    ) -> bool:
        """No secret in an argv list: it would show on the command line."""
        if rules.argv and compiled.secret_refs and "secrets" not in scope.vars:
            name = sorted(compiled.secret_refs)[0]
            self.problems.error(
                f,
                path,
                f"secrets.{name} cannot go into an argv list (it would show on the command "
                f"line); read ${name} from the environment instead, or use a cmd string",
            )
            return False
        return True

    def note_refs(
        self, f: FileContext, compiled: Compiled, path: Path_, scope: Scope, rules: Rules
    ) -> None:
        """Check that each `steps.X` names a step here, and note it for the upstream check
        (`rules.refs_for`: the reader's needs; None where every step is upstream)."""
        if "steps" not in compiled.names or "steps" in scope.vars or not scope.aliases:
            return
        for name in sorted(compiled.step_refs):
            target = qualified(scope.aliases, name)
            if target is None:
                hint = step_hint(name, scope.aliases)
                self.problems.error(f, path, f"unknown step '{name}' in steps.{name}{hint}")
                continue
            if rules.refs_for is None:
                continue
            where = f.source.locate(path)
            self.ref_checks.append(
                RefCheck(
                    rules.refs_for,
                    rules.self_id,
                    target,
                    name,
                    where,
                    format_path(path),
                    self.in_finally,
                )
            )


def _undefined(name: str, source: str, known: Iterable[str]) -> str:
    """An unknown name; called like a function, the status functions are the hint."""
    if not re.search(rf"(?<![.\w]){re.escape(name)}\s*\(", source):
        return f"undefined name '{name}'{did_you_mean(name, known)}"
    if name in STATUS_FUNCTIONS:
        return f"{name}() is a status function, only for `if`"
    hint = did_you_mean(f"{name}()", [f"{f}()" for f in sorted(STATUS_FUNCTIONS)]) or (
        " (the status functions for `if`: success(), failure(), always(), cancelled())"
    )
    return f"unknown function '{name}()'{hint}"


_HYPHENATED = re.compile(r"\bsteps\.([A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+)")


def _hyphenated_refs(source: str, unknown: Iterable[str]) -> list[tuple[str, set[str]]]:
    """`steps.odd-or-even` whose later parts are undefined names: each id, with those names."""
    names = set(unknown)
    found: list[tuple[str, set[str]]] = []
    for ref in dict.fromkeys(_HYPHENATED.findall(source)):
        parts = set(ref.split("-")[1:]) & names
        if parts:
            found.append((ref, parts))
    return found


def step_hint(name: str, known: Mapping[str, str]) -> str:
    """A did-you-mean, or else the names that can be used here."""
    return did_you_mean(name, known) or f" (steps here: {', '.join(list(known)[:10]) or 'none'})"
