"""`python`: call a function, `package.module:function`, with args and kwargs.

The folder of the pipeline file the step was written in is first on the import path, so a module
beside that file can be called without installing it.  A function with a parameter named `ctx`
gets the StepContext.

One long-lived worker runs steps of several files (an inlined pipeline in `sub/` beside the
main file), and two folders may each hold a `lib.py`.  So the import path holds one step
folder at a time, and the modules a step imported from its folder are put aside when a step
of another folder comes, and back when a step of that folder comes again (`_enter`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from ..plugins import StepContext


def resolve(call: str, pipeline_dir: str) -> Callable[..., Any]:
    module_name, sep, attr = call.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"call must look like 'package.module:function', got {call!r}")
    _enter(pipeline_dir)
    # The module imported already (every attempt but a module's first): taken as the import
    # system itself takes it (its own check, without the call's layers of machinery).
    obj: Any = sys.modules.get(module_name)
    if obj is None or getattr(getattr(obj, "__spec__", None), "_initializing", False):
        obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{call} is not callable")
    return obj  # type: ignore[no-any-return]


_folder: str | None = None  # the step folder on the import path now
_put_aside: dict[str, dict[str, ModuleType]] = {}  # folder -> its modules, while another's run
_before: frozenset[str] | None = None  # modules loaded before any step imported its own


def _enter(folder: str) -> None:
    """Make `folder` the step folder: first on sys.path (the folder of an earlier step is
    taken off), with the modules imported from it (and only those) in sys.modules."""
    global _folder, _before
    if sys.path[:1] == [folder] and _folder == folder:
        return
    if _before is None:
        _before = frozenset(sys.modules)
    if _folder is not None and _folder != folder:
        _put_aside[_folder] = _take_modules(_folder, _before)
        while _folder in sys.path:
            sys.path.remove(_folder)
    while folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    sys.modules.update(_put_aside.pop(folder, {}))
    _folder = folder


def _take_modules(folder: str, keep: frozenset[str]) -> dict[str, ModuleType]:
    """Remove from sys.modules the modules loaded from `folder` (top-level modules and packages
    directly in it, and their submodules) since `keep` was taken; returns them."""
    tops: set[str] = set()
    for name, module in list(sys.modules.items()):
        if name in keep or "." in name or module is None:
            continue
        where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
        if where and os.path.dirname(os.path.abspath(where)).startswith(folder):
            parent = os.path.dirname(os.path.abspath(where))
            if parent == folder or os.path.dirname(parent) == folder:
                tops.add(name)
    taken = {}
    for name in list(sys.modules):
        if name not in keep and name.partition(".")[0] in tops:
            taken[name] = sys.modules.pop(name)
    return taken


_wants_ctx: dict[Callable[..., Any], bool] = {}


def wants_ctx(func: Callable[..., Any]) -> bool:
    if func not in _wants_ctx:
        try:
            _wants_ctx[func] = "ctx" in inspect.signature(func).parameters
        except (TypeError, ValueError):
            _wants_ctx[func] = False
    return _wants_ctx[func]


class Python:
    """Call a Python function; its return value is the output."""

    summary = "Call a Python function (module:function); its return value is the output."
    schema: Mapping[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["call"],
        "properties": {
            "call": {
                "type": "string",
                "pattern": r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$",
                "description": "The function, as 'package.module:function'.",
            },
            "args": {"type": "array", "description": "Positional arguments."},
            "kwargs": {"type": "object", "description": "Keyword arguments."},
        },
    }

    def run(self, with_: Mapping[str, Any], ctx: StepContext) -> Any:
        func = resolve(with_["call"], str(ctx.pipeline_dir))
        kwargs = dict(with_.get("kwargs") or {})
        if wants_ctx(func):
            kwargs["ctx"] = ctx
        return func(*(with_.get("args") or ()), **kwargs)


plugin = Python()
