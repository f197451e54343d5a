"""One attempt of one step, and the loop of a worker process.

`execute` is the same for every executor: it opens the step's log, runs the plugin, checks the
output (JSON-serialisable, at most 16 MiB) and returns a `Completion`, which is plain data.
Failures travel as text (type, message, formatted traceback), never as exception objects, so an
exception that cannot be pickled cannot break the pool.

`worker_main` is the loop of a process-pool worker: it receives batches of `Task`s on its pipe,
runs them in order and sends one `Completion` per task.  It makes itself a process group leader,
asks the kernel to SIGTERM it when its parent dies (PR_SET_PDEATHSIG; the forkserver, which
exits when the runner does), and on SIGTERM stops the process group of the command it is
running (SIGTERM, SIGKILL after the step's grace period) before it exits, so nothing outlives
the runner.  An attempt in a worker has the process to itself: its `env` is set in os.environ
(on top of the runner's, which every step inherits) and its stdin is /dev/null.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import os
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

if TYPE_CHECKING:
    import logging

from . import defaults, gcpolicy, journal, shortcuts, wire
from .messages import Completion, Started, Task
from .named_outputs import OUTPUT_ENV, OUTPUT_ENVS, OutputsError, SharedFile, file_path, read_file
from .plugins import PluginLoadError, StepContext, StepFailed, registry
from .procs import GRACE, process_start_time, signal_name, stop_group
from .secrets import Masker, StreamMasker
from .tracecontext import traceparent

MAX_OUTPUT_BYTES = defaults.MAX_OUTPUT_BYTES


def death(
    task: Task, reason: str | None, code: int | None, what: str, started: float, worker: str
) -> Completion:
    """The failed attempt of a process that ended before it reported: stopped by the runner
    (`reason` "timeout" or "cancelled") or dead on its own (`code`, negative for a signal)."""
    if reason == "timeout":
        kind, message = "timeout", f"timed out after {task.timeout:g}s; its processes were stopped"
    elif reason == "cancelled":
        kind, message = "cancelled", "cancelled; its processes were stopped"
    elif code is not None and code < 0:
        kind, message = "crash", f"{what} died: killed by {signal_name(-code)}"
    else:
        kind, message = "crash", f"{what} died: exit code {code}"
    return failure(task, kind, message, started, worker)


def failure(
    task: Task,
    kind: str,
    message: str,
    started: float,
    worker: str,
    tb: str = "",
    exit_code: int | None = None,
) -> Completion:
    return Completion(
        task.attempt_id, False, None, kind, message, tb, exit_code, started, time.time(), worker
    )


class _LogWriter(io.RawIOBase):
    """A file-like front for the step's log that masks secrets (for sys.stdout/sys.stderr)."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._write(bytes(data))
        return len(data)


class _StepText(io.TextIOWrapper):
    """A pool worker's sys.stdout and sys.stderr for its attempts, kept from one attempt to the
    next (a speed shortcut: making a text stream costs as much as a no-op step's call); its raw
    writer is pointed at each attempt's log.  One that a step closed, detached or reconfigured
    is not used again (`_step_text`)."""

    changed = False

    def reconfigure(self, *args: Any, **kwargs: Any) -> None:
        self.changed = True
        super().reconfigure(*args, **kwargs)

    def detach(self) -> Any:
        self.changed = True
        return super().detach()


_kept_text: tuple[_StepText, _LogWriter] | None = None


def _step_text(write: Callable[[bytes], None]) -> _StepText:
    """The kept text stream, writing to `write` (made again if a step spoilt it)."""
    global _kept_text
    kept = _kept_text
    if kept is None or kept[0].changed or kept[0].closed:
        raw = _LogWriter(write)
        text = _StepText(raw, write_through=True, errors="replace")  # type: ignore[arg-type]
        _kept_text = kept = (text, raw)
    else:
        kept[1]._write = write
    return kept[0]


class _StepLogTarget(io.RawIOBase):
    """Where the step logger writes: the current attempt's log (per thread)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        target = getattr(self.local, "write", None)
        if target is not None:
            target(bytes(data))
        return len(data)


_target = _StepLogTarget()


def _stdlib_logging() -> types.ModuleType:
    """The standard library's `logging`, even with a `logging.py` in a step's folder (which is
    first on sys.path by then): imported with sys.path cut to the standard library."""
    import importlib
    import sysconfig

    found = sys.modules.get("logging")
    stdlib = tuple({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
    if found is not None and str(getattr(found, "__file__", "")).startswith(stdlib):
        return found
    saved_path, users = sys.path[:], sys.modules.pop("logging", None)
    sys.path[:] = [p for p in saved_path if p.startswith(stdlib)]
    try:
        return importlib.import_module("logging")
    finally:
        sys.path[:] = saved_path
        if users is not None:  # the step's own `import logging` keeps giving it its module
            sys.modules["logging"] = users


@functools.cache
def _step_logger() -> logging.Logger:
    """The `pipeline_runner.step` logger, writing to the current attempt's log."""
    stdlib = _stdlib_logging()
    logger = cast("logging.Logger", stdlib.getLogger("pipeline_runner.step"))
    # A raw stream is buffer enough for a write-through wrapper (typeshed asks for a buffered one).
    handler = stdlib.StreamHandler(io.TextIOWrapper(_target, write_through=True))  # type: ignore[type-var]
    handler.setFormatter(stdlib.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(stdlib.INFO)
    logger.propagate = False
    return logger


class _LazyStepLogger:
    """`ctx.log`: the step logger, set up on first use (the logging module takes longer to
    import than most steps take to run, and most steps never log)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_step_logger(), name)


_STEP_LOG = cast("logging.Logger", _LazyStepLogger())


MAX_LOG_BYTES = 256 * 1024 * 1024


class StorageError(Exception):
    """The step's log could not be written (disk full, file size limit): not the step's fault,
    and retrying will not help; the run stops (exit 3)."""


class LazyLog:
    """The step's log file, created on the first byte the attempt writes (with the attempt's
    header line before it): a step that prints nothing costs no file.  A log is cut at
    MAX_LOG_BYTES with a marker line; what follows is counted, not written."""

    def __init__(self, task: Task, started: float) -> None:
        self.task = task
        self.started = started
        self.file: Any = None
        self.size = 0
        self.dropped = 0

    def _open(self) -> Any:
        if self.file is None:
            try:
                self.file = open(self.task.log_path, "ab", buffering=0)  # noqa: SIM115
                self.size = self.file.tell()
            except OSError as exc:
                raise StorageError(f"cannot write the log {self.task.log_path}: {exc}") from None
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started))
            header = f"--- attempt {self.task.attempt} of {self.task.node_id} at {stamp} ---\n"
            self._raw(header.encode())
        return self.file

    def _raw(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write the log {self.task.log_path}: {exc}") from None
        self.size += len(data)

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        self._open()
        room = MAX_LOG_BYTES - self.size
        if room <= 0:
            self.dropped += len(data)
            return len(data)
        self._raw(data[:room])
        if len(data) > room:
            self.dropped += len(data) - room
            self._raw(f"\n[log cut at {MAX_LOG_BYTES:,} bytes]\n".encode())
        return len(data)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def fileno(self) -> int:
        return int(self._open().fileno())

    def __enter__(self) -> LazyLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            if self.dropped:
                try:
                    self.file.write(f"[{self.dropped:,} more bytes not written]\n".encode())
                except OSError:
                    pass
            self.file.close()


class FdPump:
    """Carries what a worker's file descriptors 1 and 2 receive (a C extension, `os.system`,
    a subprocess that inherited them) into the current attempt's masked log.

    The pipe is read by one thread; each read and its delivery happen under a lock, so after
    `drain()` sees the pipe empty under that lock, everything written before is in the log."""

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.lock = threading.Lock()
        self.target: Callable[[bytes], None] | None = None
        import fcntl  # here: only a worker process needs them
        import termios

        self._buf = bytearray(4)
        # ioctl(FIONREAD) with its arguments bound: it writes the byte count into _buf
        self._ask = functools.partial(fcntl.ioctl, self.read_fd, termios.FIONREAD, self._buf)
        threading.Thread(target=self._loop, name="fd-pump", daemon=True).start()

    def _loop(self) -> None:
        import select

        while True:
            select.select([self.read_fd], [], [])
            with self.lock:
                data = os.read(self.read_fd, 65536)
                if not data:
                    return
                if self.target is not None:
                    self.target(data)

    def attach(self, target: Callable[[bytes], None] | None) -> None:
        """Deliver what the pipe holds to the current target, then switch to `target`."""
        with self.lock:
            if not self._pending():  # the common case: one look, one turn of the lock
                self.target = target
                return
        self.drain()
        with self.lock:
            self.target = target

    def _pending(self) -> bool:
        """Whether the pipe holds bytes (the lock held)."""
        self._ask()
        return self._buf != _NO_BYTES

    def drain(self, limit: float = 1.0) -> None:
        deadline = time.monotonic() + limit
        while True:
            with self.lock:
                if not self._pending():
                    return
            if time.monotonic() > deadline:
                return
            time.sleep(0.0005)


_NO_BYTES = bytes(4)
_pump: FdPump | None = None


class ThreadRouter(io.TextIOBase):
    """sys.stdout/sys.stderr for the thread executor: what a step's thread prints goes to that
    step's masked log; other threads write where they always did."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.local = threading.local()

    def write(self, text: str) -> int:
        target = getattr(self.local, "write", None)
        if target is None:
            return int(self.fallback.write(text))
        target(text.encode("utf-8", errors="replace"))
        return len(text)

    def flush(self) -> None:
        if getattr(self.local, "write", None) is None:
            self.fallback.flush()

    def isatty(self) -> bool:
        return bool(self.fallback.isatty())

    def fileno(self) -> int:
        return int(self.fallback.fileno())


def _route(write: Callable[[bytes], None] | None) -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, ThreadRouter):
            stream.local.write = write


def execute(
    task: Task,
    masker: Masker,
    worker: str,
    on_process: Callable[[int], None] | None = None,
    redirect_std: bool = True,
    output_env_stays: bool = False,
) -> Completion:
    """Run one attempt; never raises (bar BaseExceptions the caller must see).
    `output_env_stays`: a pool worker's speed shortcut: $RUNNER_OUTPUT and
    $PIPELINE_RUNNER_OUTPUT are left set after the attempt (set again only when they change:
    a worker's file is the same for a run; see `_ProcessState.expect`), not removed from
    os.environ, which costs more than the attempt."""
    started = time.time()
    # Every step works in the pipeline's folder, as shell steps always did: relative paths
    # in a pipeline mean the same thing whoever runs it from wherever.
    if _shared_outputs is not None:  # a pool worker's shortcut (see worker_main)
        _enter_folder(task.pipeline_dir)
    else:
        try:
            here: str | None = os.getcwd()
        except OSError:  # the folder this process was in is gone
            here = None
        if here != task.pipeline_dir:
            os.chdir(task.pipeline_dir)
    with LazyLog(task, started) as log:
        stream = StreamMasker(masker, log.write)
        saved = (sys.stdout, sys.stderr)
        restore_env: dict[str, str | None] = {}
        if redirect_std:  # the attempt has this process to itself: give it its environment too
            if _shared_outputs is not None:  # a pool worker's shortcut (see worker_main)
                text: Any = _step_text(stream.write)
            else:
                raw = _LogWriter(stream.write)
                text = io.TextIOWrapper(raw, write_through=True, errors="replace")
            sys.stdout = sys.stderr = text
            _base_environ()  # taken before any attempt changes os.environ
            outputs = _output_env(task)
            if output_env_stays and not task.env.keys() & outputs.keys():
                global _env_in_place
                if outputs is not _env_in_place:  # a worker's shared file: set once
                    environ = os.environ
                    for name, value in outputs.items():  # nothing to undo: no call for it
                        environ[name] = value
                    _env_in_place = outputs
                restore_env = _apply_environ(task.env) if task.env else {}
            else:
                restore_env = _apply_environ({**task.env, **outputs})
        if _pump is not None:
            _pump.attach(stream.write)
        if not redirect_std:
            _route(stream.write)
        try:
            done = _run(task, masker, worker, started, stream, log, on_process)
            if _pump is not None:
                _pump.attach(None)
            stream.flush()
            return done
        except StorageError as exc:
            return failure(task, "storage", masker.text(str(exc)), started, worker)
        finally:
            if not redirect_std:
                _route(None)
            if redirect_std:
                sys.stdout, sys.stderr = saved
                if restore_env:
                    _apply_environ(restore_env)


_T = TypeVar("_T")


class _LatestTask(Generic[_T]):
    """`make(task)` for the latest task asked about, kept: the answers below are asked several
    times an attempt (a Task is immutable; callers only read the answer)."""

    __slots__ = ("answer", "make", "task")

    def __init__(self, make: Callable[[Task], _T]) -> None:
        self.make = make
        self.task: Task | None = None
        self.answer: _T | None = None

    def __call__(self, task: Task) -> _T:
        if self.task is not task:
            self.answer, self.task = self.make(task), task
        return cast("_T", self.answer)


def _make_output_env(task: Task) -> dict[str, str]:
    """$PIPELINE_RUNNER_OUTPUT and $RUNNER_OUTPUT: the one file a step may write outputs to;
    with `--otlp`, $TRACEPARENT: the attempt's span as the parent of what the step traces."""
    if task.trace is None and _shared_outputs is not None:
        return _shared_file(task).env  # the same dict while the file is the same
    path = _outputs_path(task)
    env = dict.fromkeys(OUTPUT_ENVS, path)
    if task.trace is not None:
        env["TRACEPARENT"] = traceparent(task.trace, task.node_id, task.attempt)
    return env


# -- a pool worker's shortcuts (worker_main sets them up; PIPELINE_RUNNER_NO_SHORTCUTS=1 not) --


_shared_outputs: dict[str, SharedFile] | None = None  # run folder -> this worker's file
_worker_name = ""
_env_in_place: dict[str, str] | None = None  # output variables known to be in os.environ
_folders: dict[str, int] = {}  # pipeline folder -> a descriptor of it, to enter with fchdir


# The outputs file of the last attempt if nothing but that attempt can have written to it since
# it was read: no process of it was left at its end and it set no signal handler (see
# worker_main).
_still: SharedFile | None = None


def _find_shared_file(task: Task) -> SharedFile:
    """This worker's outputs file for the run folder of `task`."""
    assert _shared_outputs is not None
    head = task.scratch_dir.rpartition("/")[0]
    found = _shared_outputs.get(head)
    if found is None:
        folder = f"{head}/.outputs"
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            pass  # the step's writes fail and say why
        found = _shared_outputs[head] = SharedFile(f"{folder}/{_worker_name}")
    return found


# Asked three times an attempt (its environment, its context, the worker's baseline).
_output_env = _LatestTask(_make_output_env)
_shared_file = _LatestTask(_find_shared_file)


def _drop_shared_files() -> None:
    """A worker that ends leaves no outputs file behind (one killed does: an empty file)."""
    for shared in (_shared_outputs or {}).values():
        with contextlib.suppress(OSError):
            os.unlink(shared.path)


def _enter_folder(folder: str) -> None:
    """chdir to `folder` through a descriptor kept open: no path to walk, no folder to ask
    for first (a step may have left this process anywhere)."""
    fd = _folders.get(folder)
    if fd is None:
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            os.chdir(folder)  # raises as the plain path would
            return
        _folders[folder] = fd
    os.fchdir(fd)


def _take_outputs(task: Task, path: str) -> dict[str, Any]:
    """What the attempt of `task` wrote to its outputs file at `path` (the file is emptied or
    removed)."""
    if _shared_outputs is not None:
        shared = _shared_file(task)
        if shared.path == path:
            return shared.take()
    return read_file(path)


def _apply_environ(env: Mapping[str, str | None]) -> dict[str, str | None]:
    """Set (or, for None, remove) variables in os.environ; returns what undoes it."""
    # Read from os.environ's own bytes store: its get() raises and catches a KeyError for
    # each variable not set, the common case here.
    raw = _raw_environ()
    undo: dict[str, str | None] = {}
    for name in env:
        value = raw.get(os.fsencode(name))
        undo[name] = None if value is None else os.fsdecode(value)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return undo


@functools.lru_cache(maxsize=16)
def _path(folder: str) -> Path:
    return Path(folder)


_environ_copy: dict[str, str] | None = None


def _forget_environ() -> None:
    global _environ_copy
    _environ_copy = None


# A forked child takes its own copy (asking for the pid on every call costs a system call).
os.register_at_fork(after_in_child=_forget_environ)


def _base_environ() -> dict[str, str]:
    """A copy of this process's environment, made once per process (os.environ is slow to
    iterate, and a step's attempt only adds its own variables on top)."""
    global _environ_copy
    if _environ_copy is None:
        _environ_copy = dict(os.environ)
    return _environ_copy


def _run(
    task: Task,
    masker: Masker,
    worker: str,
    started: float,
    stream: StreamMasker,
    log: Any,
    on_process: Callable[[int], None] | None,
) -> Completion:
    ctx = StepContext(
        run_id=task.run_id,
        step_id=task.node_id,
        attempt=task.attempt,
        key=task.key,
        item=task.item,
        log=_STEP_LOG,
        scratch_path=task.scratch_dir,
        pipeline_dir=_path(task.pipeline_dir),
        # a step inherits the runner's environment
        env={**_base_environ(), **task.env, **_output_env(task)},
        timeout=task.timeout,
        grace=task.grace,
        log_stream=log,
        on_process=on_process,
        write_log=stream.write,
    )
    _target.local.write = stream.write
    if _shared_outputs is not None and not _no_code(task.uses):
        shared = _shared_file(task)
        shared.clear(untouched=shared is _still)
    try:
        plugin = registry().load(task.uses)
        output = plugin.run(task.with_, ctx)
    except PluginLoadError as exc:
        return failure(task, "error", masker.text(str(exc)), started, worker)
    except StorageError as exc:
        return failure(task, "storage", masker.text(str(exc)), started, worker)
    except TimeoutError as exc:
        return failure(task, "timeout", masker.text(str(exc)), started, worker)
    except StepFailed as exc:  # an expected failure, explained by its message
        message = masker.text(str(exc))
        stream.write(f"[runner] {message}\n".encode())
        return failure(task, "error", message, started, worker, "", exc.exit_code)
    except BaseException as exc:  # a step's own KeyboardInterrupt/SystemExit is its failure
        message = masker.text(describe(exc))
        tb = masker.text(user_traceback(exc))
        stream.write(tb.encode())
        return failure(task, "error", message, started, worker, tb, exit_code_of(exc))
    try:
        text = _output_json(output, masker, "output")
        # A shortcut (a pool worker's, see worker_main): a step that runs no code wrote none.
        named = None if _no_code(task.uses) else _named_json(task, ctx, masker)
    except _BadOutput as exc:
        message = masker.text(str(exc))
        stream.write(f"[runner] {message}\n".encode())
        return failure(task, "error", message, started, worker)
    return Completion(
        task.attempt_id, True, text, None, "", "", None, started, time.time(), worker, named
    )


class _BadOutput(Exception):
    """A successful attempt's output or named outputs cannot be kept: the attempt fails."""


def _output_json(output: Any, masker: Masker, what: str) -> str:
    """The output as JSON, checked (serialisable, at most MAX_OUTPUT_BYTES) and masked."""
    if output is None:  # most steps' output, and what json.dumps (masked or not) makes of it
        return "null"
    try:
        text = json.dumps(output, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        kind = type(output).__name__
        raise _BadOutput(f"{what} is not JSON-serialisable ({kind}): {exc}") from None
    if len(text) > MAX_OUTPUT_BYTES:
        raise _BadOutput(
            f"{what} is {len(text):,} bytes of JSON, over the limit of {MAX_OUTPUT_BYTES:,}"
        )
    if masker:  # as values: a secret of digits never cuts a number (or the JSON) in two
        text = masker.json(output, allow_nan=False)
    return text


def _named_json(task: Task, ctx: StepContext, masker: Masker) -> str | None:
    """The named outputs (`ctx.set_output`, then the `$RUNNER_OUTPUT` file) as JSON, or None."""
    try:
        found = _take_outputs(task, ctx.env[OUTPUT_ENV])
    except OutputsError as exc:
        raise _BadOutput(str(exc)) from None
    if not found and not ctx.outputs:
        return None
    return _output_json({**ctx.outputs, **found}, masker, "named outputs")


def _outputs_path(task: Task) -> str:
    """The file the attempt may write its named outputs to (its folder made once)."""
    if _shared_outputs is not None:
        return _shared_file(task).path
    return _attempt_outputs(task.scratch_dir, task.attempt)


@functools.lru_cache(maxsize=4)  # asked twice per attempt (the environment, the step's context)
def _attempt_outputs(scratch_dir: str, attempt: int) -> str:
    path = file_path(scratch_dir, attempt)
    folder = os.path.dirname(path)
    if folder in _made_folders:
        return path
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return path  # the step's writes fail and say why
    if shortcuts.enabled():
        # A speed shortcut: every step of a run shares this folder, made once per process
        # (then a step that deletes it, rather than its own file, breaks the next steps'
        # `$RUNNER_OUTPUT`; with PIPELINE_RUNNER_NO_SHORTCUTS=1 it is made for each attempt).
        _made_folders.add(folder)
    return path


_made_folders: set[str] = set()


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def exit_code_of(exc: BaseException) -> int | None:
    """The exit code a python step's exception carries: `sys.exit(N)`'s N, or an
    `exit_code` attribute (for `retries.on` and `skip_exit_codes`)."""
    code = exc.code if isinstance(exc, SystemExit) else getattr(exc, "exit_code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def describe(exc: BaseException) -> str:
    """`Type: message`, even for an exception whose `__str__` itself raises."""
    try:
        text = str(exc)
    except Exception as inner:
        text = f"<str() of the exception failed: {type(inner).__name__}>"
    return f"{type(exc).__name__}: {text}"


def user_traceback(exc: BaseException) -> str:
    """The traceback without the runner's own frames in front of the step's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        if tb.tb_next is None:
            break
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


# -- leftovers ---------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return out


def _command(pid: int) -> str | None:
    """`pid (command line)`, or None for a process that is gone or a zombie (already dead).
    Right after an exec the command line can read as empty for a moment (the kernel lets a
    vfork parent run on before it has set the new arguments up): the name from `stat` then."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, _, tail = f.read().rpartition(")")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return None
    if tail.split()[:1] == ["Z"]:
        return None
    return f"{pid} ({command or head.partition('(')[2]})"


def reap_leftovers() -> str:
    """Kill what a finished attempt left behind, even processes that left its process group
    (`setsid`): this worker is their subreaper, so they are its descendants.  Returns a
    warning naming any that had to be killed this way, or ""."""
    return _reap()[0]


def _reap() -> tuple[str, bool]:
    """`reap_leftovers`, and whether this process had no child at all (so no descendant
    either, alive or dead: orphans are reparented to us, the dead wait for our waitid)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return "", True
    return _kill_descendants(), False


def _kill_descendants() -> str:
    """SIGKILL every descendant of this process; the warning of `reap_leftovers`."""
    me = os.getpid()
    found: list[int] = []
    stack = _children(me)
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(_children(pid))
    if not found:
        return ""
    named = []
    for pid in found:
        command = _command(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        if command is not None:
            named.append(command)
    for pid in found:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # not our child: its own parent (also killed) or init reaps it
    return f"; killed processes it left running: {', '.join(named)}" if named else ""


def _note_survivors(task: Task, survivors: str) -> None:
    try:
        with open(task.log_path, "ab") as f:
            f.write(f"[runner] warning: {survivors.removeprefix('; ')}\n".encode())
    except OSError:
        pass


# -- the worker process --------------------------------------------------------------------------

_current_pgid: int | None = None
_current_grace: float = GRACE


def _prctl(option: int, value: int) -> None:
    import ctypes  # here: the runner itself never needs it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipe's EOF still ends the worker
        pass


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send `sig` to this process when the thread that started it ends."""
    _prctl(1, sig)  # PR_SET_PDEATHSIG


def _on_term(signum: int, frame: Any) -> None:
    """Stopped (cancelled, timed out, or the runner is gone): stop the running command as at a
    timeout, SIGTERM to its group and SIGKILL after its grace period, then what it left, then
    exit.  The runner SIGKILLs this worker if it takes longer."""
    if _current_pgid is not None:
        stop_group(_current_pgid, _current_grace)
    reap_leftovers()
    os._exit(128 + signum)


class _Outbox:
    """What a worker tells the runner.  A completion is in the pipe before this worker goes on
    to anything else: a step that kills its worker (os._exit, a segfault, the OOM killer) must
    not take the results of steps that already returned with it (the runner would record them
    as crashed and run them again).  A message written to the pipe survives its writer.  A
    `Started` goes at once too: until the runner has the command's process group, a worker
    killed now would leave the command running where nothing could stop it.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.broken = False

    def started(self, message: Started) -> bool:
        return self._write([message])

    def complete(self, done: Completion, idle: bool = True, retire: bool = False) -> bool:
        """Send a completion; with `retire`, in the same write, that this worker ends now by
        choice (see wire.RETIRE), so the runner never gives it another task."""
        return self._write([done, wire.RETIRE] if retire else [done])

    def flush(self) -> bool:
        return not self.broken

    def _write(self, messages: list[Any]) -> bool:
        if self.broken:
            return False
        try:
            for payload in wire.encode(messages):
                self.conn.send_bytes(payload)
            return True
        except (BrokenPipeError, OSError):
            self.broken = True
            return False


class _ProcessState:
    """What an attempt may change in its worker's process and the next attempt must not see:
    the environment, the working folder, signal handlers, the blocked-signal mask, alarms
    and interval timers.  Taken when the worker starts; `restore()` puts it back after each
    attempt.  Threads cannot be undone: `restore()` says whether the attempt left any running
    (the worker then retires once it has reported)."""

    TIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.raw_environ = dict(_raw_environ())
        self.cwd = os.getcwd()
        skip = {signal.SIGKILL, signal.SIGSTOP}
        self.handlers = {
            int(sig): _getsignal(sig) for sig in signal.valid_signals() if sig not in skip
        }
        # The signals whose handler is known, and those handlers: compared in one go.
        self.watched = tuple(sig for sig, handler in self.handlers.items() if handler is not None)
        self.watched_handlers = tuple(self.handlers[sig] for sig in self.watched)
        self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        self.threads = set(threading.enumerate())
        self.expected: Mapping[str, str] | None = None

    def expect(self, env: Mapping[str, str]) -> None:
        """Variables the process keeps after an attempt as if it had them from the start (the
        attempt's $RUNNER_OUTPUT, left set by the speed shortcut of `execute`)."""
        if env is self.expected:  # a worker's shared outputs file: the same every attempt
            return
        self.expected = env
        raw = _raw_environ()
        for name, value in env.items():
            self.environ[name] = value
            key = _ENCODED.get(name) or os.fsencode(name)
            held = raw.get(key)  # set by the attempt, so already encoded there
            self.raw_environ[key] = os.fsencode(value) if held is None else held

    def restore(self, home: str | None = None, handlers: bool = True) -> bool:
        """Undo what the attempt changed; True if it left threads running.  `home`: given, the
        working folder is left as the attempt left it (a speed shortcut, see worker_main:
        `execute` puts every attempt in its pipeline's folder first, whatever folder it finds,
        and a system call saved counts where each costs as much as a no-op step).  `handlers`
        False: the attempt set no signal handler (a speed shortcut, see `_HandlerWatch`)."""
        if _raw_environ() != self.raw_environ:
            for name in [n for n in os.environ if n not in self.environ]:
                del os.environ[name]
            os.environ.update(self.environ)
        if home is None:
            try:
                if os.getcwd() != self.cwd:
                    os.chdir(self.cwd)
            except OSError:  # the folder the attempt was in is gone
                os.chdir(self.cwd)
        for timer in self.TIMERS:  # ITIMER_REAL: also what signal.alarm set
            if _getitimer(timer) != (0.0, 0.0):
                signal.setitimer(timer, 0)
        if handlers and tuple(map(_getsignal, self.watched)) != self.watched_handlers:
            for sig, handler in zip(self.watched, self.watched_handlers, strict=True):
                if _getsignal(sig) is not handler:
                    signal.signal(sig, handler)
        _sigmask(signal.SIG_SETMASK, self.mask)
        return not self.threads.issuperset(threading.enumerate())


class _HandlerWatch:
    """A pool worker's speed shortcut: Python's signal handlers are set only through
    `_signal.signal` (which `signal.signal` calls, looking it up each time), wrapped here to
    note that it was called, so that after an attempt that set none the handlers are not
    compared one signal at a time (the dearest part of putting the process back).  With the
    shortcuts off every handler is compared after every attempt."""

    def __init__(self) -> None:
        self.touched = False
        module = importlib.import_module("_signal")
        original = getattr(module, "signal")  # noqa: B009 (not typed on a module)

        @functools.wraps(original)
        def noted(signalnum: int, handler: Any) -> Any:
            self.touched = True
            return original(signalnum, handler)

        setattr(module, "signal", noted)  # noqa: B010

    def take(self) -> bool:
        """Whether a handler was set since the last call."""
        touched, self.touched = self.touched, False
        return touched


# _signal's own getsignal and pthread_sigmask: signal's wrap each answer in enums (10x slower).
_getsignal: Callable[[int], Any] = importlib.import_module("_signal").getsignal
_sigmask: Callable[[int, Any], Any] = importlib.import_module("_signal").pthread_sigmask
_getitimer: Callable[[int], tuple[float, float]] = importlib.import_module("_signal").getitimer
_ENCODED = {name: os.fsencode(name) for name in (*OUTPUT_ENVS, "TRACEPARENT")}


def _raw_environ() -> Mapping[Any, Any]:
    """os.environ's own store (bytes to bytes, compared without decoding every entry)."""
    return cast("Mapping[Any, Any]", getattr(os.environ, "_data", os.environ))


def _runs_no_code(uses: str) -> bool:
    """Whether an attempt of `uses` ran no code that could change this process's state, so
    there is nothing to put back: the built-in `noop` (a speed shortcut: with
    RUNNER_NO_SHORTCUTS=1 the state is put back after every attempt)."""
    if uses != "noop":
        return False
    found = _no_code_found.get(uses)
    if found is None:
        from .builtins.noop import Noop

        try:
            found = type(registry().load(uses)) is Noop
        except PluginLoadError:
            found = False
        _no_code_found[uses] = found  # a worker's plugins do not change while it lives
    return found


_no_code_found: dict[str, bool] = {}


def _never(uses: str) -> bool:
    return False


# Set by a pool worker with the shortcuts on (worker_main); the plain values elsewhere.
_no_code: Callable[[str], bool] = _never  # no named outputs to read after such a step


def worker_main(
    conn: Any, name: str, secret_values: list[str], journal_of: tuple[int, int] | None = None
) -> None:
    """The loop of one pool worker (runs in a child process).  `journal_of`: the runner's pid
    and the descriptor of this worker's journal there (journal.py), if it made one."""
    global _current_pgid
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    set_parent_death_signal(signal.SIGTERM)  # first: the runner's death is never missed
    gcpolicy.for_steps()
    # Forkserver children inherit the write end of the pipe by which the forkserver learns
    # that the runner is gone; holding it would keep the forkserver (and so us) alive after
    # the runner is killed.  Workers start no processes through the forkserver: let it go.
    server: Any = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        try:
            os.close(alive_fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None
    _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of a step come to us, not to init
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A file-size limit must fail the write (EFBIG), not kill the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    global _pump
    _pump = FdPump()
    masker = Masker(secret_values)

    kept = journal.open_for_worker(*journal_of) if journal_of and shortcuts.enabled() else None
    outbox = _Outbox(conn) if kept is None else journal.BatchedOutbox(conn, kept)
    baseline = _ProcessState()

    def started(pid: int) -> None:
        global _current_pgid, _current_grace
        _current_pgid, _current_grace = pid, current.grace
        outbox.started(Started(current.attempt_id, pid, process_start_time(pid)))

    global _no_code, _shared_outputs, _worker_name, _still
    fast = shortcuts.enabled()
    skip_restore = _runs_no_code if fast else _never
    _no_code = skip_restore
    if fast:
        _shared_outputs, _worker_name = {}, name
    # Set after the worker's own handlers (above), so that only an attempt's count.
    watch = _HandlerWatch() if fast else None
    outcomes: dict[int, bool] = {}  # recent attempts here: did they succeed?
    try:
        while True:
            try:
                batch = conn.recv()
            except (EOFError, OSError):
                return
            if batch is None:
                return
            batch = wire.decode(batch)
            for index, current in enumerate(batch):
                last = index == len(batch) - 1
                # The next task a follow-up: the runner is told of this one before it starts.
                soon = last or batch[index + 1].after != 0
                if current.after and not outcomes.get(current.after, False):
                    # A follow-up of an attempt that did not succeed: the runner drops it too.
                    if last and not outbox.flush():
                        return
                    continue
                # The runner records a follow-up as started when it learns that the attempt before
                # it succeeded: tell it now, not after the follow-up has run.
                if current.after and not outbox.flush():
                    return
                done = execute(current, masker, name, started, output_env_stays=fast)
                _current_pgid = None
                survivors, alone = _reap()
                if survivors:
                    if not done.ok:
                        done = done._replace(message=done.message + survivors)
                    _note_survivors(current, survivors)
                touched = watch is None or watch.take()
                if skip_restore(current.uses):
                    leaked = False
                else:
                    # the shortcut: stay in the pipeline's folder, where the next attempt goes
                    if fast:
                        baseline.expect(_output_env(current))
                    leaked = baseline.restore(current.pipeline_dir if fast else None, touched)
                if fast:
                    # A handler could have reaped a leftover unseen (SIGCHLD ignored or waited
                    # for by a step's handler).
                    _still = _shared_file(current) if alone and not touched else None
                outcomes[current.attempt_id] = done.ok
                if len(outcomes) > 256:
                    del outcomes[next(iter(outcomes))]
                # Threads the attempt left would write into the next attempt's log (or keep this
                # process from ending): retire.  The runner hands the tasks queued here to another
                # worker (none of them started) and starts a new one.
                if not outbox.complete(done, idle=soon, retire=leaked):
                    return
                if leaked:
                    os._exit(0)
    finally:
        _drop_shared_files()
