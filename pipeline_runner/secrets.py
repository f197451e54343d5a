"""Secrets: read them, and mask them everywhere the runner writes or prints.

A `Masker` knows every form a secret may take in output: the value, each line of a multi-line
value, its Python repr() forms (`{x!r}`, `%r`, a KeyError's message) and the JSON-escaped,
base64 and URL-encoded forms of all of these.  `Masker.text` replaces them with `***`.
Structured data (outputs, report files, events) is masked as values with `Masker.value` before
it is serialised, never as serialised text: a secret of digits then cannot cut a number or a
timestamp in two.  A number equal to a secret becomes `***`; a number that merely contains a
secret's digits is left as it is (it is not the secret, and masking it would change the data).
Transformed secrets (reversed, hex, upper case, hashed) are not recognised.
`StreamMasker` does the same for a byte stream that arrives in arbitrary chunks (a step printing
its secret one byte at a time with flushes): it holds back the few bytes that could still be
the start of a secret until the next chunk tells.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import UsageError

MASK = "***"
MIN_SECRET_LENGTH = 4


def read_secrets(
    names: Iterable[str], environ: Mapping[str, str], secrets_file: str | None = None
) -> dict[str, str]:
    """The values of the declared secrets; a missing or too short one is an error."""
    values: dict[str, str] = {}
    from_file: dict[str, Any] = {}
    if secrets_file:
        from .loader import load_values_file

        data = load_values_file(secrets_file, finite=False).data
        if not isinstance(data, dict):
            raise UsageError(f"{secrets_file}: a secrets file holds a mapping of NAME: value")
        from_file = data
    missing = []
    for name in names:
        value = from_file.get(name, environ.get(name))
        if value is None:
            missing.append(name)
            continue
        text = str(value)
        if len(text) < MIN_SECRET_LENGTH:
            raise UsageError(
                f"secret {name} is shorter than {MIN_SECRET_LENGTH} characters; masking it "
                "would hide ordinary text, so it is refused"
            )
        values[name] = text
    if missing:
        raise UsageError(
            "missing secret"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(missing)
            + ": set the environment variable or pass --secrets-file; nothing was run"
        )
    return values


def forms(value: str) -> set[str]:
    """Every spelling of a secret that masking must catch."""
    import urllib.parse

    out = {value}
    for line in value.splitlines():
        if len(line.strip()) >= MIN_SECRET_LENGTH:
            out.add(line.strip())
    for v in list(out):
        out |= repr_forms(v)
    for v in list(out):
        out.add(json.dumps(v)[1:-1])
        out.add(urllib.parse.quote(v, safe=""))
        out.add(urllib.parse.quote_plus(v))
        raw = v.encode()
        out.add(base64.b64encode(raw).decode())
        out.add(base64.urlsafe_b64encode(raw).decode())
        stripped = base64.b64encode(raw).decode().rstrip("=")
        if len(stripped) >= MIN_SECRET_LENGTH:
            out.add(stripped)
        out |= _base64_lines(raw)
    return {f for f in out if len(f) >= MIN_SECRET_LENGTH}


def repr_forms(value: str) -> set[str]:
    """The secret as it appears inside Python's repr() of a string holding it.  repr() escapes
    backslashes and control characters, and escapes `'` only when the whole string holds a `"`
    too (it then quotes with `'`); other tools escape `"`: every combination is a form."""
    out = set()
    for quotes in ("", "'", '"', "'\""):
        out.add("".join(_repr_char(c, quotes) for c in value))
    return out


def _repr_char(c: str, quotes: str) -> str:
    if c == "\\" or c in quotes:
        return "\\" + c
    return repr(c)[1:-1]


def _base64_lines(raw: bytes) -> set[str]:
    """The base64 of a secret followed by anything (`echo "$X" | base64` adds a newline), as
    tools wrap it: `base64` at 76 columns, PEM and `openssl base64` at 64.  Only the 4-character
    groups that encode secret bytes alone are kept, so whatever follows the secret cannot
    change them; what is left unmasked at the end encodes at most two bytes of it."""
    full = base64.b64encode(raw[: len(raw) // 3 * 3]).decode()
    lines = {full} if len(full) >= 8 else set()
    for width in (64, 76):
        if len(full) > width:
            lines.update(full[i : i + width] for i in range(0, len(full), width))
    return {line for line in lines if len(line) >= 8}


class Masker:
    def __init__(self, values: Iterable[str] = ()) -> None:
        all_forms: set[str] = set()
        for value in values:
            all_forms |= forms(value)
        ordered = sorted(all_forms, key=len, reverse=True)
        self.forms = ordered
        self._re = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None
        self._bre = (
            re.compile(b"|".join(re.escape(f.encode()) for f in ordered)) if ordered else None
        )
        self.longest = max((len(f.encode()) for f in ordered), default=0)

    def __bool__(self) -> bool:
        return self._re is not None

    def text(self, value: str) -> str:
        return self._re.sub(MASK, value) if self._re is not None else value

    def data(self, value: bytes) -> bytes:
        return self._bre.sub(MASK.encode(), value) if self._bre is not None else value

    def value(self, value: Any) -> Any:
        """Mask every string inside a JSON-like value, and every number equal to a secret
        (`***`).  A number that only contains a secret's digits stays that number."""
        if self._re is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return MASK if self._re.fullmatch(str(value)) else value
        return value

    def json(self, value: Any, **options: Any) -> str:
        """`json.dumps` of the masked value: the text stays valid JSON whatever the secrets."""
        return json.dumps(self.value(value), **options)


class StreamMasker:
    """Masks a byte stream written in chunks of any size."""

    def __init__(self, masker: Masker, sink: Any) -> None:
        self.masker = masker
        self.sink = sink
        self.pending = b""
        self.lock = threading.Lock()  # a step's print() and its file descriptors both write

    def write(self, chunk: bytes) -> None:
        with self.lock:
            if not self.masker:
                self.sink(chunk)
                return
            data = self.pending + chunk
            data = self.masker.data(data)
            # Keep back what could still grow into a secret: at most longest-1 bytes.
            # No single-line form of a secret crosses a newline (a multi-line secret is also
            # masked line by line), so everything up to the last newline can go now: a step
            # killed mid-attempt loses none of its finished lines.
            keep = self.masker.longest - 1
            cut = max(len(data) - keep, data.rfind(b"\n") + 1, 0)
            out, self.pending = data[:cut], data[cut:]
            if out:
                self.sink(out)

    def flush(self) -> None:
        with self.lock:
            if self.pending:
                self.sink(self.masker.data(self.pending))
                self.pending = b""
