"""Second-round scenarios (issue 14) about what the runner writes and prints: report files that
are not regular files (37), report destinations that cannot be written (47), secrets in run-time
error messages (40), in their repr() forms (41) and inside numbers and timestamps (42), and
untrusted text echoed to a terminal or a CI log (44)."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback
from faults_support import run_id_of

WritePipeline = Callable[..., Path]

ONE_STEP = """
version: 1
name: leak
steps:
  - id: a
    uses: python
    with: {call: "lib:touch", args: ["ran.txt"]}
"""
LIB = """
import pathlib

def touch(name):
    pathlib.Path(name).write_text("ran")
    return "done"
"""


def _read_fifo(path: Path, into: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(path, "rb") as f:
            into.append(f.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


# -- 37: report files that are not regular files --------------------------------------------------


@pytest.mark.fault(37)
def test_reports_write_through_symlinks_fifos_and_devices_in_place(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(ONE_STEP, files={"lib.py": LIB})
    target = tmp_path / "real.json"
    target.write_text("old")
    (tmp_path / "link.json").symlink_to(target)
    (tmp_path / "dangling.xml").symlink_to(tmp_path / "made.xml")
    os.mkfifo(tmp_path / "fifo.trace")
    os.mkfifo(tmp_path / "fifo.events")
    got: list[bytes] = []
    got_events: list[bytes] = []
    readers = [
        _read_fifo(tmp_path / "fifo.trace", got),
        _read_fifo(tmp_path / "fifo.events", got_events),
    ]
    result = run_cli(
        "run",
        str(path),
        "--progress",
        "plain",
        "--json",
        "link.json",
        "--junit",
        "dangling.xml",
        "--trace",
        "fifo.trace",
        "--events",
        "fifo.events",
    )
    assert result.code == 0, result.output
    for reader in readers:
        reader.join(30)
    # The symlink stays a symlink; its target got the report, written whole.
    assert (tmp_path / "link.json").is_symlink()
    assert json.loads(target.read_text())["status"] == "succeeded"
    assert (tmp_path / "dangling.xml").is_symlink()
    assert (tmp_path / "made.xml").read_text().startswith("<?xml")
    # The FIFOs stay FIFOs, and their readers got the reports.
    for name in ("fifo.trace", "fifo.events"):
        assert stat.S_ISFIFO((tmp_path / name).lstat().st_mode), name
    assert got and "traceEvents" in json.loads(got[0])
    assert got_events and all(json.loads(line) for line in got_events[0].splitlines())
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


@pytest.mark.fault(37)
def test_a_device_node_is_written_not_replaced(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(ONE_STEP, files={"lib.py": LIB})
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    for option in ("--json", "--junit", "--trace", "--events"):
        result = run_cli("run", str(path), "--progress", "none", option, str(device))
        assert result.code == 0, (option, result.output)
        assert stat.S_ISCHR(device.lstat().st_mode), f"{option} replaced the device node"


@pytest.mark.fault(37)
def test_a_dash_writes_the_report_to_stdout(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(ONE_STEP, files={"lib.py": LIB})
    result = run_cli("run", str(path), "--progress", "none", "--json", "-")
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["status"] == "succeeded"
    assert not (tmp_path / "-").exists()


# -- 47: report destinations checked before the first step ----------------------------------------


@pytest.mark.fault(47)
@pytest.mark.parametrize("option", ["--json", "--junit", "--trace", "--events"])
@pytest.mark.parametrize("where", ["missing_folder", "a_folder", "under_a_file"])
def test_an_unwritable_report_destination_is_refused_before_anything_runs(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, option: str, where: str
) -> None:
    path = write_pipeline(ONE_STEP, files={"lib.py": LIB})
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("x")
    dest = {
        "missing_folder": tmp_path / "nowhere" / "report.out",
        "a_folder": tmp_path / "folder",
        "under_a_file": tmp_path / "plain" / "report.out",
    }[where]
    result = run_cli("run", str(path), "--progress", "plain", option, str(dest))
    assert result.code == 2, result.output
    assert no_traceback(result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and str(dest) in lines[0], result.stderr
    assert not (tmp_path / "ran.txt").exists()
    assert "run " not in result.stdout


# -- 40: secrets in run-time error messages -------------------------------------------------------

TOKEN = "tok-Zq81-secret"

TEMPLATE_ERROR = """
version: 1
name: leak
secrets: [TOKEN]
steps:
  - id: lookup
    uses: python
    with: {call: "os:getcwd", args: ["{{ {'prod': 1}[secrets.TOKEN] }}"]}
  - id: fan
    for_each: "{{ [secrets.TOKEN ~ ' x'] }}"
    uses: noop
  - id: keyed
    for_each: "{{ ['a', secrets.TOKEN] }}"
    uses: noop
"""


@pytest.mark.fault(40)
@pytest.mark.parametrize("progress", ["plain", "rich"])
def test_a_run_time_template_error_never_prints_the_secret(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, progress: str
) -> None:
    path = write_pipeline(TEMPLATE_ERROR)
    env = {"TOKEN": TOKEN, "GITHUB_ACTIONS": "true"}
    result = run_cli("run", str(path), "--progress", progress, "--json", "out.json", env=env)
    assert result.code == 1, result.output
    assert "***" in result.output, result.output
    assert TOKEN not in result.output, result.output
    run_id = run_id_of(result.output)
    show = run_cli("show", run_id, env=env)
    assert TOKEN not in show.output and "***" in show.output, show.output
    # A key that is the secret would make it part of an id, which is never masked: refused.
    assert re.search(r"keyed .*for_each: an item's key holds a secret", show.output), show.output
    assert not [p for p in (tmp_path / "state").rglob("*") if TOKEN in p.name]


# -- 41: repr() forms of a secret ------------------------------------------------------------------

QUOTED = "q\"u'o\\te-41"

REPR_LIB = """
import sys

def leak(value):
    print(repr(value))
    print("%r" % [value])
    print(f"{value!r}", file=sys.stderr)
    return {"r": repr(value), "k": f"{value!r}"}

def boom(value):
    raise KeyError(value)
"""

REPR = """
version: 1
name: leak
secrets: [QUOTED]
steps:
  - id: leak
    uses: python
    with: {call: "lib:leak", args: ["{{ secrets.QUOTED }}"]}
  - id: boom
    uses: python
    with: {call: "lib:boom", args: ["{{ secrets.QUOTED }}"]}
"""


def _repr_forms(value: str) -> list[str]:
    inner = repr(value)[1:-1]
    return [value, inner, json.dumps(inner)[1:-1], json.dumps(value)[1:-1]]


@pytest.mark.fault(41)
def test_the_repr_of_a_secret_is_masked_everywhere(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(REPR, files={"lib.py": REPR_LIB})
    env = {"QUOTED": QUOTED}
    result = run_cli("run", str(path), "--progress", "plain", "--json", "out.json", env=env)
    assert result.code == 1, result.output
    run_id = run_id_of(result.output)
    logs = run_cli("logs", run_id, env=env)
    show = run_cli("show", run_id, "--json", env=env)
    places = {
        "terminal": result.output,
        "--json": (tmp_path / "out.json").read_text(),
        "logs": logs.output,
        "show": show.output,
    }
    for db in (tmp_path / "state").rglob("*"):
        if db.is_file():
            places[str(db)] = db.read_bytes().decode("utf-8", errors="replace")
    for where, text in places.items():
        for form in _repr_forms(QUOTED):
            assert form not in text, (where, form, text[-2000:])
    assert "***" in logs.output and "***" in places["--json"]


# -- 42: secrets inside numbers and timestamps -----------------------------------------------------

NUMBERS_LIB = """
def big():
    return {"n": 123456789, "same": 4567, "text": "pin 4567"}
"""

NUMBERS = """
version: 1
name: leak
secrets: [PIN, EPOCH]
steps:
  - id: big
    uses: python
    with: {call: "lib:big"}
outputs:
  n: "{{ steps.big.output.n }}"
"""


@pytest.mark.fault(42)
def test_masking_never_breaks_numbers_or_structured_reports(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    path = write_pipeline(NUMBERS, files={"lib.py": NUMBERS_LIB})
    # Four digits every timestamp of the next years holds.
    epoch = str(int(time.time()))[:4]
    env = {"PIN": "4567", "EPOCH": epoch}
    result = run_cli(
        "run",
        str(path),
        "--progress",
        "plain",
        "--json",
        "out.json",
        "--events",
        "events.jsonl",
        "--trace",
        "trace.json",
        env=env,
    )
    assert result.code == 0, result.output
    assert no_traceback(result.output)
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["status"] == "succeeded"
    (step,) = summary["steps"]
    # A number merely holding a secret's digits stays that number; one equal to it is masked.
    assert step["output"] == {"n": 123456789, "same": "***", "text": "pin ***"}
    assert summary["outputs"] == {"n": 123456789}
    assert isinstance(summary["started"], float) and epoch in str(summary["started"])
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "run_finished" and epoch in str(events[0]["time"])
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    run_id = run_id_of(result.output)
    show = json.loads(run_cli("show", run_id, "--json", env=env).stdout)
    assert show["run"]["status"] == "succeeded"
    assert show["steps"][0]["output"]["n"] == 123456789


# -- 44: untrusted text echoed to a terminal or a CI log -------------------------------------------

HOSTILE_KEY = '"x\\n::error::pwned\\u001b[2Jz": 1'


# runner's own annotation (`runner validate` annotates in GitHub Actions): its properties are
# escaped (no `:` or `,` of the file's text in them) and its message is one line.
_OWN_ANNOTATION = re.compile(r"::error file=[^:,]*,line=\d+,col=\d+,title=runner validate::")


def _ci_safe(text: str) -> None:
    assert "\x1b" not in text, text
    for line in text.splitlines():
        assert not line.lstrip().startswith("::") or _OWN_ANNOTATION.match(line), line
        assert "##[" not in line, line


@pytest.mark.fault(44)
def test_validate_escapes_what_it_echoes_from_the_file(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        "version: 1\nname: leak\n" + HOSTILE_KEY + '\nsteps: [{id: a, uses: noop, "##[x]": 1}]\n'
    )
    for command in ("validate", "run"):
        result = run_cli(command, str(path), env={"GITHUB_ACTIONS": "true"})
        assert result.code == 2, result.output
        assert "pwned" in result.stderr, result.stderr
        _ci_safe(result.output)


LOG_LIB = """
def shout():
    print("::error::from a step")
    print("  ::add-mask::x")
    print("see ##[warning]this")
    print("\\x1b[2Jcleared")
    return 1
"""


@pytest.mark.fault(44)
def test_runner_logs_neutralises_ci_commands_and_escapes(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: leak
        steps:
          - id: shout
            uses: python
            with: {call: "lib:shout"}
        """,
        files={"lib.py": LOG_LIB},
    )
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 0, result.output
    run_id = run_id_of(result.output)
    env = {"GITHUB_ACTIONS": "true"}
    for args in ((run_id,), (run_id, "shout")):
        logs = run_cli("logs", *args, env=env)
        assert logs.code == 0, logs.output
        assert "from a step" in logs.stdout and "cleared" in logs.stdout
        _ci_safe(logs.stdout)
    # Outside CI the log reads as written, but a terminal still gets no escape sequence.
    plain = run_cli("logs", run_id, "shout")
    assert re.search(r"^::error::from a step$", plain.stdout, re.M), plain.stdout
    assert "\x1b" not in plain.stdout
