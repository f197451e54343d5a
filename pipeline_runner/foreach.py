"""For-each key rules: how an item becomes the key in its instance's id (`etl.acme.extract`).

One place for the rules, used when a list known before the run is expanded (the planner) and
when a list read from a step's output is expanded at run time (the scheduler)."""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import Node

# `fullmatch`, not `match` with `$`: `$` also matches before a final line break ("acme\n").
KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]*")
MAX_KEY_LENGTH = 100


def key_problem(key: str) -> str | None:
    """Why `key` cannot name an instance (it becomes part of ids and file names), or None."""
    if not isinstance(key, str) or not key:
        return "a key must be a non-empty string"
    if len(key) > MAX_KEY_LENGTH:
        return f"a key is at most {MAX_KEY_LENGTH} characters"
    if ".." in key or not KEY_RE.fullmatch(key):
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


def taken_by(qid: str, other: Node, file: str | None = None) -> str:
    """Why `qid` cannot be a new step's id: `other` already has it.  Keys may contain `.`, so a
    key can spell an id made elsewhere (tenant `acme.extract` and tenant acme's `extract`)."""
    where = f"line {other.location.line}"
    if other.location.file != file:
        where = f"{other.location.file}:{other.location.line}"
    return (
        f"the id '{qid}' is already the id of {other.path} ({where}); a key with '.' can spell "
        "another step's id: choose another key"
    )


def id_clash(
    inst_id: str, key: str, planned: Mapping[str, Node], *taken: Container[str]
) -> str | None:
    """Why a run-time for_each instance cannot have the id `inst_id` (its `key` after the
    step's id), or None: a planned step has it, or another item of the list took it."""
    other = planned.get(inst_id)
    if other is not None:
        return (
            f"the key '{key}' makes the id '{inst_id}', already the id of {other.path} "
            f"(line {other.location.line}); a key with '.' can spell another step's id: "
            "choose another key"
        )
    if any(inst_id in ids for ids in taken):
        return f"two items have the key '{key}'; set `key:` to tell them apart"
    return None


def qualified(aliases: Mapping[str, str], name: str) -> str | None:
    """The qualified id a step name written in a scope stands for: a sibling by its id, or one
    instance of a sibling fan-out by the sibling's id and the instance's key (`build.linux`,
    GitLab's needs:parallel:matrix); None if the name's first part names no sibling."""
    found = aliases.get(name)
    if found is not None:
        return found
    head, dot, rest = name.partition(".")
    owner = aliases.get(head) if dot else None
    return f"{owner}.{rest}" if owner is not None else None
