"""Step results reused across runs (`cache: true` or `cache: {inputs, outputs}`).

The key of an attempt covers what can change its result: the pipeline's folder (resolved), the
plugin, the rendered `with`, the outputs of its needs, the rendered globs and the contents of the
files they match.  When a step succeeds, the content hashes of its declared outputs are stored
with its entry; a hit needs an entry with the key whose outputs, hashed again now, are still
exactly those.  Anything else (an output missing, edited, left over from another key) is a miss
and the step runs.  The stored output is then the step's output and the step's state is
`cached`.  Entries live in the run store.

A glob may match files and folders; a folder stands for every file and folder under it, by name
and content (its mtime plays no part).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .model import CacheSpec

# Relative path -> SHA-256 of a file's bytes, or DIR for a folder (whose name then ends in "/").
Fingerprint = dict[str, str]
DIR = "dir"


class CacheBackend(Protocol):
    """Where the scheduler looks results up: by key, the output and the stored fingerprint of
    the declared outputs.  Entries are written by the store's sink, in the same transaction as
    the state of the step that produced them."""

    def get(self, key: str) -> tuple[Any, Any, str | None] | None:
        """(output, fingerprint of the declared outputs, named outputs as JSON or None)."""


class MissingInput(Exception):
    """An input glob matched nothing; the message names the glob."""


@dataclass(frozen=True, slots=True)
class Globs:
    """A step's `cache.inputs` and `cache.outputs`, rendered."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


def render_globs(spec: CacheSpec, render: Callable[[Any], Any]) -> Globs:
    """Render the globs left for run time (as the step's `with` is rendered); raises ValueError
    for a glob that is not text."""
    inputs, outputs = render([list(spec.inputs), list(spec.outputs)])
    return Globs(_globs(inputs, "inputs"), _globs(outputs, "outputs"))


def as_glob(value: Any) -> str | None:
    """A rendered glob as text (a number is its digits); None for anything else or ''."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value else None


def _globs(values: list[Any], field: str) -> tuple[str, ...]:
    out = []
    for i, value in enumerate(values):
        glob_ = as_glob(value)
        if glob_ is None:
            raise ValueError(f"cache.{field}[{i}]: a glob must be text, got {value!r}")
        out.append(glob_)
    return tuple(out)


def no_match_message(pattern: str) -> str:
    return f"input glob '{pattern}' matches no file"


def matches(pattern: str, base: str) -> list[str]:
    """Paths matching `pattern` relative to `base` (`**` spans folders), relative to `base`."""
    return [os.path.normpath(p) for p in glob.glob(pattern, root_dir=base, recursive=True)]


def fingerprint(patterns: Iterable[str], base: str) -> Fingerprint:
    """Every file and folder the globs match, folders expanded, each with its content hash."""
    found: Fingerprint = {}
    for pattern in patterns:
        for rel in matches(pattern, base):
            _add(found, rel, base, top=True)
    return dict(sorted(found.items()))


def _add(found: Fingerprint, rel: str, base: str, *, top: bool = False) -> None:
    path = os.path.join(base, rel)
    if os.path.isfile(path):
        found[rel] = file_digest(path)
    elif os.path.isdir(path) and os.path.islink(path) and not top:
        found[rel] = f"link:{os.readlink(path)}"  # inside a folder: not followed (no loops)
    elif os.path.isdir(path):
        found[rel.rstrip("/") + "/"] = DIR
        for entry in sorted(os.listdir(path)):
            _add(found, os.path.join(rel, entry), base)


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_fingerprint(patterns: Iterable[str], base: str) -> Fingerprint:
    """The inputs' fingerprint; raises MissingInput for a glob that matches nothing."""
    for pattern in patterns:
        if not matches(pattern, base):
            raise MissingInput(no_match_message(pattern))
    return fingerprint(patterns, base)


def cache_key(
    uses: str, with_: Any, needs_outputs: Mapping[str, Any], globs: Globs, base: str
) -> str:
    """Raises MissingInput, or OSError for an input that cannot be read.

    The key holds the pipeline's folder (resolved): a step runs there and reads and writes
    files there, so the same step of a project in another folder sharing the state dir is
    another step, never served this one's result."""
    inputs = input_fingerprint(globs.inputs, base)
    digest = hashlib.sha256()
    head = [os.path.realpath(base), uses, with_, needs_outputs]
    head += [list(globs.inputs), list(globs.outputs)]
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    for rel, content in inputs.items():
        digest.update(f"\0{rel}\0{content}".encode())
    return digest.hexdigest()


def outputs_match(stored: Any, globs: Globs, base: str) -> bool:
    """True when the declared outputs on disk are exactly those `stored` recorded.  An entry of
    an older runner (a list of names, no hashes) cannot be checked, so it never matches."""
    if not isinstance(stored, dict):
        return False
    try:
        return fingerprint(globs.outputs, base) == stored
    except OSError:
        return False
