"""The file name of a step's log, from its qualified id.

An id can be longer than a file name may be (a step id has no length limit; template and
for_each keys add to it), so the name is derived: an id of at most `MAX_STEM` characters from
the id alphabet is its own name (`etl.acme.extract.log`), as it always was; any other gets a
readable prefix of its safe characters and a hash of the whole id after a `~`, a character no id
has, so names stay unique, bounded and free of line breaks or path separators.  The store keeps
each step's log path, so readers never derive it again.
"""

from __future__ import annotations

import hashlib
import re

MAX_STEM = 120  # well under the 255 bytes a file name may have on common file systems
_PREFIX = 80
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=:-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=:-]")


def file_stem(node_id: str) -> str:
    """A file name (without extension) for `node_id`, unique among ids."""
    if len(node_id) <= MAX_STEM and _SAFE.fullmatch(node_id):
        return node_id
    digest = hashlib.sha256(node_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    readable = _UNSAFE.sub("_", node_id[:_PREFIX]).lstrip(".")
    return f"{readable}~{digest}"


def log_file_name(node_id: str) -> str:
    return f"{file_stem(node_id)}.log"
