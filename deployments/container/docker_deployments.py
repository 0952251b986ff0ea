"""Write the Docker work pool variant of prefect.yaml (what `deploy.sh --image IMAGE` deploys).

    python deployments/container/docker_deployments.py IMAGE OUTPUT

The same deployments as prefect.yaml (names, schedules, parameters, concurrency), so the two
can never drift apart, on the Docker work pool `hospitaldb-docker` in IMAGE:
hospitaldb.tools.deploy_steps.docker_variant.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hospitaldb.tools.deploy_steps import write_prefect_file

if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    write_prefect_file(Path(sys.argv[2]), sys.argv[1], paused=False)
