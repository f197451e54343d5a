"""The sandboxed, strict Jinja2 environment and the rendering rules of pipeline values.

Rules (SPEC section 3):
- values are rendered in Jinja2's `SandboxedEnvironment` with strict undefined names, so a typo
  is an error, never an empty string; escapes (`__class__`, `.mro()`, `|attr`, `__globals__`)
  raise `TemplateError` as security errors;
- a value that is exactly one `{{ expression }}` keeps the expression's type (list, number,
  mapping); anything else renders to a string, with `None` as "", booleans as true/false and
  lists/mappings as JSON;
- in shell mode (the `cmd` string of a `shell` step) every `{{ ... }}` value is quoted for the
  place it lands in, outside or inside the user's own quotes (`shellquote.py`); the `raw`
  filter opts out for trusted values;
- resource bombs are refused, not computed: `*`, `**`, `+`, `~`, `%`, `join` and `format`
  check the size of what they would build (a value's size is estimated by sampling, so many
  references to one big string count as what they render to), string-widening methods and
  filters check their width, every loop iteration, `range` item and call draws from one
  per-render work budget, and output is streamed and cut at `MAX_OUTPUT` bytes.

`compile_value` parses once and caches; a `Compiled` knows its free names and the `steps.X` it
reads, which the planner uses to decide what can be rendered before the run and to check needs.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import secrets
import shlex
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
import jinja2.visitor
from jinja2.sandbox import SandboxedEnvironment

from .errors import TemplateError, did_you_mean
from .shellquote import MARKER, MARKERS, PLAIN, ShellSecret, fill, quote_secret, quote_text
from .templating_text import MAX_SEQUENCE, check_weight, to_text, weight

MAX_OUTPUT = 1024 * 1024
MAX_RANGE_BUDGET = 1_000_000
MAX_INT_BITS = 100_000

_EXPR_RE = re.compile(r"^\s*\{\{-?(?P<expr>.*?)-?\}\}\s*$", re.DOTALL)
_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("range_budget")


class RawValue(str):
    """A value marked by `| raw`: inserted into a shell command without quoting."""


def _shell_word(value: Any) -> str:
    """A value as one shell word (outside quotes)."""
    if isinstance(value, RawValue):
        return str(value)
    if isinstance(value, ShellSecret):
        return quote_secret(value, "U")
    return shlex.quote(to_text(value))


class _ShellValues:
    """The values of one shell-mode render, held aside (the rendered text holds a marker for
    each) until the whole command is known and each can be quoted for where it landed."""

    def __init__(self) -> None:
        self.nonce = str(secrets.randbelow(10**15))
        self.values: list[Any] = []

    def mark(self, value: Any) -> str:
        if isinstance(value, str) and "\x00" in value:
            # Text rendered from values already (a macro's, a `{% set %}` block's): one value.
            value = MARKERS.sub(self._raw_marker, value)
        self.values.append(value)
        return MARKER.format(nonce=self.nonce, index=len(self.values) - 1)

    def _raw_marker(self, found: re.Match[str]) -> str:
        return self.raw(int(found.group(2))) if found.group(1) == self.nonce else found.group()

    def raw(self, index: int) -> str:
        value = self.values[index]
        if isinstance(value, ShellSecret):
            return quote_secret(value, "U")
        return value if isinstance(value, RawValue) else to_text(value)

    def quoted(self, index: int, context: str) -> str:
        value = self.values[index]
        if isinstance(value, ShellSecret):
            return quote_secret(value, context)
        if isinstance(value, RawValue):
            return str(value)
        return quote_text(to_text(value), context)

    def fill(self, text: str) -> str:
        try:
            out = fill(text, self.nonce, self.quoted)
        except ValueError as exc:
            raise TemplateError(f"in a shell command: {exc}") from None
        if "\x00" + self.nonce in out:
            raise TemplateError(
                "in a shell command: a filter changed text holding a value after it was "
                "rendered; apply the filter to the value itself"
            )
        return out


_shell_values: contextvars.ContextVar[_ShellValues] = contextvars.ContextVar("shell_values")


@jinja2.pass_eval_context  # so that Jinja never applies it to a constant at compile time
def _shell_mark(eval_ctx: Any, value: Any) -> str:
    """The finalize of shell mode: a marker for the value (its quoting comes at the end)."""
    values = _shell_values.get(None)
    return _shell_word(value) if values is None else values.mark(value)


def _shell_streamed(template: jinja2.Template) -> Callable[[Mapping[str, Any]], str]:
    plain = _streamed(template)

    def run(context: Mapping[str, Any]) -> str:
        values = _ShellValues()
        token = _shell_values.set(values)
        try:
            text = plain(context)
        finally:
            _shell_values.reset(token)
        out = values.fill(text)
        if len(out) > MAX_OUTPUT:
            raise TemplateError(f"template renders more than {MAX_OUTPUT:,} characters")
        return out

    return run


def _check_size(result_len: int, what: str) -> None:
    if result_len > MAX_SEQUENCE:
        raise TemplateError(
            f"{what} would build {result_len:,} items, over the limit of {MAX_SEQUENCE:,}"
        )


def _spend(amount: int, what: str) -> None:
    """Draw from the render's work budget (loop iterations, range items, calls)."""
    budget = _budget.get(None)
    if budget is None:
        budget = [MAX_RANGE_BUDGET]
        _budget.set(budget)
    budget[0] -= amount
    if budget[0] < 0:
        raise TemplateError(
            f"{what}; a template may loop, call or draw from range() at most "
            f"{MAX_RANGE_BUDGET:,} times in all"
        )


def _budgeted_range(*args: int) -> range:
    r = range(*args)
    _spend(len(r), f"range() asks for {len(r):,} items")
    return r


def _budgeted_loop(items: Any) -> Iterator[Any]:
    """The iterable of a `{% for %}`, one unit of budget per iteration (a `range()` has paid)."""
    if isinstance(items, range):
        yield from items
        return
    for item in items:
        _spend(1, "a loop runs too many times")
        yield item


# A call (a macro, a method) costs more than a loop turn: ~5-10 µs against ~0.2 µs.
_CALL_COST = 20


def _concat(parts: list[Any]) -> str:
    """`a ~ b`: checked before it is built."""
    check_weight(parts, "'~'")
    return "".join(str(p) for p in parts)  # as Jinja's own `~`


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_format(fmt: str, args: Any, kind: str) -> None:
    """A format string may not ask for huge widths (`'%-1000000000s'`, `'{:>1000000000}'`)."""
    if kind == "%":
        specs = [(w or "") + "." + (p or "") for w, p in _PERCENT_SPEC.findall(fmt)]
    else:
        specs = [spec or "" for _, _, spec, _ in string.Formatter().parse(fmt)]
    for spec in specs:
        if "*" in spec or "{" in spec:  # the width comes from an argument
            values = args if isinstance(args, (tuple, list)) else [args]
            widths = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
            if any(w > MAX_SEQUENCE for w in widths):
                raise TemplateError(f"a format width over the limit of {MAX_SEQUENCE:,}")
        for digits in re.findall(r"\d+", spec):
            _check_size(int(digits) if len(digits) < 20 else MAX_SEQUENCE + 1, "a format width")
    check_weight([fmt, args], f"formatting with {kind}")


def _checked_format(value: Any, *args: Any, **kwargs: Any) -> str:
    """The `format` filter (`'%s' | format(x)`), checked like `%`."""
    values = kwargs or args
    _check_format(str(value), values, "%")
    return str(value) % values


def _checked_join(items: Any, d: str = "", attribute: Any = None) -> str:
    """The `join` filter, checked before it is built."""
    values = list(items)
    if attribute is not None:
        getter = jinja2.filters.make_attrgetter(environment(), attribute)
        values = [getter(v) for v in values]
    check_weight([values, d * len(values)], "join")
    return str(d).join(str(v) for v in values)  # as Jinja's own `join`


def _checked_text(convert: Callable[..., str]) -> Callable[..., str]:
    """A filter that turns a whole value into text (`string`, `tojson`, `pprint`)."""

    def checked(value: Any, *args: Any, **kwargs: Any) -> str:
        check_weight(value, "this value as text")
        return convert(value, *args, **kwargs)

    return checked


def _fromjson(text: Any) -> Any:
    """`fromjson`: JSON text (a named output, a shell step's stdout) as a value: GitHub's
    `fromJSON`.  Its size is checked like any text the template builds."""
    if not isinstance(text, (str, bytes)):
        raise TemplateError(f"fromjson needs JSON text, got {type(text).__name__}")
    check_weight(text, "fromjson")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise TemplateError(f"fromjson: not JSON ({exc})") from None


class _Budgeted(jinja2.visitor.NodeTransformer):
    """Rewrites a template so that loops draw from the work budget and `~` is checked."""

    def visit_For(self, node: jinja2.nodes.For) -> jinja2.nodes.Node:
        self.generic_visit(node)
        node.iter = jinja2.nodes.Filter(node.iter, "_loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: jinja2.nodes.Concat) -> jinja2.nodes.Node:
        self.generic_visit(node)
        items = jinja2.nodes.List(node.nodes, lineno=node.lineno)
        return jinja2.nodes.Filter(items, "_concat", [], [], None, None, lineno=node.lineno)


def _int_bits(value: Any) -> float:
    return math.log2(abs(value)) if isinstance(value, int) and value else 0.0


def _width_checked(filter_func: Callable[..., Any], width_arg: int) -> Callable[..., Any]:
    def checked(*args: Any, **kwargs: Any) -> Any:
        widths = [a for a in args[width_arg:] if isinstance(a, int)]
        widths += [v for v in kwargs.values() if isinstance(v, int)]
        for w in widths:
            _check_size(w, "a width argument")
        return filter_func(*args, **kwargs)

    return checked


def _checked_replace(s: Any, old: Any, new: Any, count: Any = None) -> Any:
    text = str(s)
    n = text.count(str(old)) if old else len(text) + 1
    _check_size(len(text) + n * len(str(new)), "replace")
    return text.replace(str(old), str(new)) if count is None else text.replace(old, new, count)


_WIDENING = {"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map"}


class _Undefined(jinja2.StrictUndefined):
    """Strict, with a message that names the missing key and suggests a close one."""

    @property
    def _undefined_message(self) -> str:
        name = self._undefined_name
        obj = self._undefined_obj
        if obj is jinja2.utils.missing:
            return f"'{name}' is undefined"
        if isinstance(obj, Mapping):
            keys = [str(k) for k in obj]
            shown = ", ".join(sorted(keys)[:10]) or "none"
            return f"no key '{name}' (has: {shown}){did_you_mean(str(name), keys)}"
        return super()._undefined_message


class Sandbox(SandboxedEnvironment):
    """The sandbox with arithmetic and widening calls checked for size."""

    intercepted_binops = frozenset({"*", "**", "<<", "+", "%"})

    def __init__(self, shell: bool = False, words: bool = False) -> None:
        super().__init__(
            undefined=_Undefined,
            finalize=(_shell_word if words else _shell_mark) if shell else to_text,
            autoescape=False,
            keep_trailing_newline=True,
        )
        for name in ("lipsum", "cycler", "joiner"):
            self.globals.pop(name, None)
        self.globals["range"] = _budgeted_range
        self.filters["raw"] = lambda v: RawValue(to_text(v))
        self.filters["tojson"] = _checked_text(
            lambda v, indent=None: json.dumps(v, indent=indent, default=str)
        )
        self.filters["fromjson"] = _fromjson
        self.filters["shquote"] = lambda v: shlex.quote(to_text(v))
        self.filters["replace"] = _checked_replace
        self.filters["format"] = _checked_format
        self.filters["join"] = _checked_join
        for name in ("string", "pprint"):
            self.filters[name] = _checked_text(self.filters[name])
        for name in ("center", "indent", "wordwrap", "truncate", "slice", "batch"):
            self.filters[name] = _width_checked(self.filters[name], 1)
        self.filters["_loop"] = _budgeted_loop
        self.filters["_concat"] = _concat

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`a.b` on a mapping is its key `b` when it has one: a parameter or step named
        `items`, `get` or `copy` is the user's value, never the mapping's method."""
        if isinstance(obj, Mapping) and isinstance(attribute, str):
            try:
                return obj[attribute]
            except (LookupError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def _generate(self, source: jinja2.nodes.Template, *args: Any, **kwargs: Any) -> Any:
        return super()._generate(_Budgeted().visit(source), *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and _int_bits(left) * right > MAX_INT_BITS:
            raise TemplateError(f"{left} ** {right} is too large to compute")
        if operator == "<<" and isinstance(right, int) and right > MAX_INT_BITS:
            raise TemplateError(f"{left} << {right} is too large to compute")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    _check_size(len(seq) * n, "repetition")
            if _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
                raise TemplateError("multiplication result is too large to compute")
        if operator == "+" and isinstance(left, (str, list, tuple)) and type(left) is type(right):
            check_weight([left, right], "'+'")
        if operator == "%" and isinstance(left, str):
            _check_format(left, right, "%")
        try:
            return super().call_binop(context, operator, left, right)
        except OverflowError as exc:
            raise TemplateError(f"arithmetic overflow: {exc}") from None

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend(_CALL_COST, "too many calls (a runaway recursion?)")
        name = getattr(__obj, "__name__", "")
        # The sandbox hands out str.format wrapped; the wrapper keeps the bound method.
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if isinstance(owner, str) and name in _WIDENING:
            for value in (*args, *kwargs.values()):
                if isinstance(value, int):
                    _check_size(value, f"str.{name}")
            if name in ("format", "format_map"):
                _check_format(owner, [*args, *kwargs.values()], f"str.{name}")
        if isinstance(owner, str) and name == "replace":
            return _checked_replace(owner, *args)
        if isinstance(owner, str) and name == "join" and args:
            values = list(args[0])
            check_weight([values, owner * len(values)], "str.join")
            args = (values, *args[1:])
        return super().call(__context, __obj, *args, **kwargs)


_ENVS: dict[tuple[bool, bool], Sandbox] = {}


def environment(shell: bool = False, words: bool = False) -> Sandbox:
    """The sandbox; in shell mode with `words`, one that quotes each value as a shell word
    as it renders (for a command whose values all land outside quotes)."""
    key = (shell, shell and words)
    if key not in _ENVS:
        _ENVS[key] = Sandbox(*key)
    return _ENVS[key]


@dataclass(frozen=True, eq=False)
class Compiled:
    """A parsed template value."""

    source: str
    shell: bool
    expression: bool  # exactly one `{{ expr }}`: keeps its type
    names: frozenset[str]  # free names it reads
    step_refs: frozenset[str]  # X of every steps.X / steps['X']
    dynamic_steps: bool  # reads `steps[...]` with a computed key
    _run: Callable[[Mapping[str, Any]], Any]
    param_refs: frozenset[str] = frozenset()  # X of every params.X / params['X']
    secret_refs: frozenset[str] = frozenset()  # X of every secrets.X / secrets['X']
    run_refs: frozenset[str] = frozenset()  # X of every run.X / run['X']

    def render(self, context: Mapping[str, Any]) -> Any:
        token = _budget.set([MAX_RANGE_BUDGET])
        try:
            return self._run(context)
        except TemplateError:
            raise
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"template security error: {exc}") from None
        except jinja2.exceptions.UndefinedError as exc:
            raise TemplateError(str(exc)) from None
        except jinja2.exceptions.TemplateError as exc:
            raise TemplateError(str(exc)) from None
        except (ArithmeticError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise TemplateError(f"{type(exc).__name__}: {exc}") from None
        except RecursionError:
            raise TemplateError("template recursion is too deep") from None
        except MemoryError:
            raise TemplateError("template needs too much memory") from None
        finally:
            _budget.reset(token)


def _check_native(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, str) and len(value) > MAX_OUTPUT:
        raise TemplateError(f"value renders to {len(value):,} characters, over 1 MiB")
    if isinstance(value, (list, tuple, dict)) and weight(value) > MAX_OUTPUT:
        raise TemplateError(f"value would take about {weight(value):,} characters, over 1 MiB")
    return value


def _streamed(template: jinja2.Template) -> Callable[[Mapping[str, Any]], str]:
    def run(context: Mapping[str, Any]) -> str:
        out: list[str] = []
        size = 0
        chunks: Iterator[str] = template.generate(dict(context))
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateError(f"template renders more than {MAX_OUTPUT:,} characters")
            out.append(chunk)
        return "".join(out)

    return run


def _refs(ast: jinja2.nodes.Template, name: str) -> tuple[frozenset[str], bool]:
    """The keys X read as `name.X` or `name['X']`, and whether a key is computed.

    A method call (`params.get('x')`) reads no key of its own."""
    called = {id(c.node) for c in ast.find_all(jinja2.nodes.Call)}
    refs: set[str] = set()
    dynamic = False
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        target = getattr(node, "node", None)
        if not (isinstance(target, jinja2.nodes.Name) and target.name == name):
            continue
        if isinstance(node, jinja2.nodes.Getattr):
            if id(node) not in called:
                refs.add(node.attr)
        elif isinstance(node, jinja2.nodes.Getitem):
            arg = node.arg
            if isinstance(arg, jinja2.nodes.Const) and isinstance(arg.value, str):
                refs.add(arg.value)
            else:
                dynamic = True
    return frozenset(refs), dynamic


# Filters that take the name of a test, or of a filter, as a string: its position.
_TEST_NAME_ARG = {"select": 0, "reject": 0, "selectattr": 1, "rejectattr": 1}


def _unknown(name: str, known: Mapping[str, Any], what: str) -> None:
    if name not in known:
        public = [n for n in known if not n.startswith("_")]
        raise TemplateError(f"unknown {what} '{name}'{did_you_mean(name, public)}")


def _named_in_args(node: jinja2.nodes.Filter) -> tuple[str, str] | None:
    """(kind, name) of a test or filter named by a string argument: select('odd'), map('upper')."""
    if node.name in _TEST_NAME_ARG:
        index, kind = _TEST_NAME_ARG[node.name], "test"
    elif node.name == "map" and not any(kw.key == "attribute" for kw in node.kwargs):
        index, kind = 0, "filter"
    else:
        return None
    arg = node.args[index] if len(node.args) > index else None
    if isinstance(arg, jinja2.nodes.Const) and isinstance(arg.value, str):
        return kind, arg.value
    return None


def _check_filters_and_tests(ast: jinja2.nodes.Template, env: Sandbox) -> None:
    """Every filter and test a template names exists, so a typo is found before the run."""
    for node in ast.find_all((jinja2.nodes.Filter, jinja2.nodes.Test)):
        if not isinstance(node, jinja2.nodes.Filter):
            _unknown(node.name, env.tests, "test")
            continue
        _unknown(node.name, env.filters, "filter")
        named = _named_in_args(node)
        if named is not None:
            kind, name = named
            _unknown(name, env.tests if kind == "test" else env.filters, kind)


def _shell_places(env: Sandbox, source: str) -> bool:
    """A command without `{% %}` blocks puts its values in the same places whatever they are:
    a place no value can be quoted for is an error now, at validate time, not at run time.
    True when every value lands outside quotes (each is then quoted as it renders)."""
    if "{%" in source or "{#" in source:
        return False
    parts: list[str] = []
    index = 0
    for _, kind, value in env.lex(source):
        if kind == "data":
            parts.append(value)
        elif kind == "variable_begin":
            parts.append(MARKER.format(nonce="check", index=index))
            index += 1
    text = "".join(parts)
    try:
        fill(text, "check", lambda i, context: "")
    except ValueError as exc:
        raise TemplateError(f"in a shell command: {exc}") from None
    return PLAIN.fullmatch(text) is not None


@lru_cache(maxsize=4096)
def compile_value(source: str, shell: bool = False) -> Compiled:
    """Parse a template value once; raises TemplateError with the syntax problem."""
    env = environment(shell)
    match = _EXPR_RE.match(source)
    expr = match.group("expr") if match else None
    expression = expr is not None and not any(t in expr for t in ("{{", "}}", "{%", "{#"))
    try:
        ast = env.parse(source)
        _check_filters_and_tests(ast, env)
        names = frozenset(jinja2.meta.find_undeclared_variables(ast))
        refs, dynamic = _refs(ast, "steps")
        param_refs = _refs(ast, "params")[0]
        secret_refs = _refs(ast, "secrets")[0]
        run_refs = _refs(ast, "run")[0]
        if expression and not shell:
            compiled_expr = env.compile_expression(expr or "", undefined_to_none=False)
            run: Callable[[Mapping[str, Any]], Any] = lambda ctx: _check_native(  # noqa: E731
                compiled_expr(**ctx)
            )
        elif shell:
            if _shell_places(env, source):
                run = _streamed(environment(shell=True, words=True).from_string(source))
            else:
                run = _shell_streamed(env.from_string(source))
        else:
            run = _streamed(env.from_string(source))
    except jinja2.exceptions.TemplateSyntaxError as exc:
        where = f" (line {exc.lineno} of the template)" if source.count("\n") else ""
        raise TemplateError(f"template syntax error: {exc.message}{where}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"template security error: {exc}") from None
    except TemplateError:
        raise
    except Exception as exc:  # constant folding of a literal bomb can fail at compile time
        raise TemplateError(f"template cannot be compiled: {type(exc).__name__}: {exc}") from None
    return Compiled(
        source,
        shell,
        expression and not shell,
        names,
        refs,
        dynamic,
        run,
        param_refs,
        secret_refs,
        run_refs,
    )


def render_value(source: str, context: Mapping[str, Any], shell: bool = False) -> Any:
    return compile_value(source, shell).render(context)


def evaluate_condition(source: str | bool, context: Mapping[str, Any]) -> bool:
    """An `if:` value: a bare Jinja expression (braces allowed) evaluated to a truth value."""
    if isinstance(source, bool):
        return source
    text = source.strip()
    if not (text.startswith("{{") and text.endswith("}}")):
        text = "{{ " + text + " }}"
    return bool(render_value(text, context))
