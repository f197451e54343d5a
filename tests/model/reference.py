"""A reference model of runner's run semantics, written from the manual (docs/semantics.md,
docs/pipeline-file.md, docs/templating.md, docs/commands.md), not from the scheduler.

It is a small sequential interpreter: steps are visited in file order (every `needs` points to
an earlier step), each attempt's outcome is data (`Outcome`), and no process is started. The
test in tests/test_model.py runs the same pipelines through the real `runner` and compares.

What the model encodes, with the sentence of the manual it comes from:

- States (semantics.md, "Step states"): `succeeded`, `failed`, `failed_allowed`, `skipped`,
  `upstream_failed`, `cancelled`. A run ends `succeeded` (exit 0) or `failed` (exit 1).
- `needs` and trigger rules (semantics.md, "Trigger rules and skips"): a step is decided when
  all its needs have ended, by its `trigger` (default `all_success`: every need `succeeded`,
  `cached` or `failed_allowed`). When the rule does not hold it is `upstream_failed` if a need
  is `failed` or `upstream_failed`, else `skipped` (a skipped need skips its dependents).
  A fan-out need counts with its state from the state table. `needs` on a fan-out waits for
  every instance; its output is the list of the outputs of the instances that were not
  skipped, in item order, `outputs` the mapping key -> output of those.
- `if` (semantics.md, "if"): evaluated when the rule holds; false makes the step `skipped`
  with output `null`. An `if` calling a status function decides alone: `success()` (every
  need succeeded and no ancestor failed), `failure()` (a need or any ancestor is `failed` or
  `upstream_failed`), `always()`, `cancelled()` (false in a keep-going run). In `finally`
  steps they read the run's status.
- `skip_exit_codes`: an attempt that exits with one of them makes the step `skipped`: no retry,
  not a failure (python steps: an exception with that `exit_code`).
- `continue_on_error`: a failure becomes `failed_allowed`, does not fail the run, dependents run.
- `retries` (semantics.md, "retries"): `max` extra attempts after the first; `on` restricts
  retries to failure kinds (`error`, `timeout`, `crash`) and/or exit codes. A failure with an
  exit code is of kind `error`, so `on: [error]` retries it too.
- `for_each` over a literal list: one instance `<id>.<key>` per item (a string item is its key).
  A one-axis matrix (`for_each: {matrix: {k: [a, b]}}`, semantics.md "A matrix") is the same
  fan-out: one instance per value, keyed by the value, its item the mapping `{k: value}`.
- `finally` (semantics.md, "finally and outputs"): runs after every other step, succeeded or
  not, with `run.status` the status of the main steps; may read any main step without `needs`,
  and a `needs` on a failed main step does not stop it. A failing `finally` step fails the run.
- `outputs`: rendered when the run succeeded (empty in the summary otherwise).
- `--fail-fast` (commands.md): stop scheduling and cancel running steps at the first failure;
  the default is keep-going ("a failure stops only what depends on it"). Which steps finished
  before the first failure depends on timing, so `check_fail_fast` checks bounds, not equality.
- `runner resume` (commands.md): runs again what did not succeed (failed, failed_allowed,
  upstream_failed, cancelled, never started), keeping what succeeded (and what was skipped, a
  step that is "done"); same run id, attempt numbers go on from the recorded ones (tutorial:
  "note attempt 2"), each re-run step gets its full retry budget again. `finally` steps run
  again, with the new `run.status`. Resume is keep-going (`--fail-fast` is not an option of
  `resume`).
- `runner resume --only SEL` (commands.md): re-runs only the slice (SEL plus what it needs);
  `finally` steps run again only when the slice selects them; the run's status is over all
  its steps (a step left out that had not succeeded keeps the run `failed`).
- `runner resume --rerun GLOB` (commands.md, "Re-running what succeeded"): the steps GLOB
  selects run again even if they succeeded, and with them everything downstream (a step whose
  need is not kept is not kept: the same rule as above); it works on a succeeded run too.
- Success policies (semantics.md, "Success policies"): `success: {min: N, ratio: R}` on a
  `for_each` (either or both). When an instance is `failed`, at least N instances `succeeded`
  and so did at least the share R of those not `skipped`, the fan-out reads
  `partial`: its dependents run (`partial` counts as a success for trigger rules), its outputs
  leave the failed instances out, and those failures do not fail the run. When fewer
  succeeded it is what it would be without a policy (`failed`).
- `defaults.retries` / `defaults.continue_on_error` apply to every step that does not set them
  (main and `finally`); `run.attempt` / `ctx.attempt` is the attempt number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

# --- the pipeline, as data ------------------------------------------------------------------

OutcomeKind = Literal["ok", "error", "exit", "timeout"]
Plugin = Literal["python", "shell"]

# The states that do not fail the run.
OK_FOR_DEPENDENTS = frozenset({"succeeded", "cached", "skipped", "failed_allowed", "partial"})
# what trigger rules call success
SUCCESS = frozenset({"succeeded", "cached", "failed_allowed", "partial"})
FAILURE = frozenset({"failed", "upstream_failed"})
TRIGGERS = (
    "all_success",
    "all_done",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
)
# A skipped step is not kept: resume evaluates its `if` again (what it read may have changed).
KEPT_BY_RESUME = frozenset({"succeeded", "cached"})


@dataclass(frozen=True)
class Outcome:
    """What one attempt does: return `value`, raise, exit with `code`, or time out."""

    kind: OutcomeKind
    value: int = 0
    code: int = 1

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def error_kind(self) -> str | None:
        return None if self.ok else ("timeout" if self.kind == "timeout" else "error")

    @property
    def exit_code(self) -> int | None:
        return self.code if self.kind == "exit" else None


@dataclass(frozen=True)
class Retries:
    max: int
    on: tuple[str | int, ...] | None = None  # None: any failure

    def retries(self, outcome: Outcome) -> bool:
        if self.on is None:
            return True
        return outcome.error_kind in self.on or (
            outcome.exit_code is not None and outcome.exit_code in self.on
        )


@dataclass(frozen=True)
class ParamCond:
    """`if: params.NAME` or `if: not params.NAME`."""

    name: str
    negate: bool = False


@dataclass(frozen=True)
class LiteralCond:
    """`if: true` / `if: false` (YAML booleans)."""

    value: bool


@dataclass(frozen=True)
class StateCond:
    """`if: "{{ steps.X.state == 'S' }}"`."""

    step: str
    state: str


@dataclass(frozen=True)
class OutputCond:
    """`steps.X.output is not none and <X's number> >= threshold` (X a plain step)."""

    step: str
    threshold: int


@dataclass(frozen=True)
class ItemCond:
    """`if: item == 'KEY'` in a `for_each` instance (the item is rendered at plan time)."""

    key: str
    negate: bool = False


@dataclass(frozen=True)
class RunStatusCond:
    """`if: run.status == 'S'` (finally steps only)."""

    status: str


@dataclass(frozen=True)
class StatusCond:
    """`if: success()` / `failure()` / `always()` / `cancelled()`."""

    function: str


Cond = ParamCond | LiteralCond | StateCond | OutputCond | ItemCond | RunStatusCond | StatusCond


@dataclass(frozen=True)
class Step:
    id: str
    plugin: Plugin = "python"
    needs: tuple[str, ...] = ()
    cond: Cond | None = None
    continue_on_error: bool | None = None  # None: not set (`defaults` applies)
    retries: Retries | None = None  # None: not set (`defaults` applies)
    for_each: tuple[str, ...] | None = None  # literal list of string items (= keys)
    trigger: str | None = None  # None: not set (all_success)
    skip_exit_codes: tuple[int, ...] = ()
    matrix: bool = False  # for_each written as a one-axis matrix (the same instances)
    success_min: int | None = None  # `success: {min: N}` on a for_each
    success_ratio: float | None = None  # `success: {ratio: R}` (with `min`: both must hold)

    def instance_ids(self) -> list[str]:
        if self.for_each is None:
            return [self.id]
        return [f"{self.id}.{key}" for key in self.for_each]


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
    finally_steps: tuple[Step, ...] = ()
    params: Mapping[str, bool] = field(default_factory=dict)
    # output name -> (step id, "output" or "outputs")
    outputs: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # `defaults`: for every step (main and finally) that does not set them
    default_retries: Retries | None = None
    default_continue_on_error: bool | None = None
    # whether shell steps put `{{ run.attempt }}` in their output
    shell_renders_attempt: bool = True

    def retries_of(self, step: Step) -> Retries | None:
        return step.retries if step.retries is not None else self.default_retries

    def continue_on_error_of(self, step: Step) -> bool:
        if step.continue_on_error is not None:
            return step.continue_on_error
        return bool(self.default_continue_on_error)

    def step(self, step_id: str) -> Step:
        for s in (*self.steps, *self.finally_steps):
            if s.id == step_id:
                return s
        raise KeyError(step_id)


# What each step instance does, attempt by attempt within one `runner run`/`resume`: the n-th
# call of the instance does script[min(n, len(script)) - 1].
Scripts = Mapping[str, Sequence[Outcome]]


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    state: str
    attempts: int = 0  # recorded attempts (over the whole run, across resumes)
    output: Any = None
    error_kind: str | None = None
    exit_code: int | None = None
    calls: int = 0  # calls of the step's code in this invocation


@dataclass(frozen=True)
class RunResult:
    status: str
    exit_code: int
    steps: dict[str, StepResult]
    outputs: dict[str, Any]


# --- the interpreter ------------------------------------------------------------------------


def output_of(pipeline: Pipeline, plugin: Plugin, outcome: Outcome, attempt: int) -> Any:
    """A python step returns {"v": value, "a": ctx.attempt}; a shell step echoes
    `value-{{ run.attempt }}` (`value-n` when the pipeline does not render `run.attempt`)."""
    if plugin == "python":
        return {"v": outcome.value, "a": attempt}
    return f"{outcome.value}-{attempt if pipeline.shell_renders_attempt else 'n'}"


def number_of(plugin: Plugin, output: Any) -> int:
    return int(output["v"]) if plugin == "python" else int(output.split("-")[0])


def attempt_step(
    pipeline: Pipeline, step: Step, instance: str, scripts: Scripts, previous_attempts: int
) -> StepResult:
    """Run the attempts of one instance that is allowed to start."""
    script = scripts[instance]
    policy = pipeline.retries_of(step)
    budget = policy.max if policy else 0
    calls = 0
    while True:
        calls += 1
        attempt = previous_attempts + calls
        outcome = script[min(calls, len(script)) - 1]
        if outcome.exit_code is not None and outcome.exit_code in step.skip_exit_codes:
            return StepResult("skipped", attempt, None, "error", outcome.exit_code, calls)
        if outcome.ok:
            return StepResult(
                "succeeded",
                attempt,
                output_of(pipeline, step.plugin, outcome, attempt),
                calls=calls,
            )
        if calls - 1 < budget and policy is not None and policy.retries(outcome):
            continue
        return StepResult(
            "failed_allowed" if pipeline.continue_on_error_of(step) else "failed",
            attempt,
            None,
            outcome.error_kind,
            outcome.exit_code,
            calls,
        )


def visible_state(pipeline: Pipeline, step_id: str, results: Mapping[str, StepResult]) -> str:
    """`steps.<id>.state`; for a fan-out (semantics.md, state table): `failed_allowed` when some
    instances are and none succeeded; otherwise the worst state, else `succeeded` when one
    succeeded, else `skipped`."""
    step = pipeline.step(step_id)
    states = [results[i].state for i in step.instance_ids()]
    if step.for_each is None:
        return states[0]
    if "failed" in states and policy_holds(step, states):
        return "partial"
    for worst in ("failed", "upstream_failed", "cancelled"):
        if worst in states:
            return worst
    if "failed_allowed" in states and "succeeded" not in states:
        return "failed_allowed"
    return "succeeded" if "succeeded" in states else "skipped"


def policy_holds(step: Step, states: Sequence[str]) -> bool:
    """A fan-out's success policy, over its instances' states: at least `min` succeeded, and
    at least the share `ratio` of those not skipped succeeded."""
    if step.success_min is None and step.success_ratio is None:
        return False
    done = sum(1 for s in states if s in ("succeeded", "cached"))
    counted = [s for s in states if s != "skipped"]
    if step.success_min is not None and done < step.success_min:
        return False
    return step.success_ratio is None or done / len(counted) >= step.success_ratio


def rule_holds(rule: str, states: Sequence[str]) -> bool:
    """The trigger rules of semantics.md (a step without needs always runs)."""
    ok = [s for s in states if s in SUCCESS]
    failed = [s for s in states if s in FAILURE]
    return (
        not states
        or {
            "all_success": len(ok) == len(states),
            "all_done": True,
            "one_success": bool(ok),
            "one_failed": bool(failed),
            "none_failed": not failed,
            "none_failed_min_one_success": not failed and bool(ok),
        }[rule]
    )


def ancestor_failed(pipeline: Pipeline, step: Step, results: Mapping[str, StepResult]) -> bool:
    """`failure()`: an instance of a need, or of a need of a need..., failed."""
    todo, seen = list(step.needs), set()
    while todo:
        sid = todo.pop()
        if sid in seen:
            continue
        seen.add(sid)
        need = pipeline.step(sid)
        if any(results[i].state in FAILURE for i in need.instance_ids()):
            return True
        todo.extend(need.needs)
    return False


def status_function(
    function: str,
    pipeline: Pipeline,
    step: Step,
    results: Mapping[str, StepResult],
    finally_status: str | None,
    cancelled: bool,
) -> bool:
    if function == "always":
        return True
    if function == "cancelled":
        return cancelled
    if finally_status is not None:  # a `finally` step: the run's status
        return finally_status == ("succeeded" if function == "success" else "failed")
    failed = ancestor_failed(pipeline, step, results)
    if function == "failure":
        return failed
    states = [visible_state(pipeline, n, results) for n in step.needs]
    return not failed and not cancelled and all(s in SUCCESS for s in states)


def evaluate(
    cond: Cond | None,
    pipeline: Pipeline,
    results: Mapping[str, StepResult],
    run_status: str | None,
    item: str | None = None,
) -> bool:
    if cond is None:
        return True
    assert not isinstance(cond, StatusCond), "status functions: see status_function"

    if isinstance(cond, ParamCond):
        return pipeline.params[cond.name] != cond.negate
    if isinstance(cond, LiteralCond):
        return cond.value
    if isinstance(cond, StateCond):
        return visible_state(pipeline, cond.step, results) == cond.state
    if isinstance(cond, ItemCond):
        return (item == cond.key) != cond.negate
    if isinstance(cond, OutputCond):
        output = results[cond.step].output
        plugin = pipeline.step(cond.step).plugin
        return output is not None and number_of(plugin, output) >= cond.threshold
    assert run_status is not None, "run.status is only defined in finally steps"
    return run_status == cond.status


def run_main_step(
    pipeline: Pipeline,
    step: Step,
    results: Mapping[str, StepResult],
    scripts: Scripts,
    previous: Mapping[str, StepResult],
) -> dict[str, StepResult]:
    out: dict[str, StepResult] = {}
    keys: Sequence[str | None] = step.for_each or (None,)
    for key, instance in zip(keys, step.instance_ids(), strict=True):
        before = previous.get(instance)
        attempts_before = before.attempts if before else 0
        decided = decide(pipeline, step, results, key)
        if decided is None:
            out[instance] = attempt_step(pipeline, step, instance, scripts, attempts_before)
        else:
            out[instance] = StepResult(decided, attempts_before)
    return out


def decide(
    pipeline: Pipeline, step: Step, results: Mapping[str, StepResult], item: str | None
) -> str | None:
    """None: the step runs; else the state it ends in without running."""
    if isinstance(step.cond, StatusCond):
        runs = status_function(step.cond.function, pipeline, step, results, None, False)
        return None if runs else "skipped"
    states = [visible_state(pipeline, n, results) for n in step.needs]
    if not rule_holds(step.trigger or "all_success", states):
        return "upstream_failed" if any(s in FAILURE for s in states) else "skipped"
    return None if evaluate(step.cond, pipeline, results, None, item) else "skipped"


def main_status(pipeline: Pipeline, results: Mapping[str, StepResult]) -> str:
    """`failed` when a main step did not end in a state that lets dependents run (over all
    steps: after `resume --only`, a step left out that had not succeeded keeps it failed)."""
    main = [
        i
        for s in pipeline.steps
        if visible_state(pipeline, s.id, results) != "partial"  # its policy forgives them
        for i in s.instance_ids()
    ]
    bad = any(results[i].state not in OK_FOR_DEPENDENTS for i in main)
    return "failed" if bad else "succeeded"


def slice_of(pipeline: Pipeline, only: str) -> set[str]:
    """`--only SEL` (a step id, or `<id>.*` for a fan-out's instances) plus what it needs."""
    top = only.removesuffix(".*")
    todo, ids = [top], set()
    while todo:
        step = pipeline.step(todo.pop())
        ids.update(step.instance_ids())
        todo.extend(step.needs)
    return ids


def run_finally(
    pipeline: Pipeline,
    main_results: Mapping[str, StepResult],
    status: str,
    scripts: Scripts,
    previous: Mapping[str, StepResult],
    cancelled: bool = False,
) -> dict[str, StepResult]:
    """`finally` steps: their needs only give them outputs and states, never stop them.
    `cancelled`: the run was being stopped (--fail-fast), as `cancelled()` tells."""
    out: dict[str, StepResult] = {}
    for step in pipeline.finally_steps:
        for instance in step.instance_ids():
            before = previous.get(instance)
            attempts_before = before.attempts if before else 0
            if isinstance(step.cond, StatusCond):
                f = step.cond.function
                runs = status_function(f, pipeline, step, main_results, status, cancelled)
            else:
                runs = evaluate(step.cond, pipeline, main_results, status)
            if runs:
                out[instance] = attempt_step(pipeline, step, instance, scripts, attempts_before)
            else:
                out[instance] = StepResult("skipped", attempts_before)
    return out


def finish(pipeline: Pipeline, results: dict[str, StepResult]) -> RunResult:
    failed = main_status(pipeline, results) == "failed" or any(
        results[i].state == "failed" for s in pipeline.finally_steps for i in s.instance_ids()
    )
    outputs: dict[str, Any] = {}
    if not failed:
        for name, (step_id, attr) in pipeline.outputs.items():
            step = pipeline.step(step_id)
            ran = [(k, results[f"{step_id}.{k}"]) for k in step.for_each or ()]
            # left out of the outputs: skipped instances, and failed ones of a `partial` fan-out
            ran = [(k, r) for k, r in ran if r.state != "skipped" and r.state in OK_FOR_DEPENDENTS]
            if step.for_each is None:
                outputs[name] = results[step_id].output
            elif attr == "output":
                outputs[name] = [r.output for _, r in ran]
            else:
                outputs[name] = {k: r.output for k, r in ran}
    return RunResult("failed" if failed else "succeeded", 1 if failed else 0, results, outputs)


def run(
    pipeline: Pipeline,
    scripts: Scripts,
    previous: Mapping[str, StepResult] | None = None,
    only: str | None = None,
    rerun: str | None = None,
) -> RunResult:
    """`runner run` (keep-going), or with `previous` `runner resume [--only SEL]
    [--rerun GLOB]`."""
    previous = previous or {}
    selected = slice_of(pipeline, only) if only is not None else None
    cleared = selection_of(pipeline, rerun) if rerun is not None else set()

    step_of = {i: step for step in pipeline.steps for i in step.instance_ids()}

    def kept(i: str) -> bool:
        """Outside an --only slice: kept. Inside: kept when it succeeded and every step it
        needs is kept too (a step that runs again may give another output)."""
        if selected is not None and i not in selected:
            return True
        if i in cleared or not (i in previous and previous[i].state in KEPT_BY_RESUME):
            return False
        needs = step_of[i].needs
        return all(kept(j) for need in needs for j in pipeline.step(need).instance_ids())

    results: dict[str, StepResult] = {}
    for step in pipeline.steps:
        ids = step.instance_ids()
        if all(kept(i) for i in ids):
            results.update({i: replace(previous[i], calls=0) for i in ids})
            continue
        fresh = run_main_step(pipeline, step, results, scripts, previous)
        for i in ids:
            results[i] = replace(previous[i], calls=0) if kept(i) else fresh[i]
    if selected is None:
        status = main_status(pipeline, results)
        results.update(run_finally(pipeline, results, status, scripts, previous))
    else:  # `finally` steps run again only when the slice selects them
        for step in pipeline.finally_steps:
            results.update({i: replace(previous[i], calls=0) for i in step.instance_ids()})
    return finish(pipeline, results)


def resume(
    pipeline: Pipeline,
    recorded: Mapping[str, StepResult],
    scripts: Scripts,
    only: str | None = None,
    rerun: str | None = None,
) -> RunResult:
    """`runner resume RUN_ID [--only SEL] [--rerun GLOB]` after a run whose recorded step
    results are `recorded`."""
    return run(pipeline, scripts, recorded, only, rerun)


def selection_of(pipeline: Pipeline, glob: str) -> set[str]:
    """The instances `--rerun GLOB` selects: a step id (a fan-out's: all its instances),
    `<id>.*`, or one instance `<id>.<key>`."""
    top, _, key = glob.partition(".")
    ids = pipeline.step(top).instance_ids()
    return set(ids) if key in ("", "*") else {f"{top}.{key}"}


def check_fail_fast(pipeline: Pipeline, scripts: Scripts, observed: RunResult) -> list[str]:
    """Bounds on a `--fail-fast` run; returns the violations (empty when consistent).

    Without a failure of a main step, fail-fast changes nothing: the run must equal the
    keep-going one. With one, the run is `failed` (exit 1), at least one main step is `failed`,
    every main step either ended as in the keep-going run or was `cancelled` (or, downstream of
    what failed or was cancelled, `upstream_failed`), and `finally` ran as the model says for
    the observed main states with `run.status` = `failed`.
    """
    keep_going = run(pipeline, scripts)
    if main_status(pipeline, keep_going.steps) == "succeeded":
        return compare(keep_going, observed)
    problems: list[str] = []
    if (observed.status, observed.exit_code) != ("failed", 1):
        problems.append(f"run: expected failed/1, got {observed.status}/{observed.exit_code}")
    main_ids = [i for s in pipeline.steps for i in s.instance_ids()]
    if not any(observed.steps[i].state == "failed" for i in main_ids if i in observed.steps):
        problems.append("no main step is failed although fail-fast stopped the run")
    for i in main_ids:
        want, got = keep_going.steps[i], observed.steps.get(i)
        if got is None:
            problems.append(f"{i}: missing")
        elif got.state == "cancelled":
            if got.attempts > want.attempts:
                problems.append(f"{i}: cancelled after {got.attempts} > {want.attempts} attempts")
        elif runs_when_cancelled(pipeline, i) and got.state != want.state:
            # It may run while the run is cancelled, after needs that were cancelled.
            ran = attempt_step(pipeline, pipeline.step(i.split(".")[0]), i, scripts, 0)
            if got.state not in (ran.state, "skipped"):
                problems.append(f"{i}: {got.state}, model {want.state} or {ran.state}")
        elif got.state == "upstream_failed" and want.state != "upstream_failed":
            step = pipeline.step(i.split(".")[0])
            need_states = {visible_state(pipeline, n, observed.steps) for n in step.needs}
            if not need_states & {"failed", "upstream_failed", "cancelled"}:
                problems.append(f"{i}: upstream_failed, but no need failed ({need_states})")
        else:
            problems.extend(compare_step(i, want, got, check_calls=False))
    main_observed = {i: observed.steps[i] for i in main_ids if i in observed.steps}
    fin = run_finally(pipeline, main_observed, "failed", scripts, {}, cancelled=True)
    for i, want in fin.items():
        got = observed.steps.get(i)
        if got is None:
            problems.append(f"{i}: missing")
        else:
            problems.extend(compare_step(i, want, got))
    return problems


def runs_when_cancelled(pipeline: Pipeline, instance: str) -> bool:
    """A main step whose `if` calls always() or cancelled() is not cancelled by --fail-fast."""
    cond = pipeline.step(instance.split(".")[0]).cond
    return isinstance(cond, StatusCond) and cond.function in ("always", "cancelled")


# --- comparison -----------------------------------------------------------------------------


def compare_step(
    step_id: str, want: StepResult, got: StepResult, check_calls: bool = True
) -> list[str]:
    problems: list[str] = []
    if want.state != got.state:
        return [f"{step_id}: state {got.state!r}, model {want.state!r}"]
    pairs: list[tuple[str, Any, Any]] = [
        ("attempts", want.attempts, got.attempts),
        ("output", want.output, got.output),
    ]
    if want.state in ("succeeded", "failed", "failed_allowed"):
        pairs += [
            ("error_kind", want.error_kind, got.error_kind),
            ("exit_code", want.exit_code, got.exit_code),
        ]
    if check_calls:
        pairs.append(("calls", want.calls, got.calls))
    for name, w, g in pairs:
        if w != g:
            problems.append(f"{step_id}: {name} {g!r}, model {w!r} (state {want.state})")
    return problems


def compare(want: RunResult, got: RunResult) -> list[str]:
    problems: list[str] = []
    if (want.status, want.exit_code) != (got.status, got.exit_code):
        problems.append(
            f"run: {got.status}/exit {got.exit_code}, model {want.status}/exit {want.exit_code}"
        )
    for step_id in sorted(set(want.steps) | set(got.steps)):
        if step_id not in got.steps:
            problems.append(f"{step_id}: missing from the run")
        elif step_id not in want.steps:
            problems.append(f"{step_id}: in the run, not in the model")
        else:
            problems.extend(compare_step(step_id, want.steps[step_id], got.steps[step_id]))
    if want.outputs != got.outputs:
        problems.append(f"outputs {got.outputs!r}, model {want.outputs!r}")
    return problems
