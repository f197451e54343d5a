"""Stop signals for the scheduler's loop: handlers that note SIGINT/SIGTERM/SIGHUP and wake the
loop through a pipe (signal.set_wakeup_fd), and their removal at the end of the run."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any


def install(wake_w: int, noted: list[int], on_second: Callable[[], None]) -> dict[int, Any]:
    """Note each stop signal in `noted`; call `on_second` from the handler when one comes a
    second time (it must be quick: it kills the workers).  The previous handlers, to restore."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous

    def handler(signum: int, frame: Any) -> None:
        noted.append(signum)
        if len(noted) >= 2:
            on_second()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    previous[-1] = signal.set_wakeup_fd(wake_w)
    return previous


def restore(previous: dict[int, Any]) -> None:
    if not previous:
        return
    signal.set_wakeup_fd(previous.pop(-1))
    for sig, old in previous.items():
        signal.signal(sig, old)


def drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def wake_pipe() -> tuple[int, int]:
    """The pipe a signal handler writes to wake the scheduler's wait (both ends non-blocking)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    return wake_r, wake_w


def hard(noted: list[int]) -> bool:
    """A second stop signal, of any kind, means stop now: a second Ctrl-C, or the SIGTERM
    a CI system sends when its SIGINT did not end the job soon enough (GitHub Actions
    SIGKILLs the tree 2.5 s later; with a long `--grace` the first signal's cancellation
    would still be waiting, and nothing of it would be recorded)."""
    return len(noted) >= 2
