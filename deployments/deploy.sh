#!/usr/bin/env bash
# From zero to scheduled deployments, non-interactively and idempotently:
#   1. validate prefect.yaml offline (Prefect itself ignores unknown keys);
#   2. create or update the blocks from HOSPITALDB_* variables (see docs/alerts.md), only on a
#      server that asks for credentials (PREFECT_API_AUTH_STRING here) or that nothing beyond
#      this machine's loopback can reach: anyone who can call a server's API reads its secrets;
#      beyond loopback only over https (HOSPITALDB_ALLOW_PLAIN_HTTP=true accepts http, warned);
#   3. create the work pool if it does not exist;
#   4. `prefect --no-prompt deploy --all` (the nightly and on-demand deployments);
#   5. create or update the automation that marks a run Crashed when its heartbeats
#      stop (worker and process killed together) and posts to the Slack block.
#
#   bash deployments/deploy.sh                  # process work pool, runs this checkout
#   bash deployments/deploy.sh --image IMAGE    # Docker work pool, runs IMAGE (docs/deploy.md, Containers)
#
# Needs PREFECT_API_URL (a running `prefect server start`, or Prefect Cloud), with
# PREFECT_API_AUTH_STRING (or Prefect Cloud's PREFECT_API_KEY) when the server asks for it,
# and the project's virtualenv on PATH (source .venv/bin/activate).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${PREFECT_API_URL:?set PREFECT_API_URL, e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api}"
image=""
if [[ "${1:-}" == "--image" ]]; then
  image="${2:?--image needs an image name, e.g. localhost/hospitaldb-refresh:latest}"
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--image IMAGE]" >&2
  exit 2
fi

python tools/validate.py
if [[ -n "$image" ]]; then
  pool=hospitaldb-docker
  pool_type=docker
  prefect_file=build/prefect.docker.yaml
  python deployments/container/docker_deployments.py "$image" "$prefect_file"
else
  pool="${HOSPITALDB_WORK_POOL:-hospitaldb-pool}"
  pool_type=process
  prefect_file=prefect.yaml
fi
python deployments/create_blocks.py
if prefect work-pool inspect "$pool" >/dev/null 2>&1; then
  echo "work pool $pool exists"
else
  prefect work-pool create "$pool" --type "$pool_type"
fi
# prefect.yaml's pull step runs the flow from this checkout (the Docker variant's from the image).
HOSPITALDB_PROJECT_DIR="$(pwd)" prefect --no-prompt deploy --all --prefect-file "$prefect_file"
python deployments/create_automations.py
echo
echo "Block secrets are encrypted on the server with PREFECT_SERVER_ENCRYPTION_KEY where it is set, else with a"
echo "key kept in the server's own database (a backup of it is every secret): docs/security.md."
echo "Deployed. Start a worker (keep it running), with the same PREFECT_API_URL and PREFECT_API_AUTH_STRING:"
echo "  prefect worker start --pool $pool"
echo "First manual run:  prefect deployment run 'hospitaldb-refresh/nightly' --watch"
