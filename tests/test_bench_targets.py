"""The benchmark harness's targets: each ratio read from two rows of one workload in one run,
compared with its limit (bench/run.py, standard library only, loaded from its file)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_run"]


def cell(bench, tool, walls, rss=30.0, extra=None):
    samples = [bench.Sample(w, rss, extra=dict(extra or {})) for w in walls]
    return bench.Cell(tool, bench.RUNNER, lambda d: [], samples=samples)


def test_ratios_limits_and_verdicts(bench):
    w1 = bench.Workload(
        "W1",
        "t",
        2001,
        None,
        [
            cell(bench, "runner", [0.60, 0.50, 0.70]),  # median 0.60
            cell(bench, "ProcessPoolExecutor(2)", [0.40, 0.50, 0.45]),  # median 0.45
            cell(bench, "runner (dask)", [2.0]),
            cell(bench, "dask.distributed", [4.0]),
        ],
    )
    w4 = bench.Workload("W4", "t", 32, 2.0, [cell(bench, "runner", [2.2])])
    w8 = bench.Workload(
        "W8",
        "t",
        100_000,
        None,
        [
            cell(bench, "runner", [20.0], rss=260.0, extra={"store MB": 39.0}),
            cell(bench, "runner show", [0.25]),
        ],
    )
    rows = {(r[0], r[1]): r[2:] for r in bench.target_rows([w8, w4, w1])}
    assert rows[("W1", "runner / ProcessPoolExecutor(2)")] == ["1.33x", "<= 1.15x", "MISSED"]
    assert rows[("W1", "runner (dask) / dask.distributed")] == ["0.50x", "<= 1.20x", "yes"]
    assert rows[("W4", "runner: parallel efficiency")] == ["91%", ">= 95%", "MISSED"]
    assert rows[("W8", "runner: peak RSS")] == ["260.0 MB", "<= 250.0 MB", "MISSED"]
    assert rows[("W8", "runner: the store")] == ["39.0 MB", "<= 40.0 MB", "yes"]
    assert rows[("W8", "runner show")] == ["0.250 s", "<= 0.300 s", "yes"]
    # Rows that did not run give no target: no dask rows on W8, no show --json, no W2.
    assert ("W8", "runner / dask processes") not in rows
    assert ("W8", "runner show --json") not in rows
    assert not any(name == "W2" for name, _ in rows)
    assert [r[0] for r in bench.target_rows([w8, w4, w1])] == sorted(
        (r[0] for r in bench.target_rows([w8, w4, w1])), key=bench.WORKLOAD_NAMES.index
    )


def test_a_failed_row_gives_no_figure(bench):
    failed = cell(bench, "ProcessPoolExecutor(2)", [0.4])
    failed.error = "exit code 1"
    w2 = bench.Workload("W2", "t", 500, None, [cell(bench, "runner", [0.3]), failed])
    assert bench.target_rows([w2]) == []


def test_only_all_names_every_workload_and_w8_rounds(bench):
    args = bench.parse_args(["--only", "all", "--w8-runs", "2"])
    assert args.w8_runs == 2
    assert bench.selected(args.only) == set(bench.WORKLOAD_NAMES)
    assert bench.selected("w1, W8") == {"W1", "W8"}
    assert bench.selected("") is None  # the default set: every workload but W8
    assert "W8" not in bench.DEFAULT_WORKLOADS
    with pytest.raises(SystemExit):
        bench.parse_args(["--w8-runs", "0"])
