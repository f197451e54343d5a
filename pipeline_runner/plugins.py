"""Plugin discovery and the plugin protocol.

A plugin is any object published under the entry-point group `pipeline_runner.plugins`; the
entry-point name is the name used in `uses:`.  The object (an instance, a class, or a module)
provides:

- `schema`: a JSON Schema (a dict) for the step's `with` mapping, checked by `runner validate`;
- `run(with_, ctx)`: runs one attempt and returns the output (JSON-serialisable);
- optionally `summary` (one line for `runner plugins`; the docstring's first line otherwise) and
  `shell_fields` (names of `with` fields rendered with every templated value shell-quoted).

Discovery goes through importlib.metadata, so every install layout works (site-packages, a
wheel or zip on sys.path, a custom finder). The built-in plugins are resolved without reading any
distribution's metadata (that scan would add tens of milliseconds to every start): their names
are reserved, and a distribution that publishes one of them does not replace it (`runner
plugins` says so). A plugin's module is imported when a pipeline uses it (`Registry.load`) and
checked then, so a broken plugin breaks only the pipelines that use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from . import defaults

if TYPE_CHECKING:
    import logging

GROUP = "pipeline_runner.plugins"
DISTRIBUTION = "yaml-pipeline-runner"

# The built-in plugins; the same names are published as entry points of this distribution
# (pyproject.toml), and a test holds the two lists equal.
BUILTINS = {
    "noop": "pipeline_runner.builtins.noop:plugin",
    "shell": "pipeline_runner.builtins.shell:plugin",
    "python": "pipeline_runner.builtins.python:plugin",
    "pipeline": "pipeline_runner.builtins.pipeline:plugin",
    "approval": "pipeline_runner.builtins.approval:plugin",
}


def load_reference(value: str) -> Any:
    """The object named by an entry point's value, `module:attribute.path [extras]`."""
    module, _, attribute = value.partition("[")[0].partition(":")
    obj: Any = importlib.import_module(module.strip())
    for part in attribute.strip().split("."):
        if part:
            obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Advertised:
    """One plugin as a distribution publishes it: `name = value`, from `distribution`."""

    name: str
    value: str
    distribution: str
    version: str


def builtin(name: str) -> Advertised:
    from . import __version__

    return Advertised(name, BUILTINS[name], DISTRIBUTION, __version__)


def published(group: str = GROUP) -> list[Advertised]:
    """Every entry point of `group`, in importlib.metadata's order (sys.path order; the first
    distribution of a name shadows later copies of it)."""
    from importlib.metadata import entry_points

    out = []
    for ep in entry_points(group=group):
        dist = getattr(ep, "dist", None)
        name, version = (dist.metadata["Name"], dist.version) if dist is not None else ("?", "?")
        out.append(Advertised(ep.name, ep.value, name, version))
    return out


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
    grace: float = defaults.GRACE  # seconds between SIGTERM and SIGKILL when stopping its processes
    log_stream: BinaryIO | None = None  # the step's log file (plugins should prefer `log`)
    on_process: Callable[[int], None] | None = None  # report a started process group
    write_log: Callable[[bytes], None] | None = None  # write to the log, secrets masked
    outputs: dict[str, Any] = field(default_factory=dict)  # named outputs (`set_output`)

    def set_output(self, name: str, value: Any) -> None:
        """Give the step a named output, read as `steps.<id>.outputs.<name>` (any plugin's
        code may; a process can write `NAME=VALUE` lines to the file `$RUNNER_OUTPUT` names)."""
        from .named_outputs import name_problem

        problem = name_problem(name)
        if problem:
            raise ValueError(problem)
        self.outputs[name] = value

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
    """A plugin as `runner plugins` lists it: its name, where it comes from and its summary."""

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
    """The installed plugins: the built-ins at once, the others found on first need (one scan
    of the installed distributions per process); each imported on first use and cached."""

    def __init__(self) -> None:
        self._published: dict[str, Advertised] | None = None
        self._shadowed: list[Advertised] = []
        self._loaded: dict[str, Plugin] = {}
        self._errors: dict[str, str] = {}

    def _scan(self) -> dict[str, Advertised]:
        if self._published is None:
            found: dict[str, Advertised] = {}
            for ad in published():
                if ad.name in BUILTINS and ad.value != BUILTINS[ad.name]:
                    self._shadowed.append(ad)
                else:
                    # The first distribution to claim a name wins, as on PATH.
                    found.setdefault(ad.name, ad)
            for name in BUILTINS:
                found[name] = builtin(name)
            self._published = found
        return self._published

    def _find(self, name: str) -> Advertised:
        return builtin(name) if name in BUILTINS else self._scan()[name]

    def names(self) -> list[str]:
        return sorted(self._scan())

    def __contains__(self, name: object) -> bool:
        return name in BUILTINS or name in self._scan()

    def load(self, name: str) -> Plugin:
        """The plugin called `name`; raises PluginLoadError naming its distribution."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._errors:
            raise PluginLoadError(self._errors[name])
        ad = self._find(name)
        try:
            plugin = check_plugin(name, load_reference(ad.value))
        except Exception as exc:
            message = f"plugin '{name}' from {ad.distribution} {ad.version} failed to load: {exc}"
            self._errors[name] = message
            raise PluginLoadError(message) from exc
        self._loaded[name] = plugin
        return plugin

    def info(self) -> list[PluginInfo]:
        out = []
        for name in self.names():
            ad = self._find(name)
            try:
                summary, error = summary_of(self.load(name)), None
            except PluginLoadError as exc:
                summary, error = "", str(exc)
            out.append(PluginInfo(name, ad.distribution, ad.version, ad.value, summary, error))
        for ad in self._shadowed:
            error = f"not used: '{ad.name}' is a built-in plugin, and built-in names are reserved"
            out.append(PluginInfo(ad.name, ad.distribution, ad.version, ad.value, "", error))
        return out


_registry: Registry | None = None


def registry() -> Registry:
    """The process-wide registry (entry points are read once per process)."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry
