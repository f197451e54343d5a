"""How a fan-out group's record says its success policy decided (success_policy.py): the
readers of the store (`runner show`, the reporters) list such a group, where other groups are
left out, without importing the policies' logic and the plan's types."""

from __future__ import annotations

PREFIX = "success policy: "  # how the failure of a fan-out its policy failed begins
PARTIAL = "partial"  # State.PARTIAL: its instances failed as the policy allows


def is_verdict(state: str, error: str | None) -> bool:
    """Whether a group's record is a policy's verdict (shown, where groups are not)."""
    return state == PARTIAL or (state == "failed" and (error or "").startswith(PREFIX))
