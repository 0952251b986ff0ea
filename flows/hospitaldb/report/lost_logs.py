"""The run's log lines, kept in memory, to send Prefect those an outage of its API lost.

Prefect sends a run's logs in batches, and drops a batch the API did not take after the
client's retries: the lines of an outage were on the run's console and nowhere in Prefect.
The run keeps what it would have sent and, once the API answers again
(hospitaldb.report.healing), sends what Prefect does not have. Only the run's own process
can: the lines go with it. They are the lines Prefect would have shown anyway, formatted by
Prefect's own handler: nothing more leaves the run than before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.logging.handlers import APILogHandler

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")  # what Prefect sends to the API for a run
MAX_KEPT = 20_000  # a run writes a few hundred lines; a runaway loop must not fill the memory
PAGE = 200  # the API's default and largest page
# How long Prefect's own log worker may take to send what it holds, retries included (its client
# backs off for up to a minute after an outage). Its flush() waits 5 s only: on a busy machine
# a batch still in flight then looked lost and was sent twice.
DRAIN_SECONDS = 120


class KeptLogs(APILogHandler):
    """Each line Prefect's API handler would send for the run, as it would send it."""

    def __init__(self) -> None:
        super().__init__()
        self.logs: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import get_settings_context

        if not get_settings_context().settings.logging.to_api.enabled:
            return  # Prefect sends none: nothing can be lost
        if len(self.logs) >= MAX_KEPT or not getattr(record, "send_to_api", True):
            return
        try:
            log = self.prepare(record)
        except Exception:  # no run to file it under, or too long: Prefect drops it too
            return
        log.pop("__payload_size__", None)
        self.logs.append(log)


@contextmanager
def keeping_logs() -> Iterator[KeptLogs]:
    """Keep the run's log lines while the block runs."""
    kept = KeptLogs()
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    for logger in loggers:
        logger.addHandler(kept)
    try:
        yield kept
    finally:
        for logger in loggers:
            logger.removeHandler(kept)


def send_lost_logs(client: Any, flow_run_id: str, kept: KeptLogs) -> int:
    """Send the kept lines the API does not have for the run; return how many.

    What Prefect's own log worker still holds is sent first; while it is still sending, nothing
    is sent again (its lines are in flight, not lost; it tries once more as the process exits).
    """
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    _, still_sending = APILogWorker.drain_all(timeout=DRAIN_SECONDS)
    if still_sending:
        return 0
    flow_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
    have: set[tuple[float, str]] = set()
    for offset in range(0, MAX_KEPT * 2, PAGE):
        page = client.read_logs(log_filter=flow_run, limit=PAGE, offset=offset)
        have.update(_key(log.timestamp, log.message) for log in page)
        if len(page) < PAGE:
            break
    lost = [
        log for log in kept.logs if _key(datetime.fromisoformat(log["timestamp"]), log["message"]) not in have
    ]
    if lost:
        client.create_logs(lost)
    return len(lost)


def _key(timestamp: datetime, message: str) -> tuple[float, str]:
    return round(timestamp.timestamp(), 3), message
