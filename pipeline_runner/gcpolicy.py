"""How a `runner` process uses Python's cycle collector.

A command is one short process: nearly everything it makes (the imported modules, the plan, the
run's state) lives until it exits, and what dies goes by reference count, so the collector's
passes find almost nothing and cost time (about 10 ms of the imports of `runner run`, and a few
per cent of a run of small steps).  A command raises the collector's young threshold; the plan
and the run state are frozen out of its sight once built (`for_the_run`); a worker process puts
Python's own thresholds back before it runs the user's steps (`for_steps`).
"""

from __future__ import annotations

import gc

from . import defaults

_ORIGINAL = gc.get_threshold()


def for_a_command() -> None:
    """At the start of a command: collect less often (cycles are still collected)."""
    gc.set_threshold(defaults.GC_YOUNG_OBJECTS, *_ORIGINAL[1:])


def for_the_run() -> None:
    """What is made so far lives as long as the run (called once the plan is built, and again
    once the run state is set up): the collector no longer looks at it."""
    gc.freeze()


def for_steps() -> None:
    """In a worker: the user's code gets the collector as Python sets it up."""
    gc.set_threshold(*_ORIGINAL)
