"""Offline validation of prefect.yaml: what `prefect deploy` would silently accept but get wrong.

Prefect drops unknown keys without a word (a misspelled `entrypont` deploys a
deployment without an entrypoint), and checks cron and timezone only later. This
checks, with no server: known keys only, value types, every schedule's cron and
timezone, concurrency limits, that every entrypoint loads, and that every parameter
exists in the flow's signature with a value of the right type.

The keys and types come from our own schema (tools.prefect_yaml_schema), not from Prefect's private
models (prefect.cli.deploy._models), which may change in any release. A test
(tests/test_prefect_yaml.py) pins our keys to the ones the installed Prefect
accepts, so an upgrade that changes them fails that test, not a deployment.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hospitaldb.tools.prefect_yaml_schema import (
    ConcurrencyLimit,
    Deployment,
    PrefectYaml,
    Schedule,
    WorkPool,
)

KeyPath = tuple[str | int, ...]


def _known_keys(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _did_you_mean(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _key_lines(text: str) -> dict[KeyPath, int]:
    """Line of every mapping key (and list item) in the YAML, by its path."""
    lines: dict[KeyPath, int] = {}

    def walk(node: yaml.Node, path: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*path, key.value)] = key.start_mark.line + 1
                walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                walk(item, (*path, index))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


class _Report:
    def __init__(self, source: str, lines: dict[KeyPath, int]) -> None:
        self.source, self.lines, self.problems = source, lines, []

    def add(self, path: KeyPath, message: str) -> None:
        while path and path not in self.lines:
            path = path[:-1]
        self.problems.append(f"{self.source}:{self.lines.get(path, 1)}: {message}")

    def unknown_keys(self, data: Any, known: set[str], path: KeyPath, where: str) -> None:
        if not isinstance(data, dict):
            return
        for key in data:
            if key not in known:
                hint = _did_you_mean(str(key), known)
                self.add((*path, key), f"unknown key '{key}' in {where}{hint}; Prefect would ignore it")


def _validate(report: _Report, model: type[BaseModel], data: dict[str, Any], path: KeyPath) -> None:
    try:
        model.model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            report.add((*path, *item["loc"]), f"invalid value: {item['msg']}")


def _deployment_label(deployment: Any, index: int) -> str:
    name = deployment.get("name") if isinstance(deployment, dict) else None
    return f"deployment '{name}'" if name else f"deployment #{index + 1}"


def _check_schedule(report: _Report, schedule: Any, path: KeyPath, label: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    report.unknown_keys(schedule, _known_keys(Schedule), path, f"a schedule of {label}")
    if not isinstance(schedule, dict):
        report.add(path, f"a schedule of {label} must be a mapping")
        return
    try:
        Schedule.model_validate(schedule)
    except ValidationError as error:
        report.add(path, f"invalid schedule in {label}: {error.errors()[0]['msg']}")
        return
    if schedule.get("cron") is not None:
        try:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone") or "UTC")
        except (ValidationError, ValueError) as error:
            message = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
            key = "timezone" if "timezone" in message.lower() else "cron"
            report.add((*path, key), f"invalid {key} in {label}: {message}")


def _check_parameters(report: _Report, deployment: dict[str, Any], path: KeyPath, label: str) -> None:
    from prefect.flows import load_flow_from_entrypoint

    entrypoint = deployment.get("entrypoint")
    if not entrypoint:
        report.add(path, f"{label} has no entrypoint")
        return
    try:
        flow = load_flow_from_entrypoint(entrypoint)
    except Exception as error:  # any failure to load is the finding
        report.add((*path, "entrypoint"), f"entrypoint '{entrypoint}' of {label} does not load: {error}")
        return
    known = set(flow.parameters.properties)
    parameter_sets = [((*path, "parameters"), deployment.get("parameters") or {})]
    for index, schedule in enumerate(deployment.get("schedules") or []):
        if isinstance(schedule, dict) and schedule.get("parameters"):
            parameter_sets.append(((*path, "schedules", index, "parameters"), schedule["parameters"]))
    for where, parameters in parameter_sets:
        for name in parameters:
            if name not in known:
                hint = _did_you_mean(name, known)
                report.add(
                    (*where, name),
                    f"parameter '{name}' of {label} is not a parameter of flow '{flow.name}'{hint}",
                )
        try:
            # Prefect logs the same failure at ERROR before raising it; the report says it once.
            logging.getLogger("prefect.flows").disabled = True
            flow.validate_parameters({k: v for k, v in parameters.items() if k in known})
        except Exception as error:
            report.add(where, f"parameters of {label} do not fit the flow's signature: {error}")
        finally:
            logging.getLogger("prefect.flows").disabled = False


HEARTBEAT_VARIABLE = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


def heartbeat_seconds(deployment: dict[str, Any]) -> int | None:
    """The heartbeat period a deployment's runs get from its job variables, or None."""
    env = ((deployment.get("work_pool") or {}).get("job_variables") or {}).get("env") or {}
    value = str(env.get(HEARTBEAT_VARIABLE, "")).strip()
    return int(value) if value.isdigit() else None


def _check_heartbeat(report: _Report, deployment: dict[str, Any], path: KeyPath, label: str) -> None:
    # deployments/create_automations.py crashes a run after three silent periods; without
    # this variable Prefect's default period (180 s) would make every long step look dead.
    period = heartbeat_seconds(deployment)
    if period is None or period < 30:
        # Point at the variable, or at the deepest part of its path that exists.
        where, node = path, deployment
        for key in ("work_pool", "job_variables", "env", HEARTBEAT_VARIABLE):
            if not isinstance(node, dict) or key not in node:
                break
            where, node = (*where, key), node[key]
        report.add(
            where,
            f"{label} must set work_pool.job_variables.env.{HEARTBEAT_VARIABLE} to a whole number "
            'of seconds, at least 30 (e.g. "30"): the unresponsive-run automation relies on it',
        )


def check_prefect_yaml(path: Path, source: str = "prefect.yaml") -> list[str]:
    """Every problem in the file, as 'SOURCE:LINE: message'; empty when it is sound."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return [f"{source}:1: cannot read: {error.strerror}"]
    try:
        data = yaml.safe_load(text)
        report = _Report(source, _key_lines(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        return [f"{source}:{mark.line + 1 if mark else 1}: not valid YAML: {error}"]
    if not isinstance(data, dict):
        return [f"{source}:1: expected a mapping at the top level"]

    report.unknown_keys(data, _known_keys(PrefectYaml), (), "the top level")
    _validate(report, PrefectYaml, data, ())
    deployments = data.get("deployments") or []
    if not deployments:
        report.add((), "no deployments defined")
    for index, deployment in enumerate(deployments):
        path_ = ("deployments", index)
        label = _deployment_label(deployment, index)
        if not isinstance(deployment, dict):
            report.add(path_, f"{label} must be a mapping")
            continue
        report.unknown_keys(deployment, _known_keys(Deployment), path_, label)
        _validate(report, Deployment, deployment, path_)
        report.unknown_keys(
            deployment.get("work_pool"),
            _known_keys(WorkPool),
            (*path_, "work_pool"),
            f"work_pool of {label}",
        )
        if not (deployment.get("work_pool") or {}).get("name"):
            report.add(path_, f"{label} names no work pool (work_pool.name)")
        limit = deployment.get("concurrency_limit")
        if isinstance(limit, dict):
            report.unknown_keys(
                limit,
                _known_keys(ConcurrencyLimit),
                (*path_, "concurrency_limit"),
                f"concurrency_limit of {label}",
            )
            strategy = limit.get("collision_strategy")
            if strategy is not None and strategy not in {"ENQUEUE", "CANCEL_NEW"}:
                report.add(
                    (*path_, "concurrency_limit", "collision_strategy"),
                    f"collision_strategy of {label} must be ENQUEUE or CANCEL_NEW, not '{strategy}'",
                )
        for number, schedule in enumerate(deployment.get("schedules") or []):
            _check_schedule(report, schedule, (*path_, "schedules", number), label)
        if deployment.get("schedule") is not None:
            _check_schedule(report, deployment["schedule"], (*path_, "schedule"), label)
        _check_heartbeat(report, deployment, path_, label)
        _check_parameters(report, deployment, path_, label)
    return report.problems
