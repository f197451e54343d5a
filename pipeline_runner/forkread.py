"""Reading a store in two processes at once: a speed shortcut of `runner show` (shortcuts.py).

A big run's rows are read in chunks, each one query whose work is SQLite's (showfast.py), so
one CPU does it all.  With two, the second half of the chunks is read by a forked child with a
connection of its own while this process reads the first half.  (Threads would not do: two
connections of one process contend for SQLite's memory lock, and took twice the CPU time.)
The child leaves its text, as the bytes to print, in a file in memory, and a few facts about it
in a pipe; the text goes on to the output without passing through Python again (a pipe took
longer to carry 28 MB than the child took to make them).

The two halves must show the store as one moment left it: each process reads its half in one
read transaction, and `PRAGMA data_version`, read before the caller listed the chunks and again
after the child is done, tells whether another connection committed in between.  If one did,
or the child failed, there is no result and the caller reads the store again in one process.
The child never touches this process's connection (SQLite forbids using a connection across a
fork); it is idle, outside any transaction, while the child runs.
"""

from __future__ import annotations

import marshal
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .store import Store, open_store

Item = TypeVar("Item")
Got = TypeVar("Got")


def two_cpus() -> bool:
    """Whether this process may run on two CPUs at once, and can fork."""
    if not hasattr(os, "fork"):
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except AttributeError:  # not Linux
        return (os.cpu_count() or 1) >= 2


@dataclass
class Spilled:
    """The bytes a child left in a file: `size` of them from its start."""

    fd: int
    size: int

    def read(self, start: int = 0) -> bytes:
        return os.pread(self.fd, self.size - start, start) if self.size > start else b""

    def copy_to(self, out: int, start: int = 0) -> None:
        """Write the bytes from `start` on to the file descriptor `out`, by the kernel when
        it can (sendfile), else through this process."""
        offset = start
        try:
            while offset < self.size:
                sent = os.sendfile(out, self.fd, offset, self.size - offset)
                if not sent:
                    raise OSError("sendfile wrote nothing")
                offset += sent
        except OSError as exc:
            if offset != start or getattr(exc, "errno", None) == 32:  # EPIPE: the reader left
                raise
            write_all(out, self.read(start))

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Halves(Generic[Got]):
    """What two processes read: this one's own result, the child's facts and its bytes."""

    mine: Got
    facts: Any
    spilled: Spilled


def read_in_two(
    store: Store,
    items: Sequence[Item],
    read: Callable[[Store, Sequence[Item]], Got],
    pack: Callable[[Got, int], Any],
    version: int,
) -> Halves[Got] | None:
    """`read(store, items[:half])` here and `read(its own store, items[half:])` in a forked
    child, each in one read transaction; the child's result travels as `pack(result, fd)`
    makes it: bytes it writes to the file `fd`, and the facts it returns (what marshal can
    carry).  None when the child failed or when `store` saw another
    connection commit since it read `version` (`store.data_version()`)."""
    half = len(items) // 2
    try:
        spill = _spill_file()
        into, out = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        for fd in (spill, into, out):
            os.close(fd)
        return None
    if pid == 0:  # the child: never returns
        os.close(into)
        _child(store, items[half:], read, pack, spill, out)
    os.close(out)
    try:
        with store.snapshot():
            mine = read(store, items[:half])
        with open(into, "rb", closefd=False) as pipe:
            data = pipe.read()
    except BaseException:
        os.close(spill)
        raise
    finally:
        os.close(into)  # first: a child still writing stops (broken pipe) instead of waiting
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data or store.data_version() != version:
        os.close(spill)
        return None
    facts, size = marshal.loads(data)
    return Halves(mine, facts, Spilled(spill, size))


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the file descriptor `fd`."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _spill_file() -> int:
    """A file for the child's bytes, in memory where the system can."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("runner-show", os.MFD_CLOEXEC)
    import tempfile

    fd, name = tempfile.mkstemp(prefix="runner-show-")
    os.unlink(name)
    return fd


def _child(
    store: Store,
    items: Sequence[Item],
    read: Callable[[Store, Sequence[Item]], Got],
    pack: Callable[[Got, int], Any],
    spill: int,
    out: int,
) -> None:
    """Read `items` with a new connection, leave the bytes in `spill` and the facts in the
    pipe `out`, and exit: 0 when all of it was written.  Nothing else of this process runs in
    the child (no cleanup, no buffered output flushed twice)."""
    code = 1
    try:
        own = open_store(store.state_dir, create=False)
        with own.snapshot():
            got = read(own, items)
        facts = pack(got, spill)
        with open(out, "wb") as pipe:
            pipe.write(marshal.dumps((facts, os.lseek(spill, 0, os.SEEK_CUR))))
        code = 0
    finally:
        os._exit(code)
