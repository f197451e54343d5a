"""The wire format between the runner and its worker processes (and a Dask worker's hosts).

Messages are plain data (`Task`, `Completion`, `Started`, or None to end a worker), sent over a
multiprocessing `Connection` or something written in its framing.  `encode` turns the messages
one side has to send into the byte strings to write; `decode` turns what `Connection.recv` read
back into the messages.  A receiver decodes both forms below, so the two ends never have to
agree on the switch.

The speed shortcut: messages that go together (a batch of tasks, a `Started` with the
completions before it) travel as ONE plain pickle of a list, made with `pickle.dumps` (one
pipe write and one wake-up of the reader for many messages; `Connection.send` would build a
multiprocessing ForkingPickler, a copy of its reducer table, per message, and nothing sent here
needs those reducers).  `RUNNER_NO_SHORTCUTS=1` in the environment turns it off: each message
is then sent alone, pickled as `Connection.send` pickles it, which is the plain path the
shortcut must agree with.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Sequence
from typing import Any

from . import shortcuts

# A worker's last message when it ends by choice (a step left threads running in it): the tasks
# still queued on it never started.  A plain string, so that it needs no class of its own.
RETIRE = "retire"
# What one read asks for: a pipe's whole buffer (64 KiB on Linux), and below the size from
# which the allocator maps fresh memory for each read's buffer (a 1 MiB read cost 20 us for a
# 300-byte message, a 64 KiB one under 2 us).  A longer message takes several reads.
READ_SIZE = 1 << 16


def encode(messages: Sequence[Any]) -> list[bytes]:
    """The payloads (unframed) that carry `messages`, in order."""
    if shortcuts.enabled():
        return [pickle.dumps(list(messages), pickle.HIGHEST_PROTOCOL)]
    from multiprocessing.reduction import ForkingPickler

    return [bytes(ForkingPickler.dumps(message)) for message in messages]


def encode_end() -> bytes:
    """The payload that ends a worker."""
    return pickle.dumps(None, pickle.HIGHEST_PROTOCOL)


def decode(received: Any) -> list[Any]:
    """The messages in what `Connection.recv` returned: a batch, or one message alone."""
    if isinstance(received, list):
        return received
    return [received]


def frame(payload: bytes) -> bytes:
    """A payload as `Connection.recv` (and `FrameReader`) reads it: a 4-byte big-endian length
    (or -1 and an 8-byte length past 2 GiB), then the bytes."""
    if len(payload) > 0x7FFFFFFF:
        return struct.pack("!iQ", -1, len(payload)) + payload
    return struct.pack("!i", len(payload)) + payload


class FrameReader:
    """Every whole message a worker's pipe holds, with one read (a shortcut for reading them
    one `Connection.recv` at a time: that is a poll and two reads per message, and a worker
    writes each completion alone).  The framing is `Connection`'s: a 4-byte big-endian length,
    or -1 and an 8-byte length past 2 GiB, then the payload.  Call `read` only when the pipe is
    readable; a message cut by the read waits in the buffer for the rest."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def read(self) -> list[Any]:
        """The messages now complete (decoded, in order); EOFError when the writer is gone."""
        chunk = os.read(self.fd, READ_SIZE)
        if not chunk:
            raise EOFError
        buf = self.buffer
        buf += chunk
        out: list[Any] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (size,) = struct.unpack_from("!i", buf, pos)
            head = 4
            if size == -1:
                if end - pos < 12:
                    break
                (size,) = struct.unpack_from("!Q", buf, pos + 4)
                head = 12
            if end - pos - head < size:
                break
            start = pos + head
            out.extend(decode(pickle.loads(buf[start : start + size])))
            pos = start + size
        del buf[:pos]
        return out
