"""The for_each key rules: the default key of an item and what a key may be.  Used when a
for_each is expanded at plan time (planner) and at run time (scheduler)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")
MAX_KEY_LENGTH = 100


def key_problem(key: str) -> str | None:
    """Why `key` cannot name an instance (it becomes part of ids and file names), or None."""
    if not isinstance(key, str) or not key:
        return "a key must be a non-empty string"
    if len(key) > MAX_KEY_LENGTH:
        return f"a key is at most {MAX_KEY_LENGTH} characters"
    if ".." in key or not KEY_RE.match(key):
        return (
            "a key has letters, digits, '_', '.', '=' and '-', starts with a letter or digit, "
            "and has no '/', '\\', '..' or white space"
        )
    return None


def default_key(item: Any, index: int) -> str:
    """The default instance key: the item itself, its `name`/`id` field, or its index."""
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        for field_name in ("name", "id"):
            if field_name in item:
                return str(item[field_name])
    return str(index)
