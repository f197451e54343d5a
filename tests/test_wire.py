"""The wire format between the runner and its workers, with its speed shortcut (several messages
in one plain pickle) on, and off with PIPELINE_RUNNER_NO_SHORTCUTS=1 (one pickle per message): a
pipeline gives the same record both ways."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli

from pipeline_runner import wire
from pipeline_runner.messages import Completion, Started

WritePipeline = Callable[..., Path]

MESSAGES = [
    Started(1, 4242, "123"),
    Completion(1, True, '"x"', None, "", "", None, 1.0, 2.0, "w0"),
]


@pytest.mark.parametrize(("switch", "payloads"), [("", 1), ("1", 2)])
def test_the_switch_chooses_one_batch_or_one_pickle_per_message(
    monkeypatch: pytest.MonkeyPatch, switch: str, payloads: int
) -> None:
    monkeypatch.setenv("PIPELINE_RUNNER_NO_SHORTCUTS", switch)
    encoded = wire.encode(MESSAGES)
    assert len(encoded) == payloads
    received = [m for payload in encoded for m in wire.decode(pickle.loads(payload))]
    assert received == MESSAGES


LIB = """
def double(x):
    return x * 2

def fail():
    raise ValueError("no")
"""

PIPELINE = """
version: 1
name: wire
steps:
  - {id: a, uses: python, with: {call: 'lib:double', args: [1]}}
  - {id: b, uses: python, needs: a, with: {call: 'lib:double', args: ["{{ steps.a.output }}"]}}
  - {id: c, uses: python, needs: b, with: {call: 'lib:double', args: [3]}}
  - {id: d, uses: shell, needs: c, with: {cmd: "echo d; echo err >&2"}}
  - {id: bad, uses: python, retries: {max: 1, delay: 10ms}, with: {call: 'lib:fail'}}
  - {id: never, uses: noop, needs: bad}
  - id: many
    for_each: [1, 2, 3, 4, 5, 6, 7, 8]
    uses: python
    with: {call: 'lib:double', args: ["{{ item }}"]}
"""


def test_a_pipeline_gives_the_same_record_with_and_without_the_shortcuts(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(PIPELINE, files={"lib.py": LIB})
    seen = []
    for switch in ("0", "1"):
        report = tmp_path / f"out{switch}.json"
        result = run_cli(
            "run",
            str(path),
            "--workers",
            "2",
            "--json",
            str(report),
            env={"PIPELINE_RUNNER_NO_SHORTCUTS": switch},
        )
        assert result.code == 1, result.output
        steps = json.loads(report.read_text())["steps"]
        seen.append(
            sorted((s["id"], s["state"], s["attempts"], s["output"], s["error"]) for s in steps)
        )
    assert seen[0] == seen[1]
    record = {row[0]: row for row in seen[0]}
    assert record["b"][3] == 4 and record["d"][3] == "d" and record["many.7"][3] == 16
    assert record["bad"][1:3] == ("failed", 2) and record["never"][1] == "upstream_failed"


def test_the_frame_reader_reads_what_connection_wrote_however_it_is_cut() -> None:
    """Messages of every size (one past a pipe's buffer), written by a real Connection, come
    back whole and in order from FrameReader, whatever the reads' boundaries."""
    import multiprocessing
    import os
    import threading

    from pipeline_runner.wire import FrameReader, encode

    # Never a list: a list is a batch (decode's one rule), and no message is one.
    messages = [("small",), b"x" * 200_000, {"n": list(range(1000))}, "last"]
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)

    def write() -> None:
        for message in messages:
            for payload in encode([message]):
                writer_end.send_bytes(payload)
        writer_end.close()

    writer = threading.Thread(target=write)
    writer.start()
    reader = FrameReader(reader_end.fileno())
    got: list[object] = []
    try:
        while True:
            os.set_blocking(reader_end.fileno(), True)
            got.extend(reader.read())
    except EOFError:
        pass
    writer.join()
    assert got == messages
    assert reader.buffer == bytearray()


@pytest.mark.parametrize("switch", ["", "1"])
def test_completions_read_together_all_come_once_in_order_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, switch: str
) -> None:
    """The read side's shortcut (the runner waits a little for completions to gather while the
    worker has more queued) loses none, repeats none, and never waits past the timeout."""
    import time

    from pipeline_runner.executors.process import GATHER_SECONDS, ProcessExecutor
    from pipeline_runner.messages import Task

    monkeypatch.setenv("PIPELINE_RUNNER_NO_SHORTCUTS", switch)
    executor = ProcessExecutor(1, [])
    assert executor.gathers is (switch == "")

    def task(i: int) -> Task:
        log, scratch = str(tmp_path / f"{i}.log"), str(tmp_path / "scratch")
        return Task(
            i, f"s{i}", "noop", None, {}, None, log, "r", 1, None, None, str(tmp_path), scratch
        )

    executor.start()
    try:
        executor.submit([task(i) for i in range(1, 41)])
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while len(seen) < 40 and time.monotonic() < deadline:
            began = time.monotonic()
            events = executor.wait(0.0005, None)
            # The pause is bounded by the timeout given (and the poll's millisecond rounding).
            assert time.monotonic() - began < 0.0005 + GATHER_SECONDS + 0.5
            seen += [e.attempt_id for e in events if isinstance(e, Completion)]
        assert seen == list(range(1, 41))
    finally:
        executor.close()
