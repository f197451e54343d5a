"""Text the runner did not write itself, made safe to print: what a step printed, messages
that quote a pipeline file, step ids and keys built from data.

One function, `printable`, does it for every place that echoes such text (reporters, log
tails, `runner logs`, `runner show`, `runner validate` and every error message):
- control characters become visible escapes (`\\x1b`), so nothing moves the cursor, retitles
  the terminal or hides a line; in a one-line message a line break is shown as `\\n`;
- under a CI system (GitHub Actions, Azure Pipelines) a line that starts with `::` or holds
  `##[` / `##vso[` would be read as a workflow command (`::add-mask::`, `::error::`,
  `::stop-commands::`): its first `:` or `#` is shown escaped (`\\x3a`, `\\x23`) instead.
  GitHub's runner reads `##[` anywhere in a line and `::` after any leading white space,
  Unicode spaces included.

JSON and XML that runner prints on stdout in CI (`--json -`, `runner logs --json`, `--junit -`,
the outputs at the end of a run) go through `ci_report`, which spells the same characters so
that the value is unchanged and no CI reads a command in it.
"""

from __future__ import annotations

import os
import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e]")
# GitHub's runner trims every Unicode space (C#'s Char.IsWhiteSpace: NBSP, U+2000-U+200A, U+3000
# ...) off a line before it looks for `::`; Python's `\s` is the same set.
_CI_COMMAND = re.compile(r"^(\s*):(?=:)", re.M)
_CI_MARKER = re.compile(r"#(?=#(?:vso)?\[)", re.I)


def in_ci() -> bool:
    """Is the output read by a CI system that takes commands from log lines?"""
    return os.environ.get("GITHUB_ACTIONS") == "true" or os.environ.get("TF_BUILD") == "True"


def printable(
    text: str, *, one_line: bool = True, ci: bool | None = None, behind: bool = False
) -> str:
    """`text`, safe to print; `one_line=False` keeps line breaks (a log shown as it is).
    `behind`: the text is printed behind a prefix of the runner's (a log tail's `| `), so
    none of its lines starts a line and only `##[` can still be read as a command."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if one_line:
        text = text.replace("\n", "\\n")
    if in_ci() if ci is None else ci:
        if not behind:
            text = _CI_COMMAND.sub("\\1\\\\x3a", text)
        text = _CI_MARKER.sub("\\\\x23", text)
    return text


def ci_report(text: str, *, xml: bool = False) -> str:
    """JSON text printed where a CI system reads it (`runner logs --json`, `--json -`): a `#`
    that starts `##[` inside a string is written `\\u0023`, the same JSON value that no CI reads
    as a command.  (A JSON line never starts with `::` outside a string, and a `#` is never
    escaped in JSON, so the replacement cannot break an escape sequence.)  `xml`: XML text,
    where the `#` is written `&#35;` and a `:` that starts a line's `::` is written `&#58;`."""
    if not in_ci():
        return text
    if xml:  # text and attributes may hold line breaks: a line may start with `::`
        return _CI_MARKER.sub("&#35;", _CI_COMMAND.sub("\\1&#58;", text))
    return _CI_MARKER.sub("\\\\u0023", text)
