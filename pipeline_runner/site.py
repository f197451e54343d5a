"""Where the planner stands while it expands: the file, and one step's site in it.

`FileContext` is one pipeline file being expanded (the main one or a nested `pipeline`).
`Site` is the frozen context every expansion method takes instead of an argument clump: which
step of which file, at which document path, seeing which names, under which qualified id, after
which steps, in which group, and for a for_each instance its key and item. A child site (an
instance of a for_each, a step inside a template) is derived with `dataclasses.replace`.
`Problems` collects the diagnostics, each (location, message) once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import Diagnostic, Location
from .loader import Path_, SourceMap, format_path
from .model import Scope


@dataclass
class FileContext:
    """One pipeline file being expanded (the main one or a nested `pipeline`)."""

    path: str
    data: dict[str, Any]
    source: SourceMap
    defaults: Mapping[str, Any]
    templates: Mapping[str, Any]
    context: dict[str, Any]  # params, env, pipeline: the plan-time names of this file
    env: dict[str, Any] = field(default_factory=dict)  # top-level env, Deferred values included


class Site(NamedTuple):
    """One step being expanded, and everything its expansion needs to know (a named tuple:
    one is made for every step and instance)."""

    file: FileContext
    step: Mapping[str, Any]
    path: Path_
    scope: Scope
    qid: str  # its qualified id
    needs: tuple[str, ...]  # qualified ids
    group: str | None = None  # the qualified id of the group it belongs to
    finally_: bool = False
    key: str | None = None  # for an instance of a for_each: its key and item
    item: Any = None
    has_item: bool = False

    def at(self, *parts: str | int) -> Path_:
        """The document path of a part of this step (`at("with", "cmd")`)."""
        return (*self.path, *parts)

    def instance(self, qid: str, key: str, item: Any, scope: Scope) -> Site:
        """The site of one for_each instance of this step: its id, key and item."""
        return self._replace(
            qid=qid, group=self.qid, key=key, item=item, has_item=True, scope=scope
        )


class Problems:
    """The diagnostics found so far; the same mistake (a template's, seen once per instance)
    is kept once."""

    def __init__(self) -> None:
        self.found: list[Diagnostic] = []
        self.seen: set[tuple[Location, str]] = set()

    def error(self, f: FileContext, path: Path_, message: str, *, key: bool = False) -> None:
        self.add_once(Diagnostic(f.source.locate(path, key=key), format_path(path), message))

    def add_once(self, diagnostic: Diagnostic) -> None:
        if (diagnostic.location, diagnostic.message) in self.seen:
            return
        self.seen.add((diagnostic.location, diagnostic.message))
        self.found.append(diagnostic)

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        """Problems found elsewhere (the schema, the loader): kept as they are."""
        self.found.extend(diagnostics)


@dataclass(frozen=True, slots=True)
class StepList:
    """One list of sibling steps to expand: a file's `steps` or `finally`, a template's steps,
    an inlined pipeline's steps."""

    file: FileContext
    steps: list[dict[str, Any]]
    path: Path_
    scope: Scope
    needs: tuple[str, ...] = ()  # the enclosing step's needs, given to the list's roots
    group: str | None = None  # the enclosing group's qualified id; the ids are qualified by it
    finally_: bool = False

    @property
    def prefix(self) -> str:
        return f"{self.group}." if self.group is not None else ""
