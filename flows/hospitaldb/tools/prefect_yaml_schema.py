"""Our schema of prefect.yaml: the keys and types Prefect 3.9 accepts, as pydantic models.

Ours, not Prefect's private models (prefect.cli.deploy._models), which may change in any
release; tests/test_prefect_yaml.py pins these keys to the installed Prefect's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Actions = list[dict[str, Any]] | dict[str, Any] | None


class _Section(BaseModel):
    # Unknown keys are reported by name and line (with a 'did you mean'), not as errors here.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class PrefectYaml(_Section):
    prefect_version: str | None = Field(default=None, alias="prefect-version")
    name: str | None = None
    build: Actions = None
    push: Actions = None
    pull: Actions = None
    deployments: list[Any] = Field(default_factory=list)


class WorkPool(_Section):
    name: str | None = None
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)


class ConcurrencyLimit(_Section):
    limit: int | None = None
    collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"] | None = None
    grace_period_seconds: int | None = None


class Schedule(_Section):
    cron: str | None = None
    interval: timedelta | None = None
    rrule: str | None = None
    timezone: str | None = None
    anchor_date: str | None = None
    active: bool | str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    slug: str | None = None
    replaces: str | None = None
    day_or: bool | str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if sum(value is not None for value in (self.cron, self.interval, self.rrule)) != 1:
            raise ValueError("Exactly one of 'cron', 'interval', or 'rrule' must be provided")
        return self


class Deployment(_Section):
    name: str | None = None
    version: str | None = None
    version_type: str | None = None
    tags: str | list[Any] | None = None
    description: str | None = None
    schedule: Any = None
    schedules: list[Any] | None = None
    paused: bool | None = None
    concurrency_limit: int | dict[str, Any] | None = None
    flow_name: str | None = None
    entrypoint: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    enforce_parameter_schema: bool | None = None
    build: Actions = None
    push: Actions = None
    pull: Actions = None
    work_pool: dict[str, Any] | None = None
    triggers: list[dict[str, Any]] | None = None
    sla: list[dict[str, Any]] | None = None


SCHEMA: dict[str, type[BaseModel]] = {
    "PrefectYamlModel": PrefectYaml,
    "DeploymentConfig": Deployment,
    "WorkPoolConfig": WorkPool,
    "ConcurrencyLimitSpec": ConcurrencyLimit,
    "RawScheduleConfig": Schedule,
}
