"""SQLite and checksum steps for runner (yaml-pipeline-runner).

Installing this distribution registers two plugins under the entry-point group
`pipeline_runner.plugins`:

- `sqlite` (`SqliteQuery`): run one SQL statement, or a DDL/seed script, against an SQLite file;
  read-only unless the step asks for `mode: rw` or `rwc`; parameters are always bound.
- `checksum` (`Checksum`): hash the files matched by glob patterns under the pipeline's folder.
"""

from runner_sqlite._common import StepError
from runner_sqlite.checksum import Checksum, ChecksumError
from runner_sqlite.query import SqliteError, SqliteQuery

__all__ = ["Checksum", "ChecksumError", "SqliteError", "SqliteQuery", "StepError"]
