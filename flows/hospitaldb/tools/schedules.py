"""`hospitaldb schedule pause|resume DEPLOYMENT...`: turn the schedules of named deployments off or on.

    hospitaldb schedule pause 'hospitaldb-refresh/nightly'
    hospitaldb schedule resume 'hospitaldb-refresh/nightly' 'hospitaldb-freshness-check/freshness-check'

What Airflow's `dags pause` / `unpause` did for a DAG. Prefect 3.9's own command pauses one
deployment's schedule only by its ID (`prefect deployment schedule pause NAME SCHEDULE_ID`, the ID
from `prefect deployment schedule ls NAME`), or every schedule of every deployment on the server
(`--all`, other teams' included): this takes deployment names.
"""

from __future__ import annotations

import argparse
import sys


def set_schedules(names: list[str], active: bool) -> list[str]:
    """Set every schedule of each named deployment active or paused; return what was done."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    done = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise SystemExit(
                    f"no deployment '{name}' on {client.api_url}: names are FLOW/DEPLOYMENT, as "
                    "`prefect deployment ls` lists them"
                ) from None
            for schedule in deployment.schedules:
                client.update_deployment_schedule(deployment.id, schedule.id, active=active)
            state = "active" if active else "paused"
            done.append(f"{name}: {len(deployment.schedules)} schedule(s) {state}")
    return done


def main(argv: list[str] | None = None, prog: str = "hospitaldb schedule") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("action", choices=("pause", "resume"))
    parser.add_argument("deployments", nargs="+", metavar="DEPLOYMENT", help="FLOW/DEPLOYMENT")
    args = parser.parse_args(argv)
    for line in set_schedules(args.deployments, active=args.action == "resume"):
        print(line)
    sys.stdout.flush()
    return 0
