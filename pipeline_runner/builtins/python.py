"""`python`: call a function, `package.module:function`, with args and kwargs.

The pipeline file's folder is on the import path, so a module beside the pipeline can be called
without installing it.  A function with a parameter named `ctx` gets the StepContext.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ..plugins import StepContext


def resolve(call: str, pipeline_dir: str) -> Callable[..., Any]:
    module_name, sep, attr = call.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"call must look like 'package.module:function', got {call!r}")
    if pipeline_dir not in sys.path:
        sys.path.insert(0, pipeline_dir)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{call} is not callable")
    return obj  # type: ignore[no-any-return]


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
