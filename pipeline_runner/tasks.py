"""A step's attempt as a `Task` for the executor: its `with` and `env` rendered, the run's
environment under it; and the step's cache: its key looked up, its outputs fingerprinted."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .environment import checked_env
from .errors import TemplateError
from .logfiles import file_stem
from .messages import Task
from .model import Node, Plan
from .runstate import NodeRun, RunState
from .runtime import Renderer

if TYPE_CHECKING:
    from .cache import CacheBackend


def env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def shell_fields(node: Node) -> frozenset[str]:
    if node.uses == "shell":
        return frozenset({"cmd"})
    return frozenset()


class TaskMaker:
    """Makes the tasks of one run."""

    def __init__(
        self,
        plan: Plan,
        run_id: str,
        run_dir: str,
        secrets: Mapping[str, str],
        grace: float,
        trace: str | None = None,
    ) -> None:
        self.plan = plan
        self.run_id = run_id
        self.grace = grace
        self.trace = trace  # `--otlp`: TRACE_ID-FLAGS, for the attempts' $TRACEPARENT
        env_base = {**plan.env, **secrets}
        self.step_env_base = {k: str(v) for k, v in env_base.items()}
        self.scratch_dir = f"{run_dir}/scratch"

    def render(self, renderer: Renderer, nr: NodeRun, extra: Mapping[str, Any]) -> tuple[Any, Any]:
        """The attempt's `with` and `env`, rendered (`extra`: the `run` names)."""
        node = nr.node
        with_ = renderer.value(node.with_, node.scope, extra, shell_fields(node))
        return with_, checked_env(renderer.value(dict(node.env), node.scope, extra))

    def make(self, nr: NodeRun, with_: Any, env: Mapping[str, Any]) -> Task:
        node = nr.node
        return Task(
            attempt_id=0,
            node_id=node.id,
            uses=node.uses or "noop",
            with_=with_,
            env={**self.step_env_base, **{k: env_text(v) for k, v in env.items()}}
            if env
            else self.step_env_base,
            timeout=node.timeout,
            log_path=nr.log_path,
            run_id=self.run_id,
            attempt=0,
            key=node.key,
            item=node.item,
            pipeline_dir=self.plan.folder_of(node),
            scratch_dir=f"{self.scratch_dir}/{file_stem(node.id)}",
            resources=dict(node.resources) or None,
            grace=self.grace,
            trace=self.trace,
        )

    def plain(self, nr: NodeRun) -> Task:
        """The task of a step with nothing left to render."""
        return self.make(nr, nr.node.with_, nr.node.env)


def cache_key_problem(
    state: RunState, nr: NodeRun, with_: Any, render: Callable[[Any], Any]
) -> str | None:
    """Render the step's cache globs and compute its key; the problem, if that fails."""
    from .cache import MissingInput, cache_key, render_globs

    node = nr.node
    assert node.cache is not None
    needs = {n: state.runs[n].output for n in node.needs if n in state.runs}
    try:
        nr.cache_globs = render_globs(node.cache, render)
        nr.cache_key = cache_key(
            node.uses or "", with_, needs, nr.cache_globs, state.plan.folder_of(node)
        )
    except TemplateError as exc:
        return f"template error: {exc}"
    except (MissingInput, ValueError) as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read an input file: {exc}"
    return None


def cache_hit(nr: NodeRun, cache: CacheBackend, use_cache: bool, pipeline_dir: str) -> bool:
    """Look the step up (its key computed); on a hit it takes the stored output."""
    from .cache import outputs_match

    assert nr.cache_key is not None and nr.cache_globs is not None
    hit = cache.get(nr.cache_key) if use_cache else None
    if hit is None or not outputs_match(hit[1], nr.cache_globs, pipeline_dir):
        return False
    nr.take(hit[0], json.dumps(hit[0]), hit[2])
    nr.cache_files = hit[1]
    nr.reused = True
    nr.started = nr.finished = time.time()
    return True


def record_outputs(nr: NodeRun, pipeline_dir: str) -> None:
    """Hash the declared outputs of a success, for its cache entry (none if unreadable)."""
    if not nr.cache_key or nr.cache_globs is None:
        return
    from .cache import fingerprint

    try:
        nr.cache_files = fingerprint(nr.cache_globs.outputs, pipeline_dir)
    except OSError:
        nr.cache_key = None
