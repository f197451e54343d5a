"""A worker's completions sent in batches (journal.py, a speed shortcut): each one is in the
journal from the moment it exists until it is in the pipe, so a worker that dies loses none of
the completions it had not sent yet.  The runner's side of it runs through the `runner` command
in tests/faults/test_worker_faults.py (cheap steps returned just before one kills its worker)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline_runner import journal, wire
from pipeline_runner.messages import Completion, Started

pytestmark = pytest.mark.skipif(journal.create() is None, reason="no memory files here")


def done(attempt_id: int) -> Completion:
    return Completion(attempt_id, True, str(attempt_id), None, "", "", None, 1.0, 2.0, "w0")


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@contextlib.contextmanager
def outbox_kept() -> Iterator[tuple[Any, int, journal.BatchedOutbox]]:
    """A worker's outbox with its journal, in this process: the pipe's reading end, the
    journal (the runner's descriptor) and the outbox; no send by age meanwhile."""
    parent, child = multiprocessing.Pipe()
    kept = journal.create()
    assert kept is not None
    fd = journal.open_for_worker(os.getpid(), kept)
    assert fd is not None
    journal.DELAY, delay = 60.0, journal.DELAY
    try:
        yield parent, kept, journal.BatchedOutbox(child, fd)
    finally:
        journal.DELAY = delay
        os.close(fd)
        os.close(kept)


def test_completions_wait_in_the_journal_and_go_to_the_pipe_together() -> None:
    with outbox_kept() as (parent, kept, outbox):
        assert outbox.complete(done(1), idle=False)
        assert outbox.complete(done(2), idle=False)
        assert not readable(parent.fileno())  # nothing sent yet...
        assert journal.read(kept) == [done(1), done(2)]  # ...but kept
        assert outbox.complete(done(3), idle=True)  # about to wait for work: all go
        reader = wire.FrameReader(parent.fileno())
        assert reader.read() == [done(1), done(2), done(3)]
        assert journal.read(kept) == []  # in the pipe, so no longer kept
        assert outbox.complete(done(4), idle=False)
        assert outbox.started(Started(5, 4242, "1"))  # at once, after the completion before it
        assert reader.read() == [done(4), Started(5, 4242, "1")]


def test_a_worker_killed_with_completions_unsent_leaves_them_in_the_journal() -> None:
    kept = journal.create()
    assert kept is not None
    parent, child = multiprocessing.Pipe()
    pid = os.fork()
    if pid == 0:  # the worker: two completions kept, then killed before it sends them
        fd = journal.open_for_worker(os.getppid(), kept)
        journal.DELAY = 60.0
        outbox = journal.BatchedOutbox(child, fd) if fd is not None else None
        if outbox is not None:
            outbox.complete(done(1), idle=False)
            outbox.complete(done(2), idle=False)
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    try:
        assert not readable(parent.fileno())
        assert journal.read(kept) == [done(1), done(2)]
    finally:
        os.close(kept)


def test_a_message_cut_short_is_left_out() -> None:
    kept = journal.create()
    assert kept is not None
    try:
        os.write(kept, journal.entry(done(1)) + journal.entry(done(2))[:-3])
        assert journal.read(kept) == [done(1)]
    finally:
        os.close(kept)


def test_after_a_send_only_the_new_completions_are_kept() -> None:
    """Entries are written over the ones already sent: the journal holds the new ones only,
    never an older one after them."""
    with outbox_kept() as (parent, kept, outbox):
        long = [done(i)._replace(output_json=f'"{"x" * 500}"') for i in (1, 2, 3)]
        for one in long:
            assert outbox.complete(one, idle=False)
        assert journal.read(kept) == long
        assert outbox.flush()
        assert wire.FrameReader(parent.fileno()).read() == long
        again = long[0]._replace(attempt_id=4)  # as long as the first: the second follows it
        assert outbox.complete(again, idle=False)
        assert journal.read(kept) == [again]


def test_a_completion_too_big_to_keep_is_sent_at_once() -> None:
    with outbox_kept() as (parent, kept, outbox):
        assert outbox.complete(done(1), idle=False)
        big = done(2)._replace(output_json=f'"{"x" * journal.SIZE}"')
        assert outbox.complete(big, idle=False)
        assert readable(parent.fileno())  # not kept, so sent now (with the one before it)
        assert parent.recv() == [done(1), big]
        assert journal.read(kept) == []
