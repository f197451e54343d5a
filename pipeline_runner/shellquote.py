"""Values put into a `/bin/sh` command string, quoted for the place they land in.

A shell step's `cmd` string is rendered with every `{{ ... }}` value held aside as a marker; the
rendered text is then read as the shell reads it, and each marker is replaced by its value
written for the quoting context the shell is in at that point:

- outside quotes (also inside `$(...)`): one single-quoted word (`shlex.quote`);
- inside single quotes the user wrote (`'{{ v }}'`): the quote is closed, the quoted word put in,
  and the quote opened again, so nothing in the value can end the quote;
- inside double quotes (`"x={{ v }}"`): `$`, a backtick, `\\` and `"` escaped with a backslash
  (a newline stays, as text);
- in a comment: the quoted word with its newlines turned into spaces (a newline would end the
  comment);
- right after an unquoted backslash, a line continuation first, so the backslash escapes nothing
  of the value.

Where no quoting is exact, a value is refused (`ValueError`) rather than inserted: inside a
here-document or its delimiter, backticks, `${...}`, `$'...'`, and anywhere after a `case` inside
`$(...)` (whose `)` ends no substitution) or after `$'...'` (which bash and dash read
differently).  A value marked `| raw` goes in as it is, and a secret
goes in as a reference to the environment variable holding it, written for the context.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

# Where a marker stands: NUL, the render's nonce, the value's index, NUL.  A pipeline file cannot
# hold a NUL byte and the nonce is new for each render, so the user's text never holds one.
MARKER = "\x00{nonce}:{index}\x00"
MARKERS = re.compile("\x00(\\w+):(\\d+)\x00")
# Text with none of these puts every value outside quotes: no need to read it character by
# character.
PLAIN = re.compile("[^'\"\\\\`$#<]*")

_WORD_END = frozenset(" \t\n;&|()<>")


class ShellSecret(str):
    """A secret in a command string: the name of the environment variable that holds it."""

    __slots__ = ()


@dataclass
class _Frame:
    kind: str  # U (unquoted), S, D, A ($'...'), P (${...}), B (backticks), C (comment)
    depth: int = 0  # U inside $( ): open parentheses; P: open braces


@dataclass
class _Reader:
    text: str
    render: Callable[[int, str], str]  # (value index, context) -> text
    out: list[str] = field(default_factory=list)
    stack: list[_Frame] = field(default_factory=lambda: [_Frame("U")])
    heredocs: list[tuple[str, bool]] = field(default_factory=list)
    lost: str = ""  # why no value after this point can be placed exactly
    pos: int = 0


def fill(text: str, nonce: str, value: Callable[[int, str], str]) -> str:
    """`text` with each marker of `nonce` replaced by `value(index, context)`; the context is
    one of "U", "S", "D", "C", "UE" and "DE" (after a backslash).  Raises ValueError where
    a value has no exact quoting."""
    marker = _Markers(nonce)
    if PLAIN.fullmatch(text):
        return MARKERS.sub(
            lambda m: value(int(m.group(2)), "U") if m.group(1) == nonce else m.group(), text
        )
    reader = _Reader(text, value)
    _read(reader, marker)
    return "".join(reader.out)


class _Markers:
    """The markers of one render (those of another nonce are text)."""

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce

    def match(self, text: str, pos: int) -> re.Match[str] | None:
        if not text.startswith("\x00", pos):
            return None
        found = MARKERS.match(text, pos)
        return found if found and found.group(1) == self.nonce else None

    def search(self, text: str) -> bool:
        return any(m.group(1) == self.nonce for m in MARKERS.finditer(text))


# Per context (u: unquoted inside `$(...)`), a run of characters that change nothing there.
_ORDINARY = {
    kind: re.compile(f"[^{chars}\x00]+")
    for kind, chars in {
        "U": "'\"\\\\$`#<\n",
        "u": "'\"\\\\$`#<()\nc",
        "S": "'",
        "D": '"\\\\$`',
        "A": "'\\\\",
        "P": "{}\\\\",
        "B": "`\\\\",
        "C": "\n",
    }.items()
}


def _read(r: _Reader, marker: _Markers) -> None:
    text = r.text
    while r.pos < len(text):
        kind = r.stack[-1].kind
        ordinary = _ORDINARY["u" if kind == "U" and len(r.stack) > 1 else kind].match(text, r.pos)
        if ordinary:
            r.out.append(ordinary.group())
            r.pos = ordinary.end()
            continue
        found = marker.match(text, r.pos)
        if found:
            _value(r, int(found.group(2)), escaped=False)
            r.pos = found.end()
            continue
        ch = text[r.pos]
        frame = r.stack[-1]
        if ch == "\\" and frame.kind in "UDAPB":
            r.out.append(ch)
            r.pos += 1
            after = marker.match(text, r.pos)
            if after:
                _value(r, int(after.group(2)), escaped=True)
                r.pos = after.end()
            elif r.pos < len(text):
                r.out.append(text[r.pos])
                r.pos += 1
            continue
        r.out.append(ch)
        r.pos += 1
        _step(r, frame, ch, text, marker)


def _step(r: _Reader, frame: _Frame, ch: str, text: str, marker: _Markers) -> None:
    nxt = text[r.pos] if r.pos < len(text) else ""
    kind = frame.kind
    if (kind, ch) in (("S", "'"), ("A", "'"), ("B", "`")):
        r.stack.pop()
    elif kind == "C":
        if ch == "\n":
            r.stack.pop()
            _heredoc_bodies(r, marker)
    elif kind == "D":
        if ch == '"':
            r.stack.pop()
        else:
            _substitution(r, ch, nxt)
    elif kind == "P":
        if ch == "{":
            frame.depth += 1
        elif ch == "}":
            frame.depth -= 1
            if frame.depth == 0:
                r.stack.pop()
    elif kind == "U":
        _unquoted(r, frame, ch, nxt, text, marker)


def _substitution(r: _Reader, ch: str, nxt: str) -> bool:
    """`$(`, `${`, `$'` (outside double quotes) and backticks open a frame."""
    if ch == "`":
        r.stack.append(_Frame("B"))
    elif ch == "$" and nxt == "(":
        r.out.append(nxt)
        r.pos += 1
        r.stack.append(_Frame("U", depth=1))
    elif ch == "$" and nxt == "{":
        r.out.append(nxt)
        r.pos += 1
        r.stack.append(_Frame("P", depth=1))
    else:
        return False
    return True


def _unquoted(r: _Reader, frame: _Frame, ch: str, nxt: str, text: str, marker: _Markers) -> None:
    nested = len(r.stack) > 1
    if ch == "'":
        r.stack.append(_Frame("S"))
    elif ch == '"':
        r.stack.append(_Frame("D"))
    elif ch == "$" and nxt == "'":
        r.out.append(nxt)
        r.pos += 1
        r.stack.append(_Frame("A"))
        # bash reads `\'` in $'...' as a quote, dash ends the string there: after it, where
        # quotes are depends on the shell.
        r.lost = r.lost or "a value after $'...' quotes cannot be quoted; use '...' or \"...\""
    elif _substitution(r, ch, nxt):
        pass
    elif ch == "#" and _word_start(text, r.pos - 1):
        r.stack.append(_Frame("C"))
    elif ch == "(" and nested:
        frame.depth += 1
    elif ch == ")" and nested:
        frame.depth -= 1
        if frame.depth == 0:
            r.stack.pop()
    elif ch == "<" and nxt == "<" and text[r.pos + 1 : r.pos + 2] != "<":
        _heredoc_start(r, text, marker)
    elif ch == "\n":
        _heredoc_bodies(r, marker)
    elif nested and ch == "c" and _word_start(text, r.pos - 1) and text.startswith("ase", r.pos):
        end = r.pos + 3
        if end >= len(text) or text[end] in _WORD_END:
            r.lost = r.lost or (
                "a value after a `case` inside $(...) cannot be quoted (where the substitution "
                "ends is not known); move the case into a script, or pass the value in env"
            )


def _word_start(text: str, at: int) -> bool:
    return at == 0 or text[at - 1] in _WORD_END


def _heredoc_start(r: _Reader, text: str, marker: _Markers) -> None:
    """After `<<` (or `<<-`): read the delimiter word; its body starts at the next line."""
    r.out.append(text[r.pos])  # the second <
    r.pos += 1
    strip = text.startswith("-", r.pos)
    start = r.pos + strip
    while start < len(text) and text[start] in " \t":
        start += 1
    end = start
    while end < len(text) and text[end] not in _WORD_END:
        end += 1
    word = text[start:end]
    if marker.search(word):
        raise ValueError("a value cannot be a here-document's delimiter")
    delimiter = word.replace("'", "").replace('"', "").replace("\\", "")
    r.out.append(text[r.pos : end])
    r.pos = end
    r.heredocs.append((delimiter, strip))


def _heredoc_bodies(r: _Reader, marker: _Markers) -> None:
    """At a newline: the bodies of the here-documents opened on that line, copied as they are
    (a value inside one is refused: whether it expands depends on how the delimiter was
    quoted, and a line of it could end the document)."""
    text = r.text
    while r.heredocs:
        delimiter, strip = r.heredocs.pop(0)
        while r.pos < len(text):
            end = text.find("\n", r.pos)
            end = len(text) if end < 0 else end + 1
            line = text[r.pos : end]
            if marker.search(line):
                raise ValueError(
                    "a value inside a here-document cannot be quoted; set it in the step's env "
                    'and write "$NAME"'
                )
            r.out.append(line)
            r.pos = end
            body = line.rstrip("\n")
            if (body.lstrip("\t") if strip else body) == delimiter:
                break


def _value(r: _Reader, index: int, *, escaped: bool) -> None:
    kind = r.stack[-1].kind
    if r.lost:
        raise ValueError(r.lost)
    if kind in "APB":
        where = {"A": "$'...' quotes", "P": "${...}", "B": "backticks"}[kind]
        raise ValueError(f'a value inside {where} cannot be quoted; use $(...) or "$NAME"')
    context = kind + ("E" if escaped and kind in "UD" else "")
    # After a `$`, a value's first character would join it (`$(`, `${`, `$'`, `$NAME`): an
    # empty quoted string between keeps them apart.
    glue = '""' if not escaped and kind in "UD" and r.out and r.out[-1].endswith("$") else ""
    r.out.append(glue + r.render(index, context))


def quote_text(text: str, context: str) -> str:
    """A plain value's text written for `context` (see `fill`)."""
    prefix = "\n" if context.endswith("E") else ""  # after a backslash: a line continuation
    context = context.rstrip("E")
    if context == "S":
        return "'" + shlex.quote(text) + "'"
    if context == "D":
        return prefix + re.sub(r'([$`\\"])', r"\\\1", text)
    if context == "C":
        return shlex.quote(text).replace("\n", " ")
    return prefix + shlex.quote(text)


def quote_secret(name: str, context: str) -> str:
    """A secret's environment variable, expanded as one word in `context`."""
    prefix = "\n" if context.endswith("E") else ""
    context = context.rstrip("E")
    if context == "D":
        return prefix + "${" + name + "}"
    if context == "S":
        return "'\"${" + name + "}\"'"
    return prefix + '"${' + name + '}"'
