#!/usr/bin/env bash
# Create the work pool if it is missing and start a worker on it in the background.
#     bash deploy/start-worker.sh
# The worker's environment (SQLCOPILOT_HOME, SQLCOPILOT_REPO, SPIDER_DIR, MLFLOW_TRACKING_URI...) is what its flow
# runs see: they write artifacts and MLflow runs where this shell says.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

ensure_work_pool
start_background prefect-worker prefect worker start --pool "$SQLCOPILOT_WORK_POOL" \
  --type "$SQLCOPILOT_WORK_POOL_TYPE" --limit "$SQLCOPILOT_WORKER_LIMIT" --name "sqlcopilot-$(hostname)"
sleep 2
kill -0 "$(cat "$SQLCOPILOT_RUN_DIR/prefect-worker.pid")" 2>/dev/null || {
  echo "prefect-worker: exited at once; last lines of $SQLCOPILOT_RUN_DIR/prefect-worker.log:" >&2
  tail -n 30 "$SQLCOPILOT_RUN_DIR/prefect-worker.log" >&2
  exit 1
}
