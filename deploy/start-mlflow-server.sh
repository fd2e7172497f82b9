#!/usr/bin/env bash
# Start the MLflow server (tracking UI + model registry) on the flows' own store, in the background.
#     bash deploy/start-mlflow-server.sh      # UI at http://127.0.0.1:${SQLCOPILOT_MLFLOW_PORT:-5000}
# The flows write to the SQLite store directly; the server reads the same file (SQLCOPILOT_MLFLOW_BACKEND to change).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

backend="${SQLCOPILOT_MLFLOW_BACKEND:-sqlite:///$SQLCOPILOT_HOME/mlflow.db}"
start_background mlflow-server mlflow server --backend-store-uri "$backend" \
  --artifacts-destination "$SQLCOPILOT_HOME/mlartifacts" \
  --host "$SQLCOPILOT_HOST" --port "$SQLCOPILOT_MLFLOW_PORT" --workers 1
wait_healthy mlflow-server "http://$SQLCOPILOT_HOST:$SQLCOPILOT_MLFLOW_PORT/health" "${SQLCOPILOT_START_TIMEOUT:-180}"
echo "MLflow UI: http://$SQLCOPILOT_HOST:$SQLCOPILOT_MLFLOW_PORT   (backend: $backend)"
