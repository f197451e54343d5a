"""The defaults of the runner's settings, in one place: the command line shows them, the engine
and the pieces below it fall back to them, and the manual describes them from here.

This module imports nothing of the runner, so any module may read it.
"""

from __future__ import annotations

import os

STATE_DIR = ".runner"  # where runs are recorded (--state-dir)
STATE_DIR_ENV = "PIPELINE_RUNNER_STATE_DIR"  # the environment variable that sets it
STATE_DIR_ENV_OLD = "RUNNER_STATE_DIR"  # its deprecated name (envvars.py)
EXECUTORS = ("process", "thread", "inline", "dask")
EXECUTOR = "process"
PROGRESS_CHOICES = ("auto", "rich", "plain", "none")
PROGRESS = "auto"
GRACE = 3.0  # seconds between SIGTERM and SIGKILL when a step is stopped (--grace)
GRACE_MAX = 3600.0
MAX_FILE_SIZE = 10 * 1024 * 1024  # bytes of a pipeline, params or secrets file
RUNS_LIMIT = 30  # rows `runner runs` shows
# Step state changes the store keeps per run (`events`); beyond it the oldest go (store.py).
EVENTS_PER_RUN = 10_000
# The run store's group commit: a change is committed at most this long after it is made, and
# at once when this many wait (storesink.StoreSink; a speed shortcut).
COMMIT_INTERVAL = 0.05
COMMIT_CHANGES = 20_000
GC_YOUNG_OBJECTS = 50_000  # a command's young-generation threshold (gcpolicy.py)
STORE_CHECKPOINT_PAGES = 10_000  # the run store's WAL checkpoint interval (about 40 MB)
APPROVAL_POLL = 1.0  # seconds between looks at the store for answers to waiting approval gates
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # a step's output as JSON; a command's stdout kept
# `--metrics`: the upper bounds (seconds) of the step duration histogram's buckets
STEP_DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
MAX_LOOP_ITERATIONS = 10_000  # the largest `loop.max_iterations` a pipeline may set
SCHEDULE_PROGRESS = "none"  # the --progress of the runs `runner schedule` starts
SCHEDULE_POLL = 0.05  # seconds between the schedule's looks at the clock and its runs


def workers() -> int:
    """Parallel workers when --workers is not given: the number of CPUs."""
    return os.cpu_count() or 1
