"""The actions behind dead-letters.yaml: read an inbox of payment messages, post each one to a
ledger file, and summarise what was posted and what was not."""

from __future__ import annotations

import json
from typing import Any


def message_ids(inbox: str) -> list[str]:
    """The ids of the messages waiting in the inbox, in order."""
    with open(inbox, encoding="utf-8") as f:
        return [str(message["id"]) for message in json.load(f)]


def post(inbox: str, message_id: str, ledger: str) -> dict[str, Any]:
    """Validate one message (read again from the inbox: a fixed message is posted as fixed)
    and append it to the ledger; a malformed message raises, and becomes a dead letter."""
    with open(inbox, encoding="utf-8") as f:
        message = next(m for m in json.load(f) if str(m["id"]) == message_id)
    if not message.get("account"):
        raise ValueError(f"message {message_id} has no account")
    amount = message.get("amount")
    if not isinstance(amount, int):
        raise ValueError(f"message {message_id}: amount {amount!r} is not a whole number")
    with open(ledger, "a", encoding="utf-8") as f:
        f.write(f"{message_id} {message['account']} {amount}\n")
    return {"account": message["account"], "amount": amount}


def summary(posted: dict[str, Any], states: dict[str, str], errors: dict[str, str]) -> str:
    """One line: the total posted, and the messages left for later (the dead letters)."""
    total = sum(p["amount"] for p in posted.values())
    dead = ", ".join(f"{key} ({errors[key]})" for key in states if key in errors)
    return f"posted {len(posted)} message(s), total {total}; dead letters: {dead or 'none'}"
