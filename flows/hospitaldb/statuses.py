"""Every status a run and a step can have, in one place: what etl_audit stores and every reporter reads.

A status is decided where things happen (the code that raises an error gives it its
RunStatus; the recorder sets a step's), never read back from an error's words.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """How a run ended (etl_audit.refresh_runs.outcome)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # a step (or connecting, or the overlap lock) failed
    CHECK_FAILED = "check_failed"  # refused by a step's data check; the step rolled back
    SOURCES_REFUSED = "sources_refused"  # refused by the source checks; nothing was written
    REFUSED = "refused"  # refused before start: SQL that does not parse or would block readers, bad settings
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    ABANDONED = "abandoned"  # still 'running' when a later run took the lock: its process died unrecorded

    @property
    def audit_status(self) -> str:
        """etl_audit.refresh_runs.status, whose values readers of earlier versions know."""
        return "failed" if self in _REFUSALS else self.value

    @property
    def ending(self) -> str:
        """The word for it in a title: a check's or the source checks' refusal is a failed refresh."""
        return "failed" if self in _REFUSALS and self != RunStatus.REFUSED else self.value

    @property
    def is_failure(self) -> bool:
        """Needs someone's attention: alerted, and followed by a 'recovered' notice."""
        return self in _REFUSALS or self in (RunStatus.FAILED, RunStatus.CRASHED, RunStatus.ABANDONED)

    @property
    def is_interruption(self) -> bool:
        """Stopped from outside (cancelled, or the process stopped): recorded by whoever notes it first."""
        return self in (RunStatus.CANCELLED, RunStatus.CRASHED)


_REFUSALS = frozenset({RunStatus.CHECK_FAILED, RunStatus.SOURCES_REFUSED, RunStatus.REFUSED})


class StepStatus(StrEnum):
    """How one step's last attempt stands (etl_audit.step_attempts.status)."""

    NOT_RUN = "not run"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    ABANDONED = "abandoned"
