"""YAML to plain data plus a source map, safely.

The document is built straight from the parser's event stream by an iterative composer, so that
every limit is enforced *before* anything large exists:

- the file size is checked before parsing, and the bytes must be UTF-8;
- nesting depth is counted on the events (the C composer is recursive and crashes on deep input);
- aliases are counted by the size they expand to: each anchored value records how many nodes it
  holds, an alias adds that many, and a document whose aliases would add more than
  `max_alias_nodes` fails at once ("billion laughs" stops after a few hundred events);
- only the standard YAML tags are accepted (`!!python/...` and other tags are an error);
- duplicate keys are reported with both lines; merge keys (`<<`) work as in YAML 1.1;
- plain scalars follow the YAML 1.2 core schema: `on`, `no`, `yes` and dates stay strings.

The result is a `Document`: the plain data (dicts, lists, str, int, float, bool, None) and a
`SourceMap` from document paths (tuples of keys and indexes) to positions, used by every later
stage to point errors at FILE:LINE:COLUMN.
"""

from __future__ import annotations

import base64
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import defaults
from .errors import Diagnostic, Location, PipelineError

DEFAULT_MAX_FILE_SIZE = defaults.MAX_FILE_SIZE
MAX_DEPTH = 64
MAX_DEPTH_MESSAGE = f"nesting is deeper than the limit of {MAX_DEPTH} levels"
MAX_ALIAS_NODES = 100_000

Path_ = tuple[str | int, ...]

_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_constructor = yaml.constructor.SafeConstructor()

# Plain scalars are resolved by the YAML 1.2 core schema: only true/false are booleans, so
# `on:`, `NO` and `yes` stay the strings they look like, and `010` is ten, not eight.
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_RE = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


_MAYBE_NOT_STR = frozenset("-+.0123456789~nNtTfF")


def _resolve_plain(text: str) -> Any:
    if text and text[0] not in _MAYBE_NOT_STR:
        return text  # the common case: a word
    if _NULL_RE.match(text):
        return None
    if _BOOL_RE.match(text):
        return text.lower() == "true"
    if _INT_RE.match(text):
        digits = text.replace("_", "")
        if digits.startswith(("0o", "0x")):
            return int(digits[2:], 8 if digits[1] == "o" else 16)
        return int(digits)
    if _FLOAT_RE.match(text):
        low = text.lower().replace("_", "")
        if low.endswith("inf"):
            return float("-inf") if low.startswith("-") else float("inf")
        return float("nan") if low.endswith("nan") else float(low)
    return text


_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "binary")}
_MAP_TAGS = {f"{_TAG}map", f"{_TAG}omap"}
_SEQ_TAGS = {f"{_TAG}seq"}


def format_path(path: Path_) -> str:
    """`('steps', 2, 'needs', 0)` -> `steps[2].needs[0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class SourceMap:
    """Where each node of a document came from."""

    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    # The text of plain scalars that YAML 1.1 read as something other than a string
    # (`NO` -> false, `3.10` -> 3.1): error messages quote it and suggest quoting.
    texts: dict[Path_, str] = field(default_factory=dict)

    def locate(self, path: Path_, *, key: bool = False) -> Location:
        """The position of `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        while True:
            pos = (self.keys.get(p) if key else None) or self.values.get(p)
            if pos is not None:
                return Location(self.file, pos[0], pos[1])
            if not p:
                return Location(self.file, 1, 1)
            p = p[:-1]


@dataclass
class Document:
    """A loaded YAML file: its data, where each value was written, and its problems."""

    data: Any
    source: SourceMap
    text: str
    problems: list[Diagnostic] = field(default_factory=list)


@dataclass
class _Frame:
    """A mapping or sequence being composed, with the key waiting for its value."""

    kind: str  # "map" or "seq"
    value: Any
    path: Path_
    anchor: str | None
    start_nodes: int
    pending_key: Any = None
    key_pos: tuple[int, int] | None = None
    key_line: dict[Any, int] = field(default_factory=dict)
    merged: list[tuple[Any, tuple[int, int]]] = field(default_factory=list)
    has_key: bool = False


def read_text(path: str, max_size: int = DEFAULT_MAX_FILE_SIZE) -> str:
    """The file's text, refusing files over `max_size` before reading them whole."""
    loc = Location(path)
    try:
        size = os.stat(path).st_size
        if size > max_size:
            raise PipelineError.single(
                loc,
                "",
                f"file is {size:,} bytes, over the limit of {max_size:,} "
                "(raise it with --max-file-size)",
            )
        with open(path, "rb") as f:
            raw = f.read(max_size + 1)
    except OSError as exc:
        raise PipelineError.single(loc, "", f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > max_size:
        raise PipelineError.single(loc, "", f"file is over the limit of {max_size:,} bytes")
    return decode(raw, path)


def decode(raw: bytes, path: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise PipelineError.single(
            Location(path, line, col),
            "",
            f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
        ) from None
    return text.removeprefix("\ufeff")


def load_file(path: str, max_size: int = DEFAULT_MAX_FILE_SIZE) -> Document:
    return load_text(read_text(path, max_size), path)


def load_values_file(
    path: str, max_size: int = DEFAULT_MAX_FILE_SIZE, *, finite: bool = True
) -> Document:
    """A params or secrets file, held to a pipeline file's rules: a duplicate key is an error,
    not a silent last-one-wins; with `finite`, so is a number that is not finite (`.inf`,
    `.nan`), which no JSON report could hold."""
    doc = load_file(path, max_size)
    problems = list(doc.problems)
    if finite:
        problems += [
            Diagnostic(doc.source.locate(at), format_path(at), "a number must be finite")
            for at in non_finite(doc.data)
        ]
    if problems:
        raise PipelineError(sorted(problems, key=lambda d: (d.location.line, d.location.column)))
    return doc


def non_finite(value: Any, at: Path_ = ()) -> list[Path_]:
    """Where in `value` a float is infinite or not a number."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [at]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite(v, (*at, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in non_finite(v, (*at, i))]
    return []


def load_text(text: str, file: str = "<string>", *, parser_class: Any = None) -> Document:
    """Compose `text` into plain data with a source map; raise PipelineError on bad YAML.

    `parser_class` is PyYAML's C parser where it is built (the pure-Python one otherwise);
    either gives the same document and the same diagnostics."""
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise PipelineError.single(Location(file, line, 1), "", "file contains a NUL byte")
    composer = _compose(text, file, parser_class or _Parser)
    if composer.documents == 0:
        raise PipelineError.single(Location(file, 1, 1), "", "file is empty (expected a mapping)")
    return Document(composer.result, composer.source, text, composer.problems)


# Where the parser stops on a limit of its own (libyaml refuses nesting past 1,000 flow levels
# while it scans ahead, before a single event reaches the composer), the text up to that point is
# composed again by the pure-Python parser, which has no such limit, so the user gets this
# program's located diagnostic whatever the installed version does. Only a prefix up to this
# size is composed again (the pure-Python parser reads about a megabyte a second).
_RECHECK_PREFIX = 1024 * 1024


def _compose(text: str, file: str, parser_class: Any) -> _Composer:
    composer = _Composer(file)
    parser = None
    try:
        parser = parser_class(_join_surrogates(text))
        composer.run(parser)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if parser_class is not yaml.SafeLoader and mark is not None:
            _recheck_depth(text, mark.index, file)
        raise PipelineError([_syntax_error(exc, text, file)]) from None
    except yaml.YAMLError as exc:
        raise PipelineError.single(Location(file), "", f"YAML error: {exc}") from None
    finally:
        if parser is not None:
            parser.dispose()
    return composer


def _recheck_depth(text: str, end: int, file: str) -> None:
    """Raise this program's depth diagnostic if the text before a parser error (at `end`) nests
    deeper than MAX_DEPTH; return quietly otherwise, for the parser's own error to be reported.

    The pure-Python scanner checks every open flow level at every token, so a thousand nested
    brackets cost it seconds: it is first given the text only up to where the brackets (counted
    naively, quotes and all) pass MAX_DEPTH, then twice as deep, and so on; the whole prefix only
    if none of those was enough."""
    if end > _RECHECK_PREFIX:
        return
    cuts = []
    depth, threshold = 0, MAX_DEPTH + 2
    for match in _BRACKET.finditer(text, 0, end):
        depth += 1 if match.group() in "[{" else -1
        if depth >= threshold:
            cuts.append(match.end())
            threshold *= 2
    cuts.append(end)
    for cut in cuts:
        try:
            _compose(text[:cut], file, yaml.SafeLoader)
        except PipelineError as err:
            deep = [d for d in err.diagnostics if d.message == MAX_DEPTH_MESSAGE]
            if deep:
                raise PipelineError(deep) from None


_BRACKET = re.compile(r"[\[\]{}]")


# JSON writes characters beyond U+FFFF as surrogate pairs (`"\ud83d\ude00"`, as json.dump does
# by default); libyaml refuses those escapes, so inside double-quoted strings they are rewritten
# to YAML's own `\U0001f600` (an escaped backslash is matched first and kept).
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SURROGATE_PAIR = re.compile(r"(\\\\)|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE)


def _join_surrogates(text: str) -> str:
    if "\\u" not in text:
        return text

    def pair(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(1)
        high, low = int(match.group(2), 16), int(match.group(3), 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"

    return _DOUBLE_QUOTED.sub(lambda m: _SURROGATE_PAIR.sub(pair, m.group(0)), text)


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, file: str) -> Diagnostic:
    """A YAML syntax error, placed where a person would look and worded for one."""
    problem = exc.problem or exc.context or "invalid YAML"
    mark, start = exc.problem_mark or exc.context_mark, exc.context_mark
    context = exc.context if exc.problem else None
    if mark is not None and problem.startswith("found character that cannot start"):
        char = text[mark.index] if mark.index < len(text) else ""
        if char == "\t":
            problem, context = "found a tab; YAML is indented with spaces, not tabs", None
        elif char:
            problem = f"found character {char!r} that cannot start any token"
            if char in "@`":
                problem += f" ('{char}' is reserved in YAML: quote the value)"
            context = None
    if (
        start is not None
        and mark is not None
        and (start.line, start.column)
        != (
            mark.line,
            mark.column,
        )
    ):
        if problem.startswith("found unexpected end of stream"):
            # An unclosed quote or bracket: the place to fix is where it was opened.
            what = (context or "a value").replace("while scanning ", "").replace("scalar", "string")
            problem, mark, context = f"{what} is never closed", start, None
        else:
            context = f"{context}, which starts at line {start.line + 1}, column {start.column + 1}"
    where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
    suffix = f" ({context})" if context else ""
    return Diagnostic(where, "", f"YAML syntax error: {problem}{suffix}")


class _Composer:
    """Builds plain data from parser events without recursion."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.source = SourceMap(file)
        self.problems: list[Diagnostic] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.stack: list[_Frame] = []
        self.result: Any = None
        self.documents = 0
        self.nodes = 0  # nodes seen in the text
        self.expanded = 0  # nodes added by aliases

    def fail(self, pos: tuple[int, int], path: Path_, message: str) -> PipelineError:
        return PipelineError.single(Location(self.file, pos[0], pos[1]), format_path(path), message)

    def run(self, parser: Any) -> None:
        """Compose the events of `parser` (read one by one: `yaml.parse` wraps the same calls
        in a generator that costs more than most events' handling)."""
        handlers: dict[type, Any] = {
            yaml.ScalarEvent: self.scalar,
            yaml.MappingStartEvent: lambda e: self.open(e, "map", {}),
            yaml.SequenceStartEvent: lambda e: self.open(e, "seq", []),
            yaml.MappingEndEvent: lambda e: self.close(),
            yaml.SequenceEndEvent: lambda e: self.close(),
            yaml.AliasEvent: self.alias,
            yaml.DocumentStartEvent: self.document,
        }
        get_event, end = parser.get_event, yaml.StreamEndEvent
        while True:
            event = get_event()
            kind = type(event)
            if kind is end or event is None:
                return
            handler = handlers.get(kind)
            if handler is not None:
                handler(event)

    def document(self, event: yaml.Event) -> None:
        self.documents += 1
        if self.documents > 1:
            raise self.fail(_pos(event), (), "only one YAML document is allowed per file")

    # -- where the next value goes -------------------------------------------------------

    def next_path(self) -> Path_:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if top.kind == "seq":
            return (*top.path, len(top.value))
        if top.has_key:
            return (*top.path, _path_key(top.pending_key))
        return top.path  # a key: its own position is recorded under the value's path

    def add(self, value: Any, pos: tuple[int, int], path: Path_) -> None:
        if not self.stack:
            self.result = value
            return
        top = self.stack[-1]
        if top.kind == "seq":
            top.value.append(value)
            return
        if not top.has_key:
            self.set_key(top, value, pos)
            return
        key, top.has_key = top.pending_key, False
        if key == "<<" and top.key_pos is not None:
            self.merge(top, value, path)
            return
        top.value[key] = value

    def set_key(self, top: _Frame, key: Any, pos: tuple[int, int]) -> None:
        if isinstance(key, (dict, list)):
            raise self.fail(pos, top.path, "a mapping key must be a plain value, not a collection")
        if not isinstance(key, str):
            text = self.source.texts.pop((*top.path, "?"), str(key))
            quoted = f"'{text}'"
            raise self.fail(
                pos,
                top.path,
                f"mapping key {text} is read by YAML as {_type_name(key)} {_json(key)}; "
                f"quote it ({quoted}) to use it as a name",
            )
        if key in top.key_line:
            first = top.key_line[key]
            self.problems.append(
                Diagnostic(
                    Location(self.file, pos[0], pos[1]),
                    format_path((*top.path, key)),
                    f"duplicate key '{key}' (first defined on line {first})",
                )
            )
        elif key != "<<":
            top.key_line[key] = pos[0]
        top.pending_key, top.key_pos, top.has_key = key, pos, True
        self.source.keys[(*top.path, key)] = pos

    def merge(self, top: _Frame, value: Any, path: Path_) -> None:
        sources = value if isinstance(value, list) else [value]
        for src in sources:
            if not isinstance(src, dict):
                raise self.fail(
                    top.key_pos or (1, 1),
                    path,
                    "a merge key '<<' takes a mapping or a list of them",
                )
            top.merged.append((src, top.key_pos or (1, 1)))

    # -- events ----------------------------------------------------------------------------

    def scalar(self, event: yaml.ScalarEvent) -> None:
        # The hottest path of loading (most events are scalars): `_pos`, `next_path` and the
        # plain-word case of `construct_scalar` written out.
        mark = event.start_mark
        pos = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        self.nodes += 1
        top = self.stack[-1] if self.stack else None
        is_key = top is not None and top.kind == "map" and not top.has_key
        if top is None:
            path: Path_ = ()
        elif is_key:
            path = top.path  # a key: its own position is recorded under the value's path
        elif top.kind == "seq":
            path = (*top.path, len(top.value))
        else:
            path = (*top.path, _path_key(top.pending_key))
        text = event.value
        if event.tag is None and (
            event.style or not event.implicit[0] or (text and text[0] not in _MAYBE_NOT_STR)
        ):
            value: Any = text  # quoted, or a plain word: a string as written
        else:
            value = self.construct_scalar(event, pos, path)
        if is_key:
            if not isinstance(value, str) and not event.style:
                self.source.texts[(*path, "?")] = text
        else:
            self.source.values[path] = pos
            if not isinstance(value, str) and value is not None and not event.style:
                self.source.texts[path] = text
        if event.anchor:
            self.anchors[event.anchor] = (value, 1)
        if top is None or (not is_key and top.kind == "map"):
            self.add(value, pos, path)
        elif is_key:
            self.set_key(top, value, pos)
        else:
            top.value.append(value)

    def construct_scalar(self, event: yaml.ScalarEvent, pos: tuple[int, int], path: Path_) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            plain = event.implicit[0] and not event.style
            if not plain:
                return event.value
            try:
                return _resolve_plain(event.value)
            except ValueError:  # Python refuses ints of more than 4,300 digits
                raise self.fail(
                    pos, path, f"number of {len(event.value):,} digits is too large; quote it"
                ) from None
        if tag not in _SCALAR_TAGS:
            raise self.fail(pos, path, f"unsupported YAML tag '{_short_tag(tag)}'")
        node = yaml.ScalarNode(tag, event.value, None, None, event.style)
        try:
            value = _constructor.yaml_constructors[tag](_constructor, node)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            message = f"cannot read {event.value!r} as {_short_tag(tag)}: {exc}"
            raise self.fail(pos, path, message) from None
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        return value

    def alias(self, event: yaml.AliasEvent) -> None:
        pos = _pos(event)
        path = self.next_path()
        if event.anchor not in self.anchors:
            raise self.fail(pos, path, f"unknown alias '*{event.anchor}'")
        value, size = self.anchors[event.anchor]
        self.expanded += size
        if self.expanded > MAX_ALIAS_NODES:
            raise self.fail(
                pos,
                path,
                f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes "
                "(an alias bomb?); refusing to expand",
            )
        if self.stack and self.stack[-1].kind == "map" and not self.stack[-1].has_key:
            raise self.fail(pos, path, "an alias cannot be used as a mapping key")
        self.source.values.setdefault(path, pos)
        self.add(value, pos, path)

    def open(self, event: yaml.CollectionStartEvent, kind: str, value: Any) -> None:
        pos = _pos(event)
        path = self.next_path()
        if self.stack and self.stack[-1].kind == "map" and not self.stack[-1].has_key:
            raise self.fail(pos, path, "a mapping key must be a plain value, not a collection")
        tag = event.tag
        if tag not in (None, "!") and tag not in (_MAP_TAGS if kind == "map" else _SEQ_TAGS):
            raise self.fail(pos, path, f"unsupported YAML tag '{_short_tag(tag)}'")
        if len(self.stack) >= MAX_DEPTH:
            raise PipelineError.single(
                Location(self.file, pos[0], pos[1]),
                format_path(path[:4]) + "...",
                MAX_DEPTH_MESSAGE,
            )
        self.nodes += 1
        self.source.values[path] = pos
        self.stack.append(_Frame(kind, value, path, event.anchor, self.nodes + self.expanded))

    def close(self) -> None:
        frame = self.stack.pop()
        if frame.kind == "map" and frame.merged:
            explicit = frame.value
            merged: dict[Any, Any] = {}
            # Later sources in a `<<: [*a, *b]` list lose to earlier ones; explicit keys win.
            for src, _ in reversed(frame.merged):
                merged.update(src)
            merged.update(explicit)
            frame.value = merged
        size = self.nodes + self.expanded - frame.start_nodes + 1
        if frame.anchor:
            self.anchors[frame.anchor] = (frame.value, size)
        pos = self.source.values.get(frame.path, (1, 1))
        self.add(frame.value, pos, frame.path)


def _path_key(key: Any) -> str | int:
    return key if isinstance(key, str) else str(key)


def _pos(event: yaml.Event) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
