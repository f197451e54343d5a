"""The `checksum` step: digests of the files matched by glob patterns under the pipeline's folder.

Patterns are relative to the pipeline file's folder and may not leave it (an absolute pattern or
one with a `..` part is refused).  Matching follows the shell: `*` stays within one folder, `**`
crosses folders, names starting with a dot match only a pattern that starts with a dot, and
folders are left out.  Files are read in fixed-size chunks, so a file of any size costs the same
memory.  Output: a mapping of each file's path (relative, with `/`) to its hex digest, sorted by
path, ready to compare between runs or to feed a `cache` key.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from runner_sqlite._common import StepError, check_with

if TYPE_CHECKING:
    from pipeline_runner.plugins import StepContext

ALGORITHMS = ("sha256", "sha1", "md5", "blake2b")
CHUNK_SIZE = 1 << 20

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "checksum",
    "description": "Hash the files matched by glob patterns under the pipeline file's folder.",
    "type": "object",
    "additionalProperties": False,
    "required": ["paths"],
    "properties": {
        "paths": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "minLength": 1},
            "description": "Glob patterns relative to the pipeline file's folder (`data/*.csv`, "
            "`src/**/*.py`); absolute patterns and `..` are refused.",
        },
        "algorithm": {
            "enum": list(ALGORITHMS),
            "default": "sha256",
            "description": "The hash function.",
        },
        "fail_if_empty": {
            "type": "boolean",
            "default": True,
            "description": "Fail when a pattern matches no file (a typo never yields a quietly "
            "smaller result); false skips such patterns.",
        },
    },
}


class ChecksumError(StepError):
    """A checksum step failed: a refused pattern, a pattern matching nothing, an unreadable file."""


class Checksum:
    """Hash the files matched by glob patterns (sha256 by default), reading them in chunks."""

    summary = "Hash files matched by glob patterns under the pipeline folder (sha256 by default)"
    schema: Mapping[str, Any] = SCHEMA

    def run(self, with_: Mapping[str, Any], ctx: StepContext) -> dict[str, str]:
        check_with("checksum", self.schema, with_)
        root = Path(ctx.pipeline_dir)
        algorithm: str = with_.get("algorithm", "sha256")
        files = match_files(root, with_["paths"], bool(with_.get("fail_if_empty", True)))
        digests: dict[str, str] = {}
        for name in files:
            digests[name] = file_digest(root / name, algorithm)
            ctx.log.debug("%s  %s", digests[name], name)
        ctx.log.info("checksum: %d file(s) hashed with %s under %s", len(digests), algorithm, root)
        return digests


def match_files(root: Path, patterns: Iterable[str], fail_if_empty: bool = True) -> list[str]:
    """The files under `root` matched by `patterns`: relative posix paths, sorted, no repeats."""
    found: set[str] = set()
    unmatched: list[str] = []
    for pattern in patterns:
        refuse_escape(pattern)
        names = glob.glob(pattern, root_dir=root, recursive=True)
        files = {PurePath(name).as_posix() for name in names if (root / name).is_file()}
        if not files:
            unmatched.append(pattern)
        found |= files
    if unmatched and fail_if_empty:
        listed = ", ".join(repr(pattern) for pattern in unmatched)
        raise ChecksumError(
            f"checksum: no file matches {listed} under {root} "
            "(set `fail_if_empty: false` to allow it)"
        )
    return sorted(found)


def refuse_escape(pattern: str) -> None:
    """Raise ChecksumError if `pattern` could match outside the folder it is relative to."""
    parts = pattern.replace("\\", "/").split("/")
    if pattern.startswith(("/", "\\")) or PureWindowsPath(pattern).drive:
        raise ChecksumError(
            f"checksum: pattern {pattern!r} is absolute; "
            "patterns are relative to the pipeline file's folder"
        )
    if ".." in parts:
        raise ChecksumError(
            f"checksum: pattern {pattern!r} leaves the pipeline file's folder (`..`); "
            "only files under that folder can be hashed"
        )


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of the file at `path`, read in chunks (constant memory)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    try:
        with path.open("rb") as stream:
            while size := stream.readinto(buffer):
                digest.update(view[:size])
    except OSError as exc:
        raise ChecksumError(f"checksum: cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()
