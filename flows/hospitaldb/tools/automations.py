"""Create or update the server-side automation that catches runs whose process died silently.

    python deployments/create_automations.py    (deploy.sh runs it: hospitaldb.tools.deploy_steps)

A flow run whose worker and process are killed together (out of memory, node lost,
`kill -9` of the worker's process group) can run no hook: nothing in it survives to
report. Prefect would show it Running forever. Every flow run sends a heartbeat event
(`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, set per deployment in prefect.yaml); this
automation, evaluated by the Prefect server itself, fires when a HospitalDB run's
heartbeats stop for three periods without a final state, and

  1. marks the run Crashed, which frees its deployment concurrency slot, and
  2. posts a notice through every notification block among the alert channels
     (HOSPITALDB_ALERT_BLOCKS, else the Slack block 'hospitaldb-slack'), the same list the
     flows' own alerts use.

What it cannot do: send the email alert (Prefect's server can only notify through
notification blocks; our SMTP block is not one), or write to etl_audit (the next run
marks the dead run's rows abandoned). The server needs the blocks' packages installed
(prefect-slack for the Slack block), as a worker does.

Idempotent: the automation is replaced by name.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.report.notifications import EMAIL_BLOCK_TYPE, AlertSettings
from hospitaldb.tools.prefect_yaml_check import check_prefect_yaml, heartbeat_seconds

CRASH_AUTOMATION = "hospitaldb-crash-unresponsive-runs"
NOTICE_AUTOMATION = "hospitaldb-notify-unresponsive-runs"
# Three missed heartbeats: one late heartbeat on a busy worker is not a crash.
MISSED_HEARTBEATS = 3
FINAL_STATES = ("Completed", "Failed", "Cancelled", "Crashed")
# The crash automation's state message starts with this; the notice automation matches it,
# so a run that crashed any other way (and whose hooks already alerted) gets no second notice.
CRASH_MESSAGE = "No heartbeat for {seconds} s"

NOTICE_SUBJECT = "[HospitalDB] Refresh CRASHED: its process stopped answering"
NOTICE_BODY = (
    "Flow run {{ flow_run.name }} ({{ flow_run.id }}) of {{ flow.name }} sent no heartbeat for "
    "{seconds} s, and the Prefect server marked it Crashed. Its worker or machine is gone "
    "(killed, out of memory, node lost), so no failure hook could run.\n"
    "PostgreSQL rolled back the step in progress: readers keep the previous data. The next run "
    "marks this run's etl_audit rows abandoned.\n"
    "What to do: check the worker (prefect worker start --pool ...), then rerun with "
    "prefect deployment run 'hospitaldb-refresh/on-demand'."
)


def heartbeat_periods(prefect_yaml: Path = PROJECT_ROOT / "prefect.yaml") -> dict[str, int]:
    """Flow name -> the longest heartbeat period among its deployments (validated first)."""
    from prefect.flows import load_flow_from_entrypoint

    problems = check_prefect_yaml(prefect_yaml)
    if problems:
        raise ValueError("\n".join(problems))
    periods: dict[str, int] = {}
    for deployment in yaml.safe_load(prefect_yaml.read_text())["deployments"]:
        flow_name = load_flow_from_entrypoint(str(PROJECT_ROOT / deployment["entrypoint"])).name
        periods[flow_name] = max(periods.get(flow_name, 0), heartbeat_seconds(deployment) or 0)
    return periods


def build_automations(periods: dict[str, int], notice_block_ids: list[Any]) -> list[Any]:
    """The crash automation, and the notice automation when there is a notification block."""
    from prefect.events.schemas.events import ResourceSpecification

    silent_for = MISSED_HEARTBEATS * max(periods.values())
    our_flows = ResourceSpecification(
        {"prefect.resource.role": "flow", "prefect.resource.name": sorted(periods)}
    )
    automations = [crash_automation(sorted(periods), our_flows, silent_for)]
    if notice_block_ids:
        automations.append(notice_automation(our_flows, silent_for, notice_block_ids))
    return automations


def crash_automation(flows: list[str], our_flows: Any, silent_for: int) -> Any:
    """Proactive: a run of our flows with no heartbeat and no final state for silent_for s is Crashed."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=CRASH_AUTOMATION,
        description=f"Marks a {', '.join(flows)} run Crashed after {silent_for} s without a heartbeat.",
        trigger=EventTrigger(
            posture=Posture.Proactive,
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{state}" for state in FINAL_STATES)},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=our_flows,
            for_each={"prefect.resource.id"},
            threshold=1,
            within=timedelta(seconds=silent_for),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"{CRASH_MESSAGE.format(seconds=silent_for)}: the flow-run process and its worker are gone.",
            )
        ],
    )


def notice_automation(our_flows: Any, silent_for: int, notice_block_ids: list[Any]) -> Any:
    """Reactive, and separate: a proactive trigger can fire more than once for one silent run,
    but a run enters Crashed only once."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=NOTICE_AUTOMATION,
        description=f"Notifies the alert channels when {CRASH_AUTOMATION} marks a run Crashed.",
        trigger=EventTrigger(
            posture=Posture.Reactive,
            expect={"prefect.flow-run.Crashed"},
            match=ResourceSpecification(
                {
                    "prefect.resource.id": "prefect.flow-run.*",
                    "prefect.state-message": f"{CRASH_MESSAGE.format(seconds=silent_for)}*",
                }
            ),
            match_related=our_flows,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject=NOTICE_SUBJECT,
                body=NOTICE_BODY.replace("{seconds}", str(silent_for)),
            )
            for block_id in notice_block_ids
        ],
    )


def notice_blocks(channels: tuple[str, ...]) -> tuple[list[Any], list[str]]:
    """The ids of the channels' notification blocks, and why each other channel is left out."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    found, left_out = [], []
    with get_client(sync_client=True) as client:
        for channel in channels:
            block_type, _, name = channel.partition("/")
            if block_type == EMAIL_BLOCK_TYPE:
                left_out.append(f"{channel}: the server cannot send email, only notification blocks")
                continue
            try:
                document = client.read_block_document_by_name(name, block_type)
            except ObjectNotFound:
                left_out.append(f"{channel}: no such block")
                continue
            if "notify" not in (document.block_schema.capabilities if document.block_schema else []):
                left_out.append(f"{channel}: not a notification block")
                continue
            found.append(document.id)
    return found, left_out


def main(prefect_yaml: Path = PROJECT_ROOT / "prefect.yaml") -> int:
    from prefect.automations import Automation

    try:
        periods = heartbeat_periods(prefect_yaml)
    except ValueError as error:
        print(f"error    automation: {error}", file=sys.stderr)
        return 1
    notice_block_ids, left_out = notice_blocks(AlertSettings.from_parameters({}).channels)
    for name in (CRASH_AUTOMATION, NOTICE_AUTOMATION):
        try:
            Automation.read(name=name).delete()
        except ValueError:
            pass  # not created yet
    for automation in build_automations(periods, notice_block_ids):
        automation.create()
        print(f"saved    automation '{automation.name}': {automation.description}")
    for why in left_out:
        print(f"skipped  notice to {why}")
    if not notice_block_ids:
        print("skipped  notice automation: no notification block among the alert channels")
    return 0
