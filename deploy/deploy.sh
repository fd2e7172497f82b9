#!/usr/bin/env bash
# Register the deployments of prefect.yaml with the Prefect server (all of them unless arguments say otherwise).
#     bash deploy/deploy.sh                       # prefect deploy --all
#     bash deploy/deploy.sh --name nightly-eval   # any `prefect deploy` arguments
# SQLCOPILOT_REPO (this checkout) and SQLCOPILOT_TIMEZONE (UTC) are written into the deployments here.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

cd "$SQLCOPILOT_CHECKOUT"
ensure_work_pool
[ $# -gt 0 ] || set -- --all
prefect --no-prompt deploy "$@"
