"""What every part of one run works against, fixed before its first write: one value, handed down.

The database (resolved once: a failover does not switch a run's target halfway), the limits
every session keeps to, and the SQL project parsed once. The run's record (record.recorder)
holds what happened; this holds what the run works with, and nothing changes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.sql.script import SqlFiles


@dataclass(frozen=True)
class RunContext:
    """The database, the limits and the parsed SQL of one run."""

    target: DatabaseTarget
    limits: Limits
    files: SqlFiles
