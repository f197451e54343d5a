"""Imported once by the forkserver, so every worker forked from it starts warm: the worker
loop, the built-in plugins and the entry-point registry are already loaded."""

from ..builtins import noop, python, shell  # noqa: F401
from ..plugins import registry
from ..worker import worker_main  # noqa: F401

for _name in ("noop", "python", "shell"):
    registry().load(_name)
