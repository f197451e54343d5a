"""A plugin step's node: its plugin and `with` checked, its settings (defaults applied) read.

`with`, `env`, `if`, a compensation and cache globs are rendered as far as they can be before
the run (`rendering`); durations, retries and pools are checked here, each problem located.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import approvals, triggers
from .durations import MAX_DURATION, parse_duration
from .environment import name_problem, value_problem
from .errors import Location, did_you_mean
from .loader import Path_, format_path
from .model import EMPTY, CacheSpec, Compensation, Deferred, Node, NodeKind, RetryPolicy
from .plugins import PluginLoadError, Registry
from .rendering import INVALID, Rules
from .schema import check as check_schema
from .schema import describe

if TYPE_CHECKING:
    from .rendering import ValueRenderer
    from .site import FileContext, Problems, Site


class StepBuilder:
    def __init__(
        self,
        problems: Problems,
        values: ValueRenderer,
        plugins: Registry,
        nodes: Mapping[str, Node],
        pools: Mapping[str, int],
    ) -> None:
        self.problems = problems
        self.values = values
        self.plugins = plugins
        self.nodes = nodes  # the plan so far (a node's order is its position)
        self.pools = pools
        self.root_dir = ""  # the main file's folder (for steps of no file)
        # `with` values a plugin's schema accepted: many steps share theirs (a template's steps
        # across tenants, generated steps), and a valid one needs checking once.
        self._valid_with: set[tuple[str, str]] = set()
        self._loaded: dict[str, Any] = {}  # plugins by name, once loaded
        # Pieces every instance of a template step shares (a 100,000-step plan holds one copy,
        # not one per instance): the place it was written, by file and document path, and
        # the file's `env` for the steps that add none.
        self._places: dict[tuple[str, Path_], tuple[Location, str]] = {}
        self._file_env: dict[int, tuple[FileContext, Mapping[str, Any]]] = {}

    def plugin_schema(self, name: str) -> Mapping[str, Any] | None:
        try:
            return self.plugins.load(name).schema
        except (PluginLoadError, KeyError):
            return None

    def check_plugin(self, f: FileContext, name: str, path: Path_, *parts: str) -> Any:
        """The plugin `name` (written at `path` + `parts`), or None and a located error."""
        found = self._loaded.get(name)
        if found is not None:
            return found
        at = (*path, *parts)
        if name not in self.plugins:
            hint = did_you_mean(name, self.plugins.names())
            self.problems.error(f, at, f"unknown plugin '{name}'{hint}")
            return None
        try:
            found = self._loaded[name] = self.plugins.load(name)
        except PluginLoadError as exc:
            self.problems.error(f, at, str(exc))
            return None
        return found

    def step_node(self, site: Site, runtime: frozenset[str]) -> Node | None:
        f, step, scope, needs = site.file, site.step, site.scope, site.needs
        settings = self.controls(site, {**f.defaults, **step}, runtime)
        uses = step["uses"]
        plugin = self.check_plugin(f, uses, site.path, "uses")
        # What a step does not have is not rendered nor checked (most steps have no `if`,
        # `env`, `compensate`, `cache` or `timeout`): planning runs this for every instance.
        with_ = self.step_with(site, plugin, runtime)
        if uses == approvals.USES:
            self.check_gate(site, with_)
        condition = self.condition(site, runtime) if "if" in step else None
        called = self.status_calls(site, condition)
        env_values = self.step_env(site, runtime)
        compensate = self.compensation(site, runtime) if "compensate" in step else None
        pool = settings.get("pool")
        if pool is not None and pool not in self.pools:
            hint = did_you_mean(pool, self.pools) or f" (pools: {', '.join(self.pools) or 'none'})"
            self.problems.error(f, site.at("pool"), f"unknown pool '{pool}'{hint}")
        timeout = settings.get("timeout")
        if timeout is not None:
            timeout = self.duration(f, timeout, site.at("timeout"), positive=True)
        location, path = self.place(site)
        return Node(
            id=site.qid,
            kind=NodeKind.STEP,
            order=len(self.nodes),
            location=location,
            path=path,
            uses=uses,
            with_=with_ if with_ is not INVALID else EMPTY,
            needs=needs,
            condition=condition,
            trigger=str(step.get("trigger", triggers.DEFAULT)),
            status_if=bool(called),
            on_cancel=bool(called & triggers.ON_CANCEL) and not site.finally_,
            retries=self.retry_policy(f, settings.get("retries"), site.path),
            timeout=timeout,
            continue_on_error=bool(settings.get("continue_on_error", False)),
            skip_exit_codes=frozenset(step["skip_exit_codes"])
            if step.get("skip_exit_codes")
            else _NONE,
            pool=pool,
            priority=int(settings.get("priority") or 0) if "priority" in step else 0,
            env=MappingProxyType(env_values)
            if isinstance(env_values, dict)
            else env_values
            if isinstance(env_values, MappingProxyType)
            else EMPTY,
            scope=scope,
            group=site.group,
            compensate=compensate,
            cache=self.cache_spec(site, runtime) if step.get("cache") else None,
            resources=MappingProxyType(dict(step["resources"])) if step.get("resources") else EMPTY,
            is_finally=site.finally_,
            key=site.key,
            item=site.item,
            has_item=site.has_item,
        )

    def place(self, site: Site) -> tuple[Location, str]:
        """Where the step was written: its location and document path, one pair shared by
        every instance of a template step."""
        key = (site.file.source.file, site.path)
        found = self._places.get(key)
        if found is None:
            found = self._places[key] = (site.file.source.locate(site.path), format_path(site.path))
        return found

    def controls(
        self, site: Site, settings: dict[str, Any], runtime: frozenset[str]
    ) -> dict[str, Any]:
        """`settings` with its templated control fields (`timeout`, `retries` and its fields,
        `continue_on_error`, `priority`) rendered now and type-checked; most steps have none,
        and their settings are returned as they are."""
        out = settings
        if _CONTROLS.isdisjoint(settings):
            return out
        for name in _CONTROL_ORDER:
            value = settings.get(name)
            if isinstance(value, str) and "{{" in value:
                new = self.control(site, (name,), value, runtime)
            elif isinstance(value, dict) and any(_templated(v) for v in value.values()):
                new = {
                    k: self.control(site, (name, k), v, runtime) if _templated(v) else v
                    for k, v in value.items()
                }
                new = {k: v for k, v in new.items() if v is not None}
            else:
                continue
            if out is settings:
                out = dict(settings)
            out[name] = new
        return out

    def control(
        self, site: Site, parts: tuple[str, ...], value: str, runtime: frozenset[str]
    ) -> Any:
        """One control field's template rendered with the names known before the run; None
        (and a located problem) when it cannot be, or renders to a value of the wrong type."""
        at = site.at(*parts) if parts[0] in site.step else ("defaults", *parts)
        rules = Rules(runtime, site.needs)
        rendered = self.values.render(site.file, value, at, site.scope, rules)
        if rendered is INVALID:
            return None
        if isinstance(rendered, Deferred):
            message = (
                f"`{parts[-1]}` must be known before the run: it may read params, env, template "
                "parameters and a for_each item known before the run, not steps, run or secrets"
            )
            self.problems.error(site.file, at, message)
            return None
        kind = _CONTROL_TYPES.get(parts[-1], "duration")
        checked = _as_type(rendered, kind)
        if checked is None:
            self.problems.error(
                site.file, at, f"rendered to {describe(rendered)}: expected {_KIND_NAMES[kind]}"
            )
        return checked

    def step_with(self, site: Site, plugin: Any, runtime: frozenset[str]) -> Any:
        """The step's `with`, rendered as far as it can be and checked by its plugin's schema."""
        raw = site.step.get("with")
        shell_fields = frozenset(getattr(plugin, "shell_fields", ()) or ())
        rules = Rules(runtime, site.needs, None, shell_fields)
        with_ = (
            self.values.render(site.file, raw, site.at("with"), site.scope, rules) if raw else {}
        )
        if plugin is not None and with_ is not INVALID:
            self.check_with(site.file, site.step["uses"], plugin.schema, with_, site.at("with"))
        return with_

    def check_gate(self, site: Site, with_: Any) -> None:
        """An approval gate runs no attempt: the settings of one are refused on it, and it
        cannot wait where nothing would answer (a `finally` step, a compensation)."""
        f = site.file
        if site.finally_:
            self.problems.error(
                f,
                site.at("uses"),
                "an approval gate cannot be a `finally` step (it would wait "
                "after the run ended); put it among the steps",
            )
        for key in (*approvals.ATTEMPT_KEYS, "compensate"):
            if key in site.step:
                self.problems.error(
                    f,
                    site.at(key),
                    f"an approval gate runs no attempt, so `{key}` cannot apply "
                    "to it (limit its wait with `with.timeout`)",
                    key=True,
                )
        if isinstance(with_, Mapping):
            for key, message in approvals.with_problems(with_):
                self.problems.error(f, site.at("with", key), f"{approvals.USES}: {message}")

    def step_env(self, site: Site, runtime: frozenset[str]) -> Any:
        """The step's own `env` over the file's defaults, rendered and checked, on top of the
        file's `env`; INVALID when broken."""
        f, step = site.file, site.step
        own = step.get("env") or {}
        own_env = {**(f.defaults.get("env") or {}), **own}
        if not own_env:
            # One read-only copy of the file's env for all its steps that add none (the file's
            # env is complete before its steps are planned).
            shared = self._file_env.get(id(f))
            if shared is None or shared[0] is not f:
                shared = self._file_env[id(f)] = (f, MappingProxyType(dict(f.env)))
            return shared[1]
        rules = Rules(runtime, site.needs)
        env_values = self.values.render(f, own_env, site.at("env"), site.scope, rules)
        if isinstance(env_values, dict):
            self.check_env(
                f, env_values, lambda n: site.at("env", n) if n in own else ("defaults", "env", n)
            )
            env_values = {**f.env, **env_values}
        return env_values

    def condition(self, site: Site, runtime: frozenset[str]) -> Any:
        """The step's `if` (checked now, evaluated at run time); None when it is broken."""
        condition = site.step.get("if")
        if isinstance(condition, str):
            text = condition.strip()
            expr = text if text.startswith("{{") else "{{ " + text + " }}"
            rules = Rules(runtime | triggers.STATUS_FUNCTIONS | {"*"}, site.needs)
            checked = self.values.render(
                site.file, Deferred(expr), site.at("if"), site.scope, rules
            )
            if checked is INVALID:
                condition = None
        return condition

    def status_calls(self, site: Site, condition: Any) -> frozenset[str]:
        """The status functions the step's `if` calls; a `trigger` beside one, a `trigger`
        on a `finally` step and `skip_exit_codes` on a plugin that has no exit code are
        errors (each would be ignored)."""
        step, f = site.step, site.file
        called: frozenset[str] = frozenset()
        if isinstance(condition, str):
            from .templating import compile_value

            text = condition.strip()
            expr = text if text.startswith("{{") else "{{ " + text + " }}"
            called = compile_value(expr).names & triggers.STATUS_FUNCTIONS
        if "trigger" in step and site.finally_:
            self.problems.error(
                f,
                site.at("trigger"),
                "a `finally` step has no trigger rule: it runs after "
                "every other step, whatever happened (use `if` to choose)",
                key=True,
            )
        elif "trigger" in step and called:
            names = ", ".join(f"{n}()" for n in sorted(called))
            self.problems.error(
                f,
                site.at("trigger"),
                f"`trigger` and the status function {names} in `if` "
                "both say when the step runs; use one of them",
                key=True,
            )
        if "skip_exit_codes" in step and step.get("uses") in _NO_EXIT_CODE:
            self.problems.error(
                f,
                site.at("skip_exit_codes"),
                f"`{step['uses']}` steps never end with an exit "
                "code, so `skip_exit_codes` would have no effect",
                key=True,
            )
        return called

    def compensation(self, site: Site, runtime: frozenset[str]) -> Compensation | None:
        if "compensate" not in site.step:
            return None
        comp = site.step["compensate"]
        plugin = self.check_plugin(site.file, comp["uses"], site.path, "compensate", "uses")
        if plugin is None:
            return None
        if comp["uses"] == approvals.USES:
            at_uses = site.at("compensate", "uses")
            self.problems.error(site.file, at_uses, "a compensation cannot be an approval gate")
            return None
        at = site.at("compensate", "with")
        rules = Rules(runtime, site.needs, site.qid)
        comp_with = self.values.render(site.file, comp.get("with") or {}, at, site.scope, rules)
        if comp_with is not INVALID:  # checked as a step's `with` is, before anything runs
            self.check_with(site.file, comp["uses"], plugin.schema, comp_with, at)
        return Compensation(comp["uses"], comp_with)

    def check_env(
        self, f: FileContext, values: Mapping[str, Any], at: Callable[[str], Path_]
    ) -> None:
        """Names and values the system refuses in an environment (a Deferred value is checked
        when it is rendered, at run time)."""
        for name, value in values.items():
            problem = name_problem(name)
            if problem:
                self.problems.error(f, at(name), problem, key=True)
            elif (problem := value_problem(name, value)) is not None:
                self.problems.error(f, at(name), problem)

    def check_with(
        self, f: FileContext, uses: str, schema: Mapping[str, Any], with_: Any, at: Path_
    ) -> None:
        probe = _strip_deferred(with_)
        try:
            text = "{}" if type(probe) is dict and not probe else json.dumps(probe, sort_keys=True)
            seen: tuple[str, str] | None = (uses, text)
        except (TypeError, ValueError, RecursionError):
            seen = None
        if seen in self._valid_with:
            return
        problems = check_schema(probe, schema, f.source, at, prefix=f"{uses}: ")
        if not problems and seen is not None:
            self._valid_with.add(seen)
        for p in problems:
            if _DEFERRED_MARK not in p.message:
                self.problems.add_once(p)

    def retry_policy(self, f: FileContext, spec: Any, path: Path_) -> RetryPolicy:
        if spec is None:
            return _NO_RETRIES
        if isinstance(spec, int):
            return RetryPolicy(max=spec)
        at = (*path, "retries")
        # A mapping without `max` retries once; every other key not given keeps its default.
        given: dict[str, Any] = {"max": 1 if spec else 0}
        for option in dataclasses.fields(RetryPolicy):
            if option.name not in spec:
                continue
            value = spec[option.name]
            if option.metadata.get("duration"):
                value = self.duration(f, value, (*at, option.name)) or 0.0
            elif option.name == "on":
                value = frozenset(value or ())
            given[option.name] = value
        return RetryPolicy(**given)

    def duration(
        self, f: FileContext, value: Any, at: Path_, *, positive: bool = False
    ) -> float | None:
        """`positive`: zero is an error too (a timeout of 0 would fail every attempt at once)."""
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problems.error(f, at, str(exc))
            return None
        if positive and seconds == 0:
            self.problems.error(f, at, f"invalid duration {value!r}: must be more than 0")
            return None
        return seconds

    def cache_spec(self, site: Site, runtime: frozenset[str]) -> CacheSpec | None:
        """Globs rendered as `with` is.  An input glob that matches nothing is an error now when
        no step runs before this one to create it: no needs, no `if`, not a `finally` step."""
        spec = site.step.get("cache")
        if not spec:
            return None
        if spec is True:
            return CacheSpec()
        rules = Rules(runtime, site.needs)
        inputs = self.cache_globs(site, spec.get("inputs"), site.at("cache", "inputs"), rules)
        outputs = self.cache_globs(site, spec.get("outputs"), site.at("cache", "outputs"), rules)
        if not site.needs and "if" not in site.step and not site.finally_:
            self.check_inputs(site.file, inputs, site.at("cache", "inputs"))
        return CacheSpec(inputs, outputs)

    def cache_globs(
        self, site: Site, globs: Any, at: Path_, rules: Rules
    ) -> tuple[str | Deferred, ...]:
        from .cache import as_glob

        values = self.values.render(site.file, list(globs or ()), at, site.scope, rules)
        out: list[str | Deferred] = []
        for i, value in enumerate(values if isinstance(values, list) else ()):
            glob_ = value if isinstance(value, Deferred) else as_glob(value)
            if glob_ is None:
                self.problems.error(
                    site.file, (*at, i), f"a glob must be text, got {describe(value)}"
                )
            else:
                out.append(glob_)
        return tuple(out)

    def check_inputs(self, f: FileContext, inputs: tuple[str | Deferred, ...], at: Path_) -> None:
        from .cache import matches, no_match_message

        # Matched in the folder of the file the step is written in: the step runs there.
        folder = os.path.dirname(os.path.abspath(f.path)) if f.path else self.root_dir
        for i, pattern in enumerate(inputs):
            if isinstance(pattern, str) and not matches(pattern, folder):
                self.problems.error(f, (*at, i), no_match_message(pattern))


# One empty set shared by every step without `skip_exit_codes` (an empty frozenset is an object
# of its own each time: 200 bytes a step of a 100,000-step plan).
_NONE: frozenset[int] = frozenset()
_NO_EXIT_CODE = frozenset({"noop"})  # plugins whose attempt never ends with an exit code
_NO_RETRIES = RetryPolicy()  # frozen: one for every step without `retries`
_CONTROL_ORDER = ("timeout", "retries", "continue_on_error", "priority")
_CONTROLS = frozenset(_CONTROL_ORDER)
# The type a control field (or field of `retries`) renders to; the others are durations.
_CONTROL_TYPES = {
    "retries": "count",
    "max": "count",
    "backoff": "factor",
    "jitter": "boolean",
    "continue_on_error": "boolean",
    "priority": "integer",
}
_KIND_NAMES = {
    "count": "an integer of 0 or more",
    "factor": "a number of 1 or more",
    "boolean": "true or false",
    "integer": "an integer",
    "duration": "a duration (a number of seconds, or e.g. 500ms, 30s, 5m, 1h30m)",
}
_INTEGER_TEXT = re.compile(r"-?\d+")


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _as_type(value: Any, kind: str) -> Any:
    """A rendered control value as its type (a text that reads as one counts: `true`, `3`),
    or None when it is not one."""
    if isinstance(value, str):
        text = value.strip()
        if kind == "boolean" and text in ("true", "false"):
            return text == "true"
        if kind in ("count", "integer") and _INTEGER_TEXT.fullmatch(text):
            value = int(text)
        elif kind in ("factor", "duration"):
            try:
                value = float(text)  # a duration's text may be a number of seconds too
            except ValueError:
                if kind == "factor":
                    return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind in ("count", "integer"):
        whole = isinstance(value, int) or (number and value.is_integer())
        ok = number and whole and (kind == "integer" or value >= 0)
        return int(value) if ok else None
    if kind == "factor":
        return value if number and value >= 1 else None
    if number or isinstance(value, str):
        try:
            parse_duration(value)
        except ValueError:
            return None
        return value
    return None


_DEFERRED_MARK = "<deferred value 7f3a>"


def _strip_deferred(value: Any) -> Any:
    """A copy for schema checks: a Deferred leaf becomes a marker whose errors are ignored."""
    if isinstance(value, Deferred):
        return _DEFERRED_MARK
    if isinstance(value, dict):
        return {k: _strip_deferred(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_deferred(v) for v in value]
    return value


__all__ = ["MAX_DURATION", "StepBuilder", "parse_duration"]
