"""Helpers of pipelines/airflow-branch.yaml (Airflow's example_branch_operator)."""

from __future__ import annotations

import random


def choose(prefix: str, options: list[str], choice: str = "") -> str:
    """The task to follow, as a BranchPythonOperator returns it: `prefix` + an option."""
    return f"{prefix}{choice or random.choice(options)}"


def hello_world_with_external_python() -> str:
    print("Hello World from external Python")
    return "Hello World from external Python"
