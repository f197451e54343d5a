"""Every scenario of FAULTS.md (the behaviour users rely on when things go wrong) is held by at
least one test, marked `@pytest.mark.fault(N)`.

The markers are read from the test files' source (their syntax tree), not from a collection, so
this holds however much of the suite is collected (`pytest tests/faults` alone too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent

SCENARIOS = {
    1: "a step's process killed with SIGKILL",
    2: "a step ignoring SIGTERM past its timeout",
    3: "a timed-out step's grandchild holding its stdout",
    4: "a grandchild escaping with setsid",
    5: "a python step swallowing BaseException",
    6: "a worker process dying while other steps run",
    7: "an exception that cannot be pickled or unpickled",
    8: "an output that is not JSON or over 16 MiB",
    9: "a step printing gigabytes, or one endless line",
    10: "a step reading stdin",
    11: "Ctrl-C once",
    12: "Ctrl-C twice",
    13: "CI cancellation: SIGINT, then SIGTERM, then the kill",
    14: "the runner killed with SIGKILL mid-run",
    15: "resume while a step process of the killed run lives",
    16: "the pipeline changed between the run and resume",
    17: "the runner killed during state commits",
    18: "the disk filling while a step writes its log",
    19: "the store cannot be written",
    20: "a corrupt store file",
    21: "several runs at once sharing a state dir",
    22: "duplicate keys at any depth; merge keys",
    23: "alias bombs",
    24: "deep nesting",
    25: "files over the size limit",
    26: "YAML tags such as !!python/object/apply",
    27: "YAML 1.1 surprises",
    28: "unknown keys, typos, wrong types; fuzzed documents",
    29: "cycles, self-needs, unknown needs",
    30: "template escapes",
    31: "template resource bombs",
    32: "parameter values that look like shell",
    33: "keys and tenant names that look like paths",
    34: "secrets never on a process's argv",
    35: "terminal escapes and CI commands printed by a step",
    # The second round (issue 14), numbered on from FAULTS.md.
    36: "a step killing its worker, with siblings just returned on it",
    37: "report files that are symlinks, FIFOs, devices or stdout",
    38: "ids that collide after qualification (a key with '.')",
    39: "two resumes of one run at once, or a resume of a run still running",
    40: "secrets in run-time error messages, ids and annotations",
    41: "repr() forms of a secret",
    42: "secrets of digits inside numbers, timestamps and structured reports",
    43: "values inside the user's own quotes around {{ }} in a shell command",
    44: "untrusted text echoed by validate, logs and error messages",
    45: "a dead run whose runner's pid was reused",
    46: "durations and --grace past what the runner can wait for",
    47: "report destinations that cannot be written",
    48: "environment names and values the operating system refuses",
    49: "ids too long for a file name; line breaks in ids and keys",
    50: "a nested pipeline file importing from its own folder",
    51: "one cache: true step in two project folders sharing a state dir",
    52: "state a step leaves in its long-lived worker (environment, signals, threads)",
    53: "careless input: duplicate keys in values files, empty run id, inf, 400 workers, ...",
}


def _is_fault_marker(node: ast.expr) -> bool:
    """`pytest.mark.fault(...)` (or `mark.fault(...)`)."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    owner = node.func.value
    return node.func.attr == "fault" and (
        (isinstance(owner, ast.Attribute) and owner.attr == "mark")
        or (isinstance(owner, ast.Name) and owner.id == "mark")
    )


def fault_markers() -> Iterator[tuple[str, int]]:
    """(test, scenario) for every `fault` marker on a test function under tests/."""
    for path in sorted(TESTS.rglob("test_*.py")):
        module = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(module):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for decorator in node.decorator_list:
                if not _is_fault_marker(decorator):
                    continue
                assert isinstance(decorator, ast.Call)
                where = f"{path.relative_to(TESTS)}::{node.name}"
                assert node.name.startswith("test"), f"{where}: a fault marker on a non-test"
                assert len(decorator.args) == 1 and not decorator.keywords, (
                    f"{where}: write one scenario per marker, @pytest.mark.fault(N)"
                )
                number = decorator.args[0]
                assert isinstance(number, ast.Constant) and isinstance(number.value, int), (
                    f"{where}: the scenario must be a literal integer"
                )
                assert number.value in SCENARIOS, f"{where}: no scenario {number.value}"
                yield where, number.value


def test_every_scenario_has_a_test() -> None:
    held: dict[int, list[str]] = {}
    for test, scenario in fault_markers():
        held.setdefault(scenario, []).append(test)
    missing = {n: title for n, title in SCENARIOS.items() if n not in held}
    assert not missing, f"FAULTS.md scenarios no test holds: {missing}"


def test_the_marker_is_registered_and_strict(pytestconfig: object) -> None:
    """`--strict-markers` refuses a misspelt marker; `fault` has to be declared for that."""
    markers = pytestconfig.getini("markers")  # type: ignore[attr-defined]
    assert any(line.startswith("fault(n):") for line in markers), markers
