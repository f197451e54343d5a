"""The commands behind dvc-foreach.yaml: DVC's `python prepare.py` and `python train.py`, as
functions.  Paths are relative to this folder, as DVC's are to its project."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def prepare(raw: str, prepared: str) -> int:
    """Keep the rows whose amount is a number; returns how many were kept."""
    with open(HERE / raw, newline="") as f:
        rows = [row for row in csv.DictReader(f) if _number(row.get("amount"))]
    out = HERE / prepared
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["date", "amount"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def train(prepared: str, model_dir: str) -> dict[str, Any]:
    """Train a "model" (the mean amount); writes model.json and metrics.json to `model_dir`."""
    with open(HERE / prepared, newline="") as f:
        amounts = [float(row["amount"]) for row in csv.DictReader(f)]
    mean = round(sum(amounts) / len(amounts), 4) if amounts else 0.0
    folder = HERE / model_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"mean": mean}) + "\n")
    metrics = {"rows": len(amounts), "mean": mean}
    (folder / "metrics.json").write_text(json.dumps(metrics) + "\n")
    return metrics


def report(models: dict[str, dict[str, Any]], path: str) -> dict[str, Any]:
    """The metrics of every region, also written to `path`."""
    summary = {"regions": len(models), "rows": sum(m["rows"] for m in models.values())}
    out = HERE / path
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**summary, "models": models}, indent=2, sort_keys=True) + "\n")
    return summary


def _number(text: str | None) -> bool:
    try:
        float(text or "")
    except ValueError:
        return False
    return True
