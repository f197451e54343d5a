"""What a pipeline means, end to end through the real `runner`: run-time `for_each` keys,
names that shadow dict methods, the run header, attempts of template failures, `--dry-run`
answers (cache, `if`), and the validate-time checks of step references, filters, tests and
the keys of template instances."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunCli, no_traceback

WritePipeline = Callable[..., Path]


def states(stdout: str) -> dict[str, str]:
    """Last state of each step, from the plain progress lines."""
    seen: dict[str, str] = {}
    for line in stdout.splitlines():
        m = re.match(r"^\d\d:\d\d:\d\d \S+ (\w+)\s+([^\s:]+)", line)
        if m:
            seen[m.group(2)] = m.group(1)
    return seen


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


# -- (6) run-time for_each: two items with one key ---------------------------------------------

DUPLICATE_KEYS = """
version: 1
name: dupkeys
steps:
  - id: src
    uses: shell
    with:
      cmd: ["echo", '{items}']
      parse: json
  - id: fan
    needs: src
    for_each: "{{{{ steps.src.output }}}}"
    uses: shell
    with: {{cmd: "echo {{{{ item }}}}"}}
"""


@pytest.mark.parametrize(("items", "key"), [('[5, "0"]', "0"), ('[null, "1", null, "2"]', "2")])
def test_a_dynamic_for_each_with_two_items_of_one_key_fails_the_step(
    run_cli: RunCli, write_pipeline: WritePipeline, items: str, key: str
) -> None:
    path = write_pipeline(DUPLICATE_KEYS.format(items=items))
    result = run_cli("run", str(path), "--progress", "plain")
    message = f"two items have the key '{key}'; set `key:` to tell them apart"
    assert result.code == 1, result.output
    assert message in result.stdout, result.stdout
    seen = states(result.stdout)
    assert seen["fan"] == "failed", seen
    assert not [s for s in seen if s.startswith("fan.")], seen  # nothing ran, nothing dropped
    assert no_traceback(result.output)


def test_the_static_form_of_two_items_of_one_key_has_the_same_message(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: dupstatic
        steps:
          - id: fan
            for_each: [5, "0"]
            uses: noop
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2
    assert "two items have the key '0'; set `key:` to tell them apart" in result.stderr


# -- (10) names like dict methods --------------------------------------------------------------

METHOD_NAMES = ["items", "keys", "values", "get", "update", "pop", "copy"]


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_parameters_named_like_dict_methods_are_the_values(
    run_cli: RunCli, write_pipeline: WritePipeline, name: str
) -> None:
    path = write_pipeline(
        f"""
        version: 1
        name: methods
        params:
          {name}: [a, b]
        steps:
          - id: show
            uses: shell
            with:
              cmd: ["echo", "{{{{ params.{name} | join('+') }}}}"]
        outputs:
          seen: "{{{{ params.{name} }}}}"
          shown: "{{{{ steps.show.output }}}}"
        """
    )
    validated = run_cli("validate", str(path))
    assert validated.code == 0, validated.output
    dry = run_cli("run", str(path), "--dry-run")
    assert '"a+b"' in dry.stdout, dry.stdout
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 0, result.output
    outputs = json.loads(result.stdout.split("outputs:\n", 1)[1])
    assert outputs == {"seen": ["a", "b"], "shown": "a+b"}


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_step_ids_named_like_dict_methods_are_the_steps(
    run_cli: RunCli, write_pipeline: WritePipeline, name: str
) -> None:
    path = write_pipeline(
        f"""
        version: 1
        name: methods
        steps:
          - id: {name}
            uses: shell
            with: {{cmd: "echo from-{name}"}}
          - id: after
            needs: {name}
            uses: shell
            with: {{cmd: "echo got {{{{ steps.{name}.output }}}} {{{{ steps.{name}.state }}}}"}}
        outputs:
          seen: "{{{{ steps.after.output }}}}"
        """
    )
    validated = run_cli("validate", str(path))
    assert validated.code == 0, validated.output
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 0, result.output
    outputs = json.loads(result.stdout.split("outputs:\n", 1)[1])
    assert outputs == {"seen": f"got from-{name} succeeded"}


# -- (15a) the run header counts steps as validate does ------------------------------------------


def test_the_run_header_counts_a_mapped_step_as_validate_does(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(DUPLICATE_KEYS.format(items='["a", "b"]'))
    validated = run_cli("validate", str(path))
    assert validated.stdout.strip().endswith("ok (2 steps)"), validated.output
    result = run_cli("run", str(path), "--progress", "plain", "--workers", "3")
    assert result.code == 0, result.output
    assert ": dupkeys, 2 steps, process executor, 3 workers" in result.stdout, result.stdout


def test_the_run_header_says_one_step_and_one_worker(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: single
        steps:
          - id: only
            uses: noop
        """
    )
    validated = run_cli("validate", str(path))
    assert validated.stdout.strip().endswith("ok (1 step)"), validated.output
    result = run_cli("run", str(path), "--progress", "plain", "--workers", "1")
    assert result.code == 0, result.output
    assert ": single, 1 step, process executor, 1 worker\n" in result.stdout, result.stdout


# -- (15b) a template error at run time is attempt 1 ---------------------------------------------


def test_a_step_failed_by_a_template_error_reads_attempt_1(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: terr
        steps:
          - id: src
            uses: shell
            with: {cmd: 'echo "{\\"a\\": 1}"', parse: json}
          - id: bad
            needs: src
            uses: shell
            with: {cmd: "echo {{ steps.src.output.b }}"}
        """
    )
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 1, result.output
    assert "✗ bad (failed, attempt 1): template error: no key 'b' (has: a)" in result.stdout
    assert "attempt 0" not in result.output


# -- (15e) steps.odd-or-even -----------------------------------------------------------------------


def test_a_hyphenated_step_id_read_with_a_dot_suggests_brackets(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: hyphen
        steps:
          - id: odd-or-even
            uses: shell
            with: {cmd: "echo 1"}
          - id: after
            needs: odd-or-even
            uses: shell
            with: {cmd: "echo {{ steps.odd-or-even.output }}"}
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2
    assert errors_of(result.stderr) == [
        f"{path}:10:17: error: steps[1].with.cmd: steps.odd-or-even reads as "
        "steps.odd - or - even (a subtraction); write steps['odd-or-even']"
    ], result.stderr
    assert no_traceback(result.output)


# -- (15f) unknown filters and tests ---------------------------------------------------------------


FILTERS = """
version: 1
name: filters
steps:
  - id: src
    uses: shell
    with: {{cmd: "echo '[\\"a\\", \\"bb\\"]'", parse: json}}
  - id: show
    needs: src
    uses: noop
    with:
{values}
"""


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("xs | select('search', 'a') | list", "unknown test 'search'"),
        ("xs | reject('sameas_', 'a') | list", "unknown test 'sameas_' (did you mean 'sameas'?)"),
        ("xs | selectattr('x', 'eqaul', 1) | list", "unknown test 'eqaul' (did you mean 'equal"),
        ("xs | rejectattr('x', 'nosuch') | list", "unknown test 'nosuch'"),
        ("xs | map('uper') | list", "unknown filter 'uper' (did you mean 'upper'?)"),
        ("xs | lenght", "unknown filter 'lenght' (did you mean 'length'?)"),
        ("xs is sequense", "unknown test 'sequense' (did you mean 'sequence'?)"),
    ],
)
def test_unknown_filters_and_tests_are_found_by_validate(
    run_cli: RunCli, write_pipeline: WritePipeline, expr: str, message: str
) -> None:
    expr = expr.replace("xs", "steps.src.output", 1)
    path = write_pipeline(FILTERS.format(values=f'      value: "{{{{ {expr} }}}}"'))
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    (line,) = errors_of(result.stderr)
    assert line.startswith(f"{path}:11:14: error: steps[1].with.value: {message}"), line
    assert no_traceback(result.output)


def test_known_filters_and_tests_in_select_and_map_pass_validate_and_run(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    values = [
        "      a: \"{{ steps.src.output | select('equalto', 'a') | map('upper') | list }}\"",
        "      b: \"{{ steps.src.output | map(attribute='x', default=1) | list }}\"",
        "      c: \"{{ steps.src.output | reject('in', ['a']) | list }}\"",
    ]
    path = write_pipeline(FILTERS.format(values="\n".join(values)))
    result = run_cli("validate", str(path))
    assert result.code == 0, result.output
    result = run_cli("run", str(path), "--progress", "plain")
    assert result.code == 0, result.output


# -- (15c, 15d) --dry-run answers what a run would do ----------------------------------------------


def dry_lines(run_cli: RunCli, path: Path, *args: str) -> dict[str, str]:
    result = run_cli("run", str(path), "--dry-run", *args)
    assert result.code == 0, result.output
    found = {}
    for line in result.stdout.splitlines():
        m = re.match(r"^- (\S+) \[\w+\](?: \(mapped[^)]*\))?: (.*)$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def test_dry_run_evaluates_an_if_that_reads_only_params(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: conditions
        params:
          target: staging
        steps:
          - id: prod_only
            if: params.target == 'prod'
            uses: noop
          - id: staging_only
            if: "{{ params.target == 'staging' }}"
            uses: noop
          - id: never
            if: false
            uses: noop
          - id: always
            if: true
            uses: noop
          - id: later
            needs: prod_only
            trigger: none_failed
            if: steps.prod_only.state == 'skipped'
            uses: noop
          - id: after_prod
            needs: prod_only
            uses: noop
          - id: after_that
            needs: after_prod
            uses: noop
        """
    )
    assert dry_lines(run_cli, path) == {
        "prod_only": "skip (if: params.target == 'prod')",
        "staging_only": "run (if: params.target == 'staging')",
        "never": "skip (if: false)",
        "always": "run",
        "later": "run if steps.prod_only.state == 'skipped' (evaluated at run time)",
        "after_prod": "skip (needs prod_only, which would be skipped)",
        "after_that": "skip (needs after_prod, which would be skipped)",
    }
    prod = dry_lines(run_cli, path, "--param", "target=prod")
    assert prod["prod_only"] == "run (if: params.target == 'prod')"
    assert prod["staging_only"] == "skip (if: params.target == 'staging')"


def test_dry_run_says_cached_for_a_step_the_cache_would_answer(
    run_cli: RunCli, write_pipeline: WritePipeline
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: cached
        params:
          word: one
        steps:
          - id: build
            uses: shell
            cache: true
            with: {cmd: "echo {{ params.word }}"}
          - id: after
            needs: build
            uses: shell
            cache: true
            with: {cmd: "echo after"}
          - id: plain
            uses: noop
        """
    )
    before = dry_lines(run_cli, path)
    assert before["build"] == "run (cache: no stored result with this key)", before
    first = run_cli("run", str(path), "--progress", "plain")
    assert first.code == 0, first.output
    after = dry_lines(run_cli, path)
    assert after == {
        "build": "cached (a stored result has the same key)",
        "after": "cached (a stored result has the same key)",
        "plain": "run",
    }
    assert dry_lines(run_cli, path, "--no-cache")["build"] == "run (--no-cache)"
    second = run_cli("run", str(path), "--progress", "plain")
    assert states(second.stdout) == {"build": "cached", "after": "cached", "plain": "succeeded"}
    changed = dry_lines(run_cli, path, "--param", "word=two")
    assert changed["build"] == "run (cache: no stored result with this key)", changed
    assert changed["after"] == "run (cache: a need runs first)", changed


# -- (3, 4) keys on a step that instantiates a template -------------------------------------------
# (`max_parallel` applies to a fan-out of templates: test_matrix.py.)

INSTANCE_KEYS = {
    "if": "params.go",
    "timeout": "1s",
    "retries": "2",
    "continue_on_error": "true",
    "priority": "5",
    "pool": "db",
    "env": "{A: b}",
    "trigger": "all_done",
    "skip_exit_codes": "[99]",
    "cache": "true",
    "resources": "{gpu: 1}",
}


# `if`, `timeout`, `retries`, `continue_on_error`, `priority`, `pool` and `env` apply to the
# instance's steps (tests/test_job_keys.py); these do not (yet).
@pytest.mark.parametrize("key", ["trigger", "skip_exit_codes", "cache", "resources"])
def test_keys_a_template_instance_cannot_apply_are_rejected_not_ignored(
    run_cli: RunCli, write_pipeline: WritePipeline, key: str
) -> None:
    path = write_pipeline(
        f"""
        version: 1
        name: instance
        params:
          go: true
        pools:
          db: 1
        templates:
          one:
            params:
              n: {{}}
            steps:
              - id: work
                uses: noop
        steps:
          - id: each
            for_each: [1, 2, 3]
            template: one
            {key}: {INSTANCE_KEYS[key]}
            with:
              n: "{{{{ item }}}}"
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    assert errors_of(result.stderr) == [
        f"{path}:18:5: error: steps[0].{key}: `{key}` is not supported on a step that "
        "instantiates a template yet; set it on the template's steps"
    ], result.stderr
    ran = run_cli("run", str(path), "--progress", "plain")
    assert ran.code == 2 and "nothing was run" in ran.stderr, ran.output


@pytest.mark.parametrize("key", ["if", "timeout", "retries", "continue_on_error", "pool"])
def test_keys_an_inlined_pipeline_cannot_apply_are_rejected_not_ignored(
    run_cli: RunCli, write_pipeline: WritePipeline, tmp_path: Path, key: str
) -> None:
    """`if: false` on a `uses: pipeline` step used to run the inlined steps anyway."""
    (tmp_path / "inner.yaml").write_text(
        "version: 1\nname: inner\nsteps:\n  - id: x\n    uses: shell\n"
        "    with: {cmd: 'echo ran > ran.txt'}\n"
    )
    path = write_pipeline(
        f"""
        version: 1
        name: outer
        params:
          go: false
        pools:
          db: 1
        steps:
          - id: sub
            uses: pipeline
            {key}: {INSTANCE_KEYS[key]}
            with: {{file: inner.yaml}}
        """
    )
    result = run_cli("validate", str(path))
    assert result.code == 2, result.output
    assert errors_of(result.stderr) == [
        f"{path}:10:5: error: steps[0].{key}: `{key}` is not supported on a step that inlines "
        "a pipeline (`uses: pipeline`) yet; set it on the inlined file's steps"
    ], result.stderr
    ran = run_cli("run", str(path), "--progress", "plain")
    assert ran.code == 2 and not (tmp_path / "ran.txt").exists(), ran.output
