"""A warm `runner` for the reference-model test: one process imports the command line and the
engine once, then forks a child for every command, which calls the same `main` the console
script calls, in the command's folder and environment, with its own standard streams. The child
is a fresh process as far as the run goes: its own pid, signal handlers, worker processes, store
connection and exit code; only the ~0.3 s of imports every `runner` start pays is spent once.

Run as a script (by `WarmRunner`): reads one JSON request a line on stdin, answers on stdout
with `PID` when the child starts and `PID EXIT_CODE` when it ends.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any


def _child(request: dict[str, Any], bin_dir: str, protocol: Sequence[IO[bytes]]) -> None:
    """Become `runner ARGS` (never returns: `main` ends the process with its exit code)."""
    for stream in protocol:
        stream.close()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    new = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    streams = [(os.devnull, os.O_RDONLY), (request["stdout"], new), (request["stderr"], new)]
    for fd, (path, flags) in enumerate(streams):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = ["runner", *request["args"]]
    sys.path[0] = bin_dir  # as the console script's: its own folder, not this file's
    from pipeline_runner.cli import main

    sys.exit(main())


def serve(bin_dir: str) -> None:
    # The requests and answers move to other descriptors; 0 and 1 are /dev/null until a child
    # points them at its files, so nothing buffered here is ever inherited.
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    import pipeline_runner.cli  # what every command imports first
    import pipeline_runner.engine  # noqa: F401  (what `run` and `resume` import)

    for line in requests:
        pid = os.fork()
        if pid == 0:
            _child(json.loads(line), bin_dir, (requests, answers))
        answers.write(f"{pid}\n".encode())
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(f"{pid} {os.waitstatus_to_exitcode(status)}\n".encode())
        answers.flush()


class WarmRunner:
    """`runner ARGS` through a warm process (see the module's text); started with `env`, the
    environment every command shares but for what each request adds."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.streams = Path(tempfile.mkdtemp(prefix="runner-warm-"))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(Path(sys.executable).parent)],
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,  # unbuffered: `select` sees every answer line not read yet
        )

    def __call__(
        self, *args: str, cwd: Path, env: Mapping[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        out, err = self.streams / "stdout", self.streams / "stderr"
        request = {"args": list(args), "cwd": str(cwd), "env": dict(env)}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        line = json.dumps({**request, "stdout": str(out), "stderr": str(err)}) + "\n"
        self.proc.stdin.write(line.encode())
        pid = int(self._answer(self.proc.stdout, 60))
        try:
            code = int(self._answer(self.proc.stdout, timeout).split()[1])
        except subprocess.TimeoutExpired:
            os.kill(pid, 9)
            raise
        return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())

    def _answer(self, stream: IO[bytes], timeout: float) -> str:
        ready, _, _ = select.select([stream], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired(["runner"], timeout)
        line = stream.readline()  # unbuffered: reads up to the newline, no further
        if not line:
            raise RuntimeError(f"the warm runner ended (exit {self.proc.wait()})")
        return line.decode()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        shutil.rmtree(self.streams, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1])
