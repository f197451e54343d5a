"""A pool worker's completions sent in batches, kept safe in a journal until they are sent.

The plain way (`worker._Outbox`): each completion is written to the worker's pipe before the
worker goes on, because a step that kills its worker (os._exit, a segfault, the OOM killer) must
not take the results of the steps that already returned with it.  That is one pipe write, one
wake-up of the runner and one turn of its loop (a store transaction) per completion.

The speed shortcut (`BatchedOutbox`, off with PIPELINE_RUNNER_NO_SHORTCUTS=1): each completion is
appended to the worker's journal, a memory file the runner made for it (`os.memfd_create`), and
the completions go to the pipe together: when the worker is about to wait for work, when 32 are
waiting, or at most `DELAY` after the first (a thread sends them while a long step runs after
short ones), as one pickle of the list.  A write to the journal survives its writer as a pipe
write does, and wakes nobody; an entry is the completion's fields in `marshal`'s format (five
times cheaper to make than a pickle of it alone).  The worker maps the journal's first `SIZE`
bytes into its memory and writes entries there, with no system call: an entry's bytes first,
then a zero length after them (where the next one goes), its own length last, so that a death
at any point leaves whole entries and then a zero length, where `read` stops.  An entry that
does not fit is sent at once instead.  After each send the journal is emptied (a zero length
at its start).  When
a worker dies, the runner reads what its pipe still held and then the journal (`read`): the
completions of attempts it still counts as queued are applied as if they had come through the
pipe, so the head attempt that died is the only one lost, as on the plain path.  A `Started`
goes at once, with the completions before it.
"""

from __future__ import annotations

import marshal
import mmap
import os
import pickle
import struct
import threading
import time
from typing import Any

from . import wire
from .messages import Completion, Started

DELAY = 0.002  # seconds a completion may wait for company before it is sent
MAX_BATCH = 32  # completions sent together at most
SIZE = 1 << 16  # bytes of the journal the worker maps (32 no-op completions take 2 KiB)
_END = bytes(4)  # a zero length: no entry from here on


def create() -> int | None:
    """A new, empty journal (a file descriptor of the runner's), or None where memory files are
    not available (the worker then writes every completion to its pipe, the plain way)."""
    make = getattr(os, "memfd_create", None)
    if make is None:
        return None
    try:
        return int(make("runner-journal", getattr(os, "MFD_CLOEXEC", 0)))
    except OSError:
        return None


def open_for_worker(owner: int, fd: int) -> int | None:
    """The worker's own descriptor of the runner's journal `fd` (through /proc, which works for
    a worker forked directly and for one from the forkserver alike), or None."""
    try:
        return os.open(f"/proc/{owner}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None


def entry(done: Completion) -> bytes:
    """A completion as the journal keeps it: a 4-byte big-endian length, then its fields."""
    fields = marshal.dumps(done[:])  # a plain tuple: marshal takes no named tuple
    return len(fields).to_bytes(4, "big") + fields


def _map(fd: int) -> mmap.mmap | None:
    """The journal's first SIZE bytes mapped into this process, shared with the file (a store
    there is in the file at once, and stays there when this process dies), or None."""
    try:
        if os.fstat(fd).st_size < SIZE:
            os.ftruncate(fd, SIZE)
        return mmap.mmap(fd, SIZE)
    except (OSError, ValueError):
        return None


def read(fd: int) -> list[Completion]:
    """The completions a dead worker's journal holds, in order (an entry its death cut short is
    left out: it was never whole, so never sent)."""
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 16, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    data = b"".join(chunks)
    out: list[Completion] = []
    pos = 0
    while len(data) - pos >= 4:
        (size,) = struct.unpack_from("!i", data, pos)
        start = pos + 4
        if size < 0 or len(data) - start < size:
            break
        try:
            out.append(Completion(*marshal.loads(data[start : start + size])))
        except Exception:  # a torn write: nothing after it is whole either
            break
        pos = start + size
    return out


class BatchedOutbox:
    """`worker._Outbox`'s interface (started, complete, flush), sending completions in batches
    and keeping each in the journal `fd` from the moment it exists until it is in the pipe."""

    def __init__(self, conn: Any, fd: int) -> None:
        self.conn = conn
        self.fd = fd
        self.unsent: list[Any] = []  # messages not sent yet, in order
        self.first = 0.0  # when the oldest of them was made
        self.broken = False
        self.end = 0  # where the next entry goes (0: the journal holds none)
        self.map = _map(fd)  # None: nothing can be kept, every completion is sent at once
        self.lock = threading.Condition()
        threading.Thread(target=self._flusher, name="runner-outbox", daemon=True).start()

    def started(self, message: Started) -> bool:
        with self.lock:
            self.unsent.append(message)
            return self._flush()

    def complete(self, done: Completion, idle: bool = True, retire: bool = False) -> bool:
        """Keep a completion; it is sent now when this worker is about to wait for work
        (`idle`), retires (see wire.RETIRE), or the batch is full or old enough."""
        with self.lock:
            waiting = len(self.unsent)
            now = (
                idle
                or retire
                or waiting + 1 >= MAX_BATCH
                or (waiting > 0 and time.monotonic() - self.first > DELAY)
            )
            if not now:  # it waits: keep it first (a completion sent now needs no keeping)
                now = not self._keep(entry(done))  # not kept: send it now, the plain way
            if not waiting:
                self.first = time.monotonic()
                if not now:  # the flusher sends it if nothing else does first
                    self.lock.notify()
            self.unsent.append(done)
            if retire:
                self.unsent.append(wire.RETIRE)
            return self._flush() if now else not self.broken

    def flush(self) -> bool:
        with self.lock:
            return self._flush()

    def _flush(self) -> bool:
        """Send what waits (the lock held), then empty the journal: it is all in the pipe."""
        if not self.unsent or self.broken:
            self.unsent.clear()
            return not self.broken
        data = wire.frame(pickle.dumps(self.unsent, pickle.HIGHEST_PROTOCOL))
        self.unsent = []
        try:
            view = memoryview(data)
            out = self.conn.fileno()
            while view:
                view = view[os.write(out, view) :]
        except OSError:
            self.broken = True
            return False
        if self.end and self.map is not None:
            self.map[0:4] = _END
            self.end = 0
        return True

    def _keep(self, data: bytes) -> bool:
        """Write an entry to the journal (the lock held); False if it does not fit."""
        journal, start = self.map, self.end
        stop = start + len(data)
        if journal is None or stop + 4 > SIZE:
            return False
        journal[stop : stop + 4] = _END  # a stale entry from before a send must not be read
        journal[start + 4 : stop] = data[4:]
        journal[start : start + 4] = data[:4]  # last: the entry counts once it is whole
        self.end = stop
        return True

    def _flusher(self) -> None:
        """Sends completions that waited DELAY while the worker runs a longer step."""
        with self.lock:
            while True:
                while not self.unsent:
                    self.lock.wait()
                left = self.first + DELAY - time.monotonic()
                if left > 0:
                    self.lock.wait(left)
                    continue
                self._flush()
