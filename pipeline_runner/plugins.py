"""Plugin discovery and the plugin protocol.

A plugin is any object published under the entry-point group `pipeline_runner.plugins`; the
entry-point name is the name used in `uses:`.  The object (an instance, a class, or a module)
provides:

- `schema`: a JSON Schema (a dict) for the step's `with` mapping, checked by `runner validate`;
- `run(with_, ctx)`: runs one attempt and returns the output (JSON-serialisable);
- optionally `summary` (one line for `runner plugins`; the docstring's first line otherwise) and
  `shell_fields` (names of `with` fields rendered with every templated value shell-quoted).

Discovery reads entry-point metadata only; a plugin's module is imported when a pipeline uses it
(`Registry.load`) and checked then, so a broken plugin breaks only the pipelines that use it.
The built-in plugins are registered through the same entry points as any other.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

if TYPE_CHECKING:
    import logging


class EntryPoint:
    """One advertised plugin: `name = module:attribute` in a distribution's entry_points.txt."""

    __slots__ = ("metadata_dir", "name", "value")

    def __init__(self, name: str, value: str, metadata_dir: str) -> None:
        self.name = name
        self.value = value
        self.metadata_dir = metadata_dir

    def load(self) -> Any:
        module, _, attribute = self.value.partition("[")[0].partition(":")
        obj: Any = importlib.import_module(module.strip())
        for part in attribute.strip().split("."):
            if part:
                obj = getattr(obj, part)
        return obj

    def distribution(self) -> tuple[str, str]:
        """The distribution's name and version, from its metadata's header."""
        found = {"Name": "?", "Version": "?"}
        for file in ("METADATA", "PKG-INFO"):
            try:
                with open(os.path.join(self.metadata_dir, file), encoding="utf-8") as f:
                    for line in f:
                        if not line.strip():
                            break
                        key, _, value = line.partition(":")
                        if key in found and found[key] == "?":
                            found[key] = value.strip()
                return found["Name"], found["Version"]
            except OSError:
                continue
        return found["Name"], found["Version"]


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points of `group` of the distributions on sys.path, in the order and with the
    precedence of importlib.metadata (path order; the first distribution of a name shadows the
    later ones).  Only the entry_points.txt files are read: importlib.metadata itself would
    add ~40 ms (email, zipfile, csv) to every run for the same answer."""
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for entry in sys.path:
        folder = entry or "."
        try:
            names = os.listdir(folder)
        except OSError:  # a zip file, or a folder that does not exist
            continue
        for name in names:
            stem, dot, suffix = name.rpartition(".")
            if not dot or suffix not in ("dist-info", "egg-info"):
                continue
            distribution = _normalize(stem.partition("-")[0])
            if distribution in seen:
                continue
            seen.add(distribution)
            metadata_dir = os.path.join(folder, name)
            try:
                with open(os.path.join(metadata_dir, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            found.extend(_parse_entry_points(text, group, metadata_dir))
    return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _parse_entry_points(text: str, group: str, metadata_dir: str) -> Iterator[EntryPoint]:
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group:
            name, eq, value = line.partition("=")
            if eq:
                yield EntryPoint(name.strip(), value.strip(), metadata_dir)


GROUP = "pipeline_runner.plugins"


@dataclass
class StepContext:
    """What a step's code may know about where it runs (given as `ctx`)."""

    run_id: str
    step_id: str
    attempt: int
    key: str | None
    item: Any
    log: logging.Logger
    scratch_path: str  # see scratch_dir
    pipeline_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None  # seconds this attempt may take, for steps that start processes
    grace: float = 3.0  # seconds between SIGTERM and SIGKILL when stopping its processes
    log_stream: BinaryIO | None = None  # the step's log file (plugins should prefer `log`)
    on_process: Callable[[int], None] | None = None  # report a started process group
    write_log: Callable[[bytes], None] | None = None  # write to the log, secrets masked

    @property
    def scratch_dir(self) -> Path:
        """A folder of this step's own in the run's folder, created on first use."""
        path = Path(self.scratch_path)
        path.mkdir(parents=True, exist_ok=True)
        return path


@runtime_checkable
class Plugin(Protocol):
    schema: Mapping[str, Any]

    def run(self, with_: Mapping[str, Any], ctx: StepContext) -> Any: ...


class StepFailed(Exception):
    """Raise it from a plugin to fail the attempt with a plain message (no traceback);
    `exit_code` lets `retries.on` match exit codes."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PluginLoadError(Exception):
    """A plugin could not be imported or does not follow the protocol."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    value: str
    summary: str = ""
    error: str | None = None


def summary_of(obj: object) -> str:
    text = getattr(obj, "summary", None) or (obj.__doc__ or "")
    return str(text).strip().splitlines()[0] if str(text).strip() else ""


def check_plugin(name: str, obj: object) -> Plugin:
    """Verify that a loaded object follows the protocol (as pluggy checks at registration)."""
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginLoadError(f"cannot instantiate plugin class: {exc}") from exc
    schema = getattr(obj, "schema", None)
    if not isinstance(schema, Mapping):
        raise PluginLoadError("it has no `schema` mapping (a JSON Schema for `with`)")
    if not callable(getattr(obj, "run", None)):
        raise PluginLoadError("it has no callable `run(with_, ctx)`")
    return obj  # type: ignore[return-value]


class Registry:
    """The installed plugins, discovered once, each imported on first use and cached."""

    def __init__(self) -> None:
        self._eps: dict[str, EntryPoint] = {}
        for ep in entry_points(group=GROUP):
            # The first distribution to claim a name wins, as on PATH; duplicates are rare.
            self._eps.setdefault(ep.name, ep)
        self._loaded: dict[str, Plugin] = {}
        self._errors: dict[str, str] = {}

    def names(self) -> list[str]:
        return sorted(self._eps)

    def __contains__(self, name: object) -> bool:
        return name in self._eps

    def load(self, name: str) -> Plugin:
        """The plugin called `name`; raises PluginLoadError naming its distribution."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._errors:
            raise PluginLoadError(self._errors[name])
        ep = self._eps[name]
        try:
            plugin = check_plugin(name, ep.load())
        except Exception as exc:
            dist, version = ep.distribution()
            message = f"plugin '{name}' from {dist} {version} failed to load: {exc}"
            self._errors[name] = message
            raise PluginLoadError(message) from exc
        self._loaded[name] = plugin
        return plugin

    def info(self) -> list[PluginInfo]:
        out = []
        for name in self.names():
            ep = self._eps[name]
            dist, version = ep.distribution()
            try:
                summary, error = summary_of(self.load(name)), None
            except PluginLoadError as exc:
                summary, error = "", str(exc)
            out.append(PluginInfo(name, dist, version, ep.value, summary, error))
        return out


_registry: Registry | None = None


def registry() -> Registry:
    """The process-wide registry (entry points are read once per process)."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry
