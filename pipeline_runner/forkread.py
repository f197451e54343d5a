"""Reading a store in two processes at once: a speed shortcut of `runner show` (shortcuts.py).

A big run's rows are read in chunks, each one query whose work is SQLite's (showfast.py), so
one CPU does it all.  With two, a forked child with a connection of its own reads chunks too:
this process takes them from the front and the child from the back until they meet (a lock on a
file guards the two counters they share), so neither waits long for the other when one CPU is
slower.  (Threads would not do: two connections of one process contend for SQLite's memory
lock, and took twice the CPU time.)  The child sends a few facts about what it read through a
pipe and keeps its text; once this process has written its own part, it tells the child to
write its part to the same output, the way this process would have (handing 28 MB back through
a pipe or a file took longer than making them).

The two parts must show the store as one moment left it: each process reads in one read
transaction, and `PRAGMA data_version`, read before the caller listed the chunks and again
after the child has read, tells whether another connection committed in between.  If one did,
or the child failed to read, the child writes nothing and the caller reads the store again in
one process.  The child never touches this process's connection (SQLite forbids using a
connection across a fork); it is idle, outside any transaction, while the child runs.
"""

from __future__ import annotations

import fcntl
import marshal
import mmap
import os
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import EXIT_BROKEN_PIPE, EXIT_INTERNAL, RunnerError
from .store import Store, open_store

Item = TypeVar("Item")
Got = TypeVar("Got")


class ChildFailed(RunnerError):
    """The second reader failed while writing its half: the output is incomplete."""

    exit_code = EXIT_INTERNAL


def two_cpus() -> bool:
    """Whether this process may run on two CPUs at once, and can fork."""
    if not hasattr(os, "fork"):
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except AttributeError:  # not Linux
        return (os.cpu_count() or 1) >= 2


class Child:
    """The forked reader, waiting to be told to write its half (or not)."""

    def __init__(self, pid: int, go: int) -> None:
        self.pid = pid
        self.go: int | None = go  # the pipe it waits on

    def write(self, lead: str) -> None:
        """Have it write its half, `lead` first, and wait until it has: BrokenPipeError when
        the output's reader went away, ChildFailed when it failed otherwise."""
        try:
            os.write(self._go(), b"w" + lead.encode("utf-8", "surrogatepass"))
        except BrokenPipeError:
            pass  # it is gone: its exit code tells
        code = self.discard()
        if code == EXIT_BROKEN_PIPE:
            raise BrokenPipeError
        if code != 0:
            raise ChildFailed(
                f"runner show: the second reading process failed while writing (exit {code}): "
                "the output is incomplete; PIPELINE_RUNNER_NO_SHORTCUTS=1 reads in one process"
            )

    def discard(self) -> int:
        """Let it go without writing (if not told otherwise yet) and reap it: its exit code."""
        if self.go is not None:
            os.close(self.go)
            self.go = None
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def _go(self) -> int:
        assert self.go is not None, "a child is told once"
        return self.go


@dataclass(frozen=True)
class Reader(Generic[Item, Got]):
    """What the two processes do: `read(store, item)`; the child sends `facts_of` each of its
    results (what marshal can carry) and, when told, calls `write(its results, lead)`."""

    read: Callable[[Store, Item], Got]
    facts_of: Callable[[Got], Any]
    write: Callable[[list[Got], str], None]


@dataclass
class Halves(Generic[Got]):
    """What two processes read: this one's results (of the first items), the facts of the
    child's (of the others, in order), and the child."""

    mine: list[Got]
    facts: list[Any]
    child: Child


class _Counters:
    """The next item from the front and the item after the last from the back, shared by
    the two processes; a lock on a file lets one of them at a time take an item (a POSIX
    record lock: the kernel releases it if its holder dies, so the other never waits on a
    dead process)."""

    def __init__(self, count: int) -> None:
        self.shared = mmap.mmap(-1, 16)  # anonymous: shared with a forked child
        self.shared[:] = struct.pack("<qq", 0, count)
        self.lock = _scratch_file()

    def take(self, front: bool) -> int | None:
        """An item's index not taken yet, from the front or the back; None: none left."""
        fcntl.lockf(self.lock, fcntl.LOCK_EX)
        try:
            first, end = struct.unpack("<qq", self.shared[:16])
            if first >= end:
                return None
            taken: int = first if front else end - 1
            self.shared[:16] = struct.pack("<qq", first + front, end - (not front))
            return taken
        finally:
            fcntl.lockf(self.lock, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.lock)
        self.shared.close()


def _scratch_file() -> int:
    """A file of no content to lock, in memory where the system can."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("runner-show", os.MFD_CLOEXEC)
    import tempfile

    fd, name = tempfile.mkstemp(prefix="runner-show-")
    os.unlink(name)
    return fd


def read_in_two(
    store: Store, items: Sequence[Item], reader: Reader[Item, Got], version: int
) -> Halves[Got] | None:
    """`reader.read` the items from the front here and those from the back in a forked child
    (its own store), each process in one read transaction.  None (and the child gone) when it
    failed to read or when `store` saw another connection commit since it read `version`
    (`store.data_version()`).  The caller then ends the child with `write` or `discard`."""
    for stream in (sys.stdout, sys.stderr):  # nothing buffered here is written twice
        stream.flush()
    try:
        counters = _Counters(len(items))
    except OSError:
        return None
    try:
        return _fork(store, items, reader, version, counters)
    finally:
        counters.close()


def _fork(
    store: Store,
    items: Sequence[Item],
    reader: Reader[Item, Got],
    version: int,
    counters: _Counters,
) -> Halves[Got] | None:
    try:
        facts_in, facts_out = os.pipe()
        go_in, go_out = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        for fd in (facts_in, facts_out, go_in, go_out):
            os.close(fd)
        return None
    if pid == 0:  # the child: never returns
        os.close(facts_in)
        os.close(go_out)
        _child(store, items, reader, counters, facts_out, go_in)
    os.close(facts_out)
    os.close(go_in)
    child = Child(pid, go_out)
    try:
        mine = []
        with store.snapshot():
            while (index := counters.take(front=True)) is not None:
                mine.append(reader.read(store, items[index]))
        with open(facts_in, "rb", closefd=False) as pipe:
            data = pipe.read()
    except BaseException:
        child.discard()
        raise
    finally:
        os.close(facts_in)
    if not data or store.data_version() != version:
        child.discard()
        return None
    return Halves(mine, marshal.loads(data), child)


def _child(
    store: Store,
    items: Sequence[Item],
    reader: Reader[Item, Got],
    counters: _Counters,
    facts_out: int,
    go_in: int,
) -> None:
    """Read items from the back with a new connection, send their facts, wait to be told,
    write or not, and exit: 0 when all went well.  Nothing else of this process runs in the
    child (no cleanup, no buffered output flushed twice)."""
    code = 1
    try:
        own = open_store(store.state_dir, create=False)
        got = []
        with own.snapshot():
            while (index := counters.take(front=False)) is not None:
                got.append(reader.read(own, items[index]))
        got.reverse()
        with open(facts_out, "wb") as pipe:
            pipe.write(marshal.dumps([reader.facts_of(one) for one in got]))
        with open(go_in, "rb") as pipe:
            told = pipe.read()
        if told[:1] == b"w":
            reader.write(got, told[1:].decode("utf-8", "surrogatepass"))
        code = 0
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE
    finally:
        os._exit(code)
