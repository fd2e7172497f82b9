#!/usr/bin/env bash
# Start the Prefect server (API + UI) in the background and wait until it is healthy.
#     bash deploy/start-prefect-server.sh     # UI at http://127.0.0.1:${SQLCOPILOT_PREFECT_PORT:-4200}
# Its database is $PREFECT_HOME/prefect.db (PREFECT_HOME defaults to $SQLCOPILOT_HOME/prefect). With
# SQLCOPILOT_PREFECT_AUTH=user:password every API request must carry it (HTTP basic auth); without it the script
# refuses a SQLCOPILOT_HOST that is not a loopback address.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

require_credentials prefect-server SQLCOPILOT_PREFECT_AUTH
start_background prefect-server prefect server start --host "$SQLCOPILOT_HOST" --port "$SQLCOPILOT_PREFECT_PORT"
wait_healthy prefect-server "$PREFECT_API_URL/health" "${SQLCOPILOT_START_TIMEOUT:-180}"
echo "Prefect UI: http://$SQLCOPILOT_HOST:$SQLCOPILOT_PREFECT_PORT   (API: $PREFECT_API_URL)"
