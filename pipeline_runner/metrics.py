"""`--metrics FILE`: the end of a run as a Prometheus textfile (text exposition format 0.0.4).

Written once, when the run ends, from its `RunResult` (changes.py), and replaced atomically
(`exports.write_report`: a temporary file renamed over it), so node_exporter's textfile
collector never reads half a file.  Every series carries the pipeline's name; each state and
attempt kind is listed, at 0 when nothing had it, so a series does not vanish between runs.
No client library is needed to write this format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import defaults
from .changes import RunResult, StepChanged
from .kinds import FailureKind, RunStatus
from .model import State

PREFIX = "runner_"
SUCCEEDED = "succeeded"  # the kind of an attempt that succeeded (failures: FailureKind)


def escape(value: str) -> str:
    """A label value as the format quotes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _family(
    name: str, kind: str, text: str, samples: Iterable[tuple[str, dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}"]
    lines += [
        f"{PREFIX}{name}{suffix}{_labels(labels)} {_number(v)}" for suffix, labels, v in samples
    ]
    return lines


def _steps(nodes: Mapping[str, StepChanged]) -> list[StepChanged]:
    return [change for change in nodes.values() if change.is_step]


def step_states(steps: list[StepChanged]) -> dict[str, int]:
    counts = {state.value: 0 for state in State}
    for change in steps:
        counts[change.state.value] += 1
    return counts


def attempt_kinds(steps: list[StepChanged]) -> dict[str, int]:
    """The attempts this invocation made, by how they ended."""
    counts = {SUCCEEDED: 0, **{kind.value: 0 for kind in FailureKind}}
    for change in steps:
        for done in change.attempts:
            kind = SUCCEEDED if done.ok else str(done.kind or FailureKind.ERROR)
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def durations(steps: list[StepChanged]) -> list[float]:
    """How long each step that ran in this invocation took, from its first attempt's start."""
    return [
        max(change.finished - change.started, 0.0)
        for change in steps
        if change.attempts and change.started is not None and change.finished is not None
    ]


def histogram(values: list[float], base: dict[str, str]) -> list[tuple[str, dict[str, str], float]]:
    samples: list[tuple[str, dict[str, str], float]] = []
    for bound in defaults.STEP_DURATION_BUCKETS:
        count = sum(1 for v in values if v <= bound)
        samples.append(("_bucket", {**base, "le": repr(float(bound))}, count))
    samples.append(("_bucket", {**base, "le": "+Inf"}, len(values)))
    samples.append(("_sum", base, float(sum(values))))
    samples.append(("_count", base, len(values)))
    return samples


def metrics_text(result: RunResult, pipeline: str) -> str:
    base = {"pipeline": pipeline}
    steps = _steps(result.nodes)
    statuses = [s for s in RunStatus if s is not RunStatus.RUNNING]
    lines = [
        *_family(
            "steps",
            "gauge",
            "Steps of the last run, by state.",
            (("", {**base, "state": s}, n) for s, n in step_states(steps).items()),
        ),
        *_family(
            "attempts",
            "gauge",
            "Attempts the last run made, by how they ended (succeeded, or the failure kind).",
            (("", {**base, "kind": k}, n) for k, n in attempt_kinds(steps).items()),
        ),
        *_family(
            "step_duration_seconds",
            "histogram",
            "How long the steps that ran in the last run took, first attempt to end.",
            histogram(durations(steps), base),
        ),
        *_family(
            "run_duration_seconds",
            "gauge",
            "How long the last run took.",
            [("", base, max(result.finished - result.started, 0.0))],
        ),
        *_family(
            "run_finished_timestamp_seconds",
            "gauge",
            "When the last run ended (Unix time).",
            [("", base, result.finished)],
        ),
        *_family(
            "run_status",
            "gauge",
            "1 for the status the last run ended with, 0 for the others.",
            (("", {**base, "status": str(s)}, int(result.status is s)) for s in statuses),
        ),
        *_family(
            "run_exit_code",
            "gauge",
            "The exit code of the last run.",
            [("", base, result.exit_code)],
        ),
    ]
    return "\n".join(lines) + "\n"
