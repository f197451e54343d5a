"""Success policies of fan-outs: `success: {min: N, ratio: R, critical: [keys]}` on a
`for_each` step (Graflow's at-least-N, best-effort and critical group policies).

Without a policy, one failed instance fails the fan-out at once.  With one, the fan-out waits
for all its instances; when some failed and every condition given holds it is `partial` (its
dependents run, and the failures do not fail the run); otherwise it ends as it would without
a policy.  An instance counts as a success when it ended `succeeded`, `cached` or `partial`.

The planner reads and checks the policy (`parse`, `static_problems`); the scheduler asks
`decide` when the fan-out's instances have ended and `forgiven` whether a failure is covered.
Nothing here touches the run state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .model import Node, State, SuccessPolicy
from .verdicts import PREFIX

COUNTED = frozenset({State.SUCCEEDED, State.CACHED, State.PARTIAL})
NOT_OK = frozenset({State.FAILED, State.UPSTREAM_FAILED, State.CANCELLED})

Member = tuple[str, State]  # an instance's key and the state it ended in


def parse(value: Mapping[str, Any]) -> SuccessPolicy:
    """The policy of a `success` mapping the schema has accepted."""
    ratio = value.get("ratio")
    return SuccessPolicy(
        min=value.get("min"),
        ratio=float(ratio) if ratio is not None else None,
        critical=tuple(str(k) for k in value.get("critical") or ()),
    )


def static_problems(policy: SuccessPolicy, keys: Sequence[str]) -> list[tuple[str, str]]:
    """What cannot work with the instances known before the run: (the key of `success`
    at fault, the message)."""
    found: list[tuple[str, str]] = []
    if policy.min is not None and policy.min > len(keys):
        found.append(("min", f"min is {policy.min}, but the for_each has {len(keys)} instance(s)"))
    for index, key in enumerate(policy.critical):
        if key not in keys:
            shown = ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else "")
            found.append((f"critical.{index}", f"no instance has the key '{key}' (keys: {shown})"))
    return found


def check(policy: SuccessPolicy, members: Sequence[Member]) -> str | None:
    """Why the policy does not hold for instances that ended so, or None when it holds.
    Skipped instances are left out of the ratio."""
    done = sum(1 for _, state in members if state in COUNTED)
    if policy.min is not None and done < policy.min:
        return f"{PREFIX}{done} instance(s) succeeded, min is {policy.min}"
    counted = [s for _, s in members if s is not State.SKIPPED]
    if policy.ratio is not None and counted and done / len(counted) < policy.ratio:
        return (
            f"{PREFIX}{done} of {len(counted)} instance(s) succeeded, "
            f"ratio {done / len(counted):.2f} is below {policy.ratio:g}"
        )
    states = dict(members)
    for key in policy.critical:
        state = states.get(key)
        if state is None:
            return f"{PREFIX}no instance has the critical key '{key}'"
        if state not in COUNTED:
            return f"{PREFIX}the critical instance '{key}' {state.value}"
    return None


def decide(policy: SuccessPolicy, members: Sequence[Member], usual: State) -> tuple[State, str]:
    """The state of a fan-out with a policy, whose instances ended so, and a note: why it
    failed, or how many failed when it is `partial` (`usual`: its state without a policy).
    It is `partial` when an instance failed and the policy holds, else what it would be
    without a policy (the note is empty when the policy had nothing to judge)."""
    if usual not in NOT_OK or all(state is not State.FAILED for _, state in members):
        return usual, ""  # none failed: a need failed, or the run was stopped
    why = check(policy, members)
    if why is None:
        failed = sum(1 for _, state in members if state in NOT_OK)
        return State.PARTIAL, f"{failed} of {len(members)} instance(s) did not succeed; " + (
            "the success policy holds"
        )
    return usual, why


def covering(node: Node, groups: Mapping[str, Any]) -> Iterable[Any]:
    """The enclosing groups of `node` (each a run state with `.node` and `.state`) that have
    a success policy, innermost first."""
    parent = node.group
    while parent is not None:
        found = groups.get(parent)
        if found is None:
            return
        if found.node.success is not None:
            yield found
        parent = found.node.group


def under_policy(node: Node, groups: Mapping[str, Any]) -> bool:
    """Whether a fan-out with a success policy encloses `node`: its failure is that
    fan-out's to judge."""
    return next(iter(covering(node, groups)), None) is not None


def forgiven(node: Node, groups: Mapping[str, Any]) -> bool:
    """Whether a failure of `node` is covered: an enclosing fan-out's policy held."""
    return any(g.state is State.PARTIAL for g in covering(node, groups))


def forgiven_recorded(nodes: Mapping[str, Node], states: Mapping[str, str], nid: str) -> bool:
    """As `forgiven`, for a step as a run recorded it (`states`: recorded id -> state)."""
    node = nodes.get(nid)
    parent = node.group if node is not None else None
    while parent is not None:
        group = nodes.get(parent)
        if group is None:
            return False
        if group.success is not None and states.get(parent) == State.PARTIAL.value:
            return True
        parent = group.group
    return False
