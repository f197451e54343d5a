"""The records of every node that the readers get when a run ends (`RunResult.nodes`).

The plain version makes them all at once: a frozen `StepChanged` per node in a dict.  For a
100,000-step run that is about 35 MB, made when the run's memory is at its peak.  One shortcut
(shortcuts.py): a read-only mapping over the nodes' run state that makes a node's record when
it is read, and keeps none.  It gives the same records as the dict: once the run has ended, no
node changes any more.  (The records a run starts with, `RunInfo.nodes`, stay a dict: they are
snapshots of nodes that change afterwards.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from . import shortcuts
from .changes import StepChanged
from .runstate import NodeRun


class NodeRecords(Mapping[str, StepChanged]):
    """Each node's record as it is now, made when read, in the order of `runs`."""

    __slots__ = ("_runs",)

    def __init__(self, runs: Mapping[str, NodeRun]) -> None:
        self._runs = runs

    def __getitem__(self, nid: str) -> StepChanged:
        nr = self._runs[nid]
        return nr.change(nr.state)

    def __iter__(self) -> Iterator[str]:
        return iter(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, nid: object) -> bool:
        return nid in self._runs


def node_records(runs: Mapping[str, NodeRun]) -> Mapping[str, StepChanged]:
    """The records of the nodes in `runs`, in their order (see the module's docstring)."""
    if shortcuts.enabled():
        return NodeRecords(runs)
    return MappingProxyType({nid: nr.change(nr.state) for nid, nr in runs.items()})
