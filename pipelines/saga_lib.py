"""The actions behind order-saga.yaml; each appends a line to the journal file."""

from __future__ import annotations


def _log(journal: str, line: str) -> None:
    with open(journal, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def reserve(journal: str, order: str) -> dict[str, str]:
    _log(journal, f"reserve {order}")
    return {"reservation": f"R-{order}"}


def release(journal: str, reservation: str) -> None:
    _log(journal, f"release {reservation}")


def charge(journal: str, order: str, amount: int) -> dict[str, str]:
    _log(journal, f"charge {order} {amount}")
    return {"payment": f"P-{order}"}


def refund(journal: str, payment: str) -> None:
    _log(journal, f"refund {payment}")


def ship(journal: str, order: str) -> None:
    _log(journal, f"ship {order}")
    raise RuntimeError("carrier unavailable: no pickup slot today")
