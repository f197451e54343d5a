"""The functions behind etl.yaml: small, deterministic stand-ins for real extract/load code."""

from __future__ import annotations

from typing import Any


def extract(tenant: str) -> list[dict[str, Any]]:
    base = sum(ord(c) for c in tenant) % 7 + 1
    return [{"order": i, "amount": base * i} for i in range(1, 4)]


def transform(rows: list[dict[str, Any]], currency: str) -> list[dict[str, Any]]:
    return [{**row, "currency": currency} for row in rows]


def load(tenant: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tenant": tenant, "rows": len(rows), "total": sum(r["amount"] for r in rows)}


def report(outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    totals = {tenant: out["total"] for tenant, out in outputs.items()}
    return {"tenants": len(totals), "totals": totals, "grand_total": sum(totals.values())}
