"""`shell`: run a command.

`cmd` as a list runs that argv with no shell.  `cmd` as a string runs under `/bin/sh -c`; the
planner rendered every `{{ ... }}` in it quoted for where it lands, outside or inside the user's
own quotes (`shell_fields`, `shellquote.py`), so a value cannot inject a command.  Output:
stdout without its trailing newline, or parsed JSON with `parse: json`.  A non-zero exit fails
the attempt with the exit code in the message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from ..plugins import StepContext, StepFailed
from ..procs import run_process, signal_name
from ..templating_text import to_text


class Shell:
    """Run a command (argv list, or a /bin/sh string with every value quoted)."""

    summary = "Run a command: an argv list, or a /bin/sh string with templated values quoted."
    shell_fields = ("cmd",)
    enforces_timeout = True  # run_process stops the process group itself
    schema: Mapping[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["cmd"],
        "properties": {
            "cmd": {
                "type": ["string", "array"],
                "items": {"type": ["string", "number", "boolean"]},
                "minItems": 1,
                "description": "A list runs that argv with no shell; a string runs under "
                "/bin/sh -c with every {{ value }} inserted as one quoted word.",
            },
            "cwd": {"type": "string", "description": "Working folder, relative to the pipeline."},
            "env": {
                "type": "object",
                # Names and values the operating system refuses (as for a step's own `env`).
                "propertyNames": {"pattern": "^[^=\\u0000]+$"},
                "additionalProperties": {
                    "type": ["string", "number", "boolean"],
                    "pattern": "^[^\\u0000]*$",
                },
                "description": "Extra environment variables for this command.",
            },
            "parse": {
                "enum": ["text", "json", "lines"],
                "description": "How stdout becomes the output: text (default), json, lines.",
            },
        },
    }

    def run(self, with_: Mapping[str, Any], ctx: StepContext) -> Any:
        cmd = with_["cmd"]
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [to_text(a) for a in cmd]
        env = {**ctx.env, **{k: to_text(v) for k, v in (with_.get("env") or {}).items()}}
        cwd = os.path.join(str(ctx.pipeline_dir), str(with_.get("cwd") or "."))
        write = ctx.write_log or _write_to(ctx)
        try:
            result = run_process(
                argv,
                env=env,
                cwd=cwd,
                write=write,
                timeout=ctx.timeout,
                grace=ctx.grace,
                on_start=ctx.on_process,
            )
        except FileNotFoundError as exc:
            raise StepFailed(f"command not found: {exc.filename}", 127) from None
        except NotADirectoryError as exc:
            raise StepFailed(f"cwd is not a folder: {exc.filename}") from None
        if result.timed_out:
            raise TimeoutError(f"timed out after {ctx.timeout:g}s; process group stopped")
        if result.signal is not None:
            raise StepFailed(f"command killed by {signal_name(result.signal)}")
        if result.exit_code:
            raise StepFailed(f"command exited with code {result.exit_code}", result.exit_code)
        if result.stdout_too_big:
            raise StepFailed(
                f"stdout is {result.stdout_size:,} bytes, larger than 16 MiB (16,777,216 bytes); "
                "write big results to a file"
            )
        text = result.stdout.decode("utf-8", errors="replace").removesuffix("\n")
        parse = with_.get("parse", "text")
        if parse == "json":
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise StepFailed(
                    f"stdout is not JSON ({exc}); first bytes: {text[:80]!r}"
                ) from None
        if parse == "lines":
            return text.splitlines()
        return text


def _write_to(ctx: StepContext) -> Callable[[bytes], None]:
    stream = ctx.log_stream
    if stream is None:
        return lambda data: None
    return stream.write  # type: ignore[return-value]


plugin = Shell()
