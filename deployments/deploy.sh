#!/usr/bin/env bash
# From zero to scheduled deployments, non-interactively and idempotently, in two processes:
#   1. hospitaldb.tools.deploy_steps: validate prefect.yaml offline (Prefect itself ignores unknown
#      keys); write the file to deploy (prefect.yaml, or its Docker or paused variant); create or
#      update the blocks from HOSPITALDB_* variables (see docs/alerts.md), only on a server that
#      asks for credentials (PREFECT_API_AUTH_STRING here) or that nothing beyond this machine's
#      loopback can reach: anyone who can call a server's API reads its secrets; beyond loopback
#      only over https (HOSPITALDB_ALLOW_PLAIN_HTTP=true accepts http, warned); create the work
#      pool if it does not exist; create or update the automations that mark a run Crashed when
#      its heartbeats stop (worker and process killed together) and post to the Slack block;
#   2. `prefect --no-prompt deploy --all` (the nightly, on-demand and freshness-check deployments).
#
#   bash deployments/deploy.sh                  # process work pool, runs this checkout
#   bash deployments/deploy.sh --paused         # the same, every schedule paused (a cutover's first nights)
#   bash deployments/deploy.sh --image IMAGE    # Docker work pool, runs IMAGE (docs/deploy.md, Containers)
#
# Needs PREFECT_API_URL (a running `prefect server start`, or Prefect Cloud), with
# PREFECT_API_AUTH_STRING (or Prefect Cloud's PREFECT_API_KEY) when the server asks for it,
# and the project's virtualenv on PATH (source .venv/bin/activate).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${PREFECT_API_URL:?set PREFECT_API_URL, e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api}"
steps=()
prefect_file=prefect.yaml
pool=hospitaldb-pool
while [[ $# -gt 0 ]]; do
  case "$1" in
    --image)
      steps+=(--image "${2:?--image needs an image name, e.g. localhost/hospitaldb-refresh:1.4.0}")
      pool=hospitaldb-docker
      shift 2
      ;;
    --paused)
      steps+=(--paused)
      shift
      ;;
    *)
      echo "usage: $0 [--paused] [--image IMAGE]" >&2
      exit 2
      ;;
  esac
done
if [[ ${#steps[@]} -gt 0 ]]; then
  # A file of this deploy's own: another deploy.sh from this checkout (another variant, another
  # server) may be writing its own at the same moment.
  mkdir -p build
  prefect_file=$(mktemp build/prefect.deploy.XXXXXX.yaml)
  trap 'rm -f "$prefect_file"' EXIT
fi

python -m hospitaldb.tools.deploy_steps --prefect-file "$prefect_file" "${steps[@]}"
# prefect.yaml's pull step runs the flow from this checkout (the Docker variant's from the image).
HOSPITALDB_PROJECT_DIR="$(pwd)" prefect --no-prompt deploy --all --prefect-file "$prefect_file"
echo
echo "Block secrets are encrypted on the server with PREFECT_SERVER_ENCRYPTION_KEY where it is set, else with a"
echo "key kept in the server's own database (a backup of it is every secret): docs/security.md."
echo "Deployed. Start a worker (keep it running), with the same PREFECT_API_URL and PREFECT_API_AUTH_STRING:"
echo "  prefect worker start --pool $pool"
echo "First manual run:  prefect deployment run 'hospitaldb-refresh/on-demand' --watch"
