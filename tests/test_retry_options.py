"""The retry options: each is one field of `RetryPolicy` (its default lives there only), one key
of the schema's `retries`, and one decision in retrying.py.  `max_elapsed` is Argo's
`retryStrategy.backoff.maxDuration`, translated from its retry-backoff example."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from conftest import RunCli, no_traceback

from pipeline_runner.model import RetryPolicy
from pipeline_runner.schema import checked_schema
from pipeline_runner.stepnodes import parse_duration

WritePipeline = Callable[..., Path]


def test_every_retry_option_is_one_field_and_one_schema_key_with_the_same_default() -> None:
    options = checked_schema()["$defs"]["retries"]["properties"]
    fields = {f.name: f for f in dataclasses.fields(RetryPolicy)}
    assert set(options) == set(fields)
    for name, spec in options.items():
        if "default" not in spec:
            continue  # documented as "no limit" / "any failure": None or empty in the model
        default = spec["default"]
        if fields[name].metadata.get("duration"):
            default = parse_duration(default)
        assert default == fields[name].default, name


# Argo Workflows, examples/retry-backoff.yaml: a step that fails, retried with a backoff and
# a maxDuration after which no retry starts.
ARGO_RETRY_BACKOFF = """
version: 1
name: retry-backoff
steps:
  - id: flaky
    uses: shell
    retries:
      max: 50
      delay: 200ms
      backoff: 1
      jitter: false
      max_elapsed: {elapsed}
    with: {{cmd: "date +%s.%N >> tries.txt; exit 1"}}
"""


def attempts(run_cli: RunCli, tmp_path: Path, path: Path) -> int:
    summary = tmp_path / "summary.json"
    result = run_cli("run", str(path), "--progress", "plain", "--json", str(summary), timeout=120)
    assert result.code == 1 and no_traceback(result.output), result.output
    [step] = json.loads(summary.read_text())["steps"]
    assert step["state"] == "failed"
    count = int(step["attempts"])
    assert len((tmp_path / "tries.txt").read_text().splitlines()) == count
    return count


def test_max_elapsed_stops_retrying_once_the_time_since_the_first_attempt_is_up(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    path = write_pipeline(ARGO_RETRY_BACKOFF.format(elapsed="1s"))
    count = attempts(run_cli, tmp_path, path)
    # One attempt every ~0.2 s for 1 s: a handful, never the 51 that `max` allows.
    assert 2 <= count <= 10, count
    times = [float(t) for t in (tmp_path / "tries.txt").read_text().split()]
    # The last retry started before the second was up (plus a loaded machine's slack).
    assert times[-1] - times[0] < 1.0 + 2.0


def test_without_max_elapsed_max_is_the_limit(
    write_pipeline: WritePipeline, run_cli: RunCli, tmp_path: Path
) -> None:
    text = ARGO_RETRY_BACKOFF.format(elapsed="1s").replace("max: 50", "max: 3")
    path = write_pipeline(text.replace("      max_elapsed: 1s\n", ""))
    assert attempts(run_cli, tmp_path, path) == 4


def test_max_elapsed_is_a_duration(write_pipeline: WritePipeline, run_cli: RunCli) -> None:
    path = write_pipeline(ARGO_RETRY_BACKOFF.format(elapsed="soon"))
    result = run_cli("validate", str(path))
    assert result.code == 2 and no_traceback(result.output), result.output
    assert "steps[0].retries.max_elapsed: invalid duration 'soon'" in result.stderr
