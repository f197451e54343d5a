"""Step results reused across runs (`cache: true` or `cache: {inputs, outputs}`).

The key of an attempt covers what can change its result: the plugin, the rendered `with`, the
outputs of its needs and the contents of its declared input files.  A hit needs an earlier
succeeded attempt with that key whose declared output files all still exist; the stored output
is then the step's output and the step's state is `cached`.  Entries live in the run store.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .model import CacheSpec


class CacheBackend(Protocol):
    """Where the scheduler looks results up.  Entries are written by the store's sink, in the
    same transaction as the state of the step that produced them."""

    def get(self, key: str) -> tuple[Any, list[str]] | None: ...


def expand(patterns: Iterable[str], base: str) -> list[str]:
    """Files matching `patterns` (relative to `base`), sorted; `**` spans folders."""
    found: set[str] = set()
    for pattern in patterns:
        for path in glob.glob(os.path.join(base, pattern), recursive=True):
            if os.path.isfile(path):
                found.add(os.path.relpath(path, base))
    return sorted(found)


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(
    uses: str, with_: Any, needs_outputs: Mapping[str, Any], spec: CacheSpec, base: str
) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([uses, with_, needs_outputs], sort_keys=True, default=str).encode())
    for rel in expand(spec.inputs, base):
        digest.update(f"\0{rel}\0{file_digest(os.path.join(base, rel))}".encode())
    return digest.hexdigest()


def outputs_present(files: list[str], base: str) -> bool:
    return all(os.path.exists(os.path.join(base, rel)) for rel in files)
