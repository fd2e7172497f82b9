#!/usr/bin/env bash
# Start the MLflow server (tracking UI + model registry) on the flows' own store, in the background.
#     bash deploy/start-mlflow-server.sh      # UI at http://127.0.0.1:${SQLCOPILOT_MLFLOW_PORT:-5000}
# The flows write to the SQLite store directly; the server reads the same file (SQLCOPILOT_MLFLOW_BACKEND to change).
# With SQLCOPILOT_MLFLOW_AUTH=user:password it runs MLflow's basic-auth app (every request needs a user); without it
# the script refuses a SQLCOPILOT_HOST that is not a loopback address.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

require_credentials mlflow-server SQLCOPILOT_MLFLOW_AUTH
backend="${SQLCOPILOT_MLFLOW_BACKEND:-sqlite:///$SQLCOPILOT_HOME/mlflow.db}"
auth=()
if [ -n "$SQLCOPILOT_MLFLOW_AUTH" ]; then  # MLflow's basic-auth app: users in mlflow-auth.db, the admin made from these
  mkdir -p "$SQLCOPILOT_RUN_DIR"
  config="$SQLCOPILOT_RUN_DIR/mlflow-auth.ini"
  printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///%s\nadmin_username = %s\n' \
    "$SQLCOPILOT_HOME/mlflow-auth.db" "$MLFLOW_TRACKING_USERNAME" >"$config"
  key="$SQLCOPILOT_RUN_DIR/mlflow-secret-key"  # CSRF key of the auth app: one per installation, kept private
  [ -s "$key" ] || (umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' >"$key")
  export MLFLOW_AUTH_CONFIG_PATH="$config" MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_TRACKING_USERNAME" \
    MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD" MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$key")"
  auth=(--app-name basic-auth)
fi
start_background mlflow-server mlflow server --backend-store-uri "$backend" \
  --artifacts-destination "$SQLCOPILOT_HOME/mlartifacts" \
  --host "$SQLCOPILOT_HOST" --port "$SQLCOPILOT_MLFLOW_PORT" --workers 1 "${auth[@]}"
wait_healthy mlflow-server "http://$SQLCOPILOT_HOST:$SQLCOPILOT_MLFLOW_PORT/health" "${SQLCOPILOT_START_TIMEOUT:-180}"
echo "MLflow UI: http://$SQLCOPILOT_HOST:$SQLCOPILOT_MLFLOW_PORT   (backend: $backend)"
