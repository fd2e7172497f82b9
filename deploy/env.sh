# Settings shared by the deploy/ scripts. Source it to talk to the same servers from your shell:
#     source deploy/env.sh && prefect deployment ls
# Every value can be set beforehand in the environment; these are the defaults.

SQLCOPILOT_CHECKOUT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # holds prefect.yaml
SQLCOPILOT_REPO="${SQLCOPILOT_REPO:-$SQLCOPILOT_CHECKOUT}"  # where flow runs find the code (/opt/... in an image)
SQLCOPILOT_HOME="${SQLCOPILOT_HOME:-$SQLCOPILOT_CHECKOUT/work}"
mkdir -p "$SQLCOPILOT_HOME"
SQLCOPILOT_HOME="$(cd "$SQLCOPILOT_HOME" && pwd)"  # absolute: the worker's flow runs start in another folder
SQLCOPILOT_BIN="${SQLCOPILOT_BIN:-$SQLCOPILOT_CHECKOUT/.venv/bin}"
SQLCOPILOT_HOST="${SQLCOPILOT_HOST:-127.0.0.1}"
SQLCOPILOT_PREFECT_PORT="${SQLCOPILOT_PREFECT_PORT:-4200}"
SQLCOPILOT_MLFLOW_PORT="${SQLCOPILOT_MLFLOW_PORT:-5000}"
SQLCOPILOT_WORK_POOL="${SQLCOPILOT_WORK_POOL:-sqlcopilot-process}"
SQLCOPILOT_WORK_POOL_TYPE="${SQLCOPILOT_WORK_POOL_TYPE:-process}"
SQLCOPILOT_WORKER_LIMIT="${SQLCOPILOT_WORKER_LIMIT:-1}"  # flow runs at a time: training wants every core
SQLCOPILOT_TIMEZONE="${SQLCOPILOT_TIMEZONE:-UTC}"
SQLCOPILOT_RUN_DIR="${SQLCOPILOT_RUN_DIR:-$SQLCOPILOT_HOME/run}"  # pid files and logs
# Credentials of the servers, "user:password" each; required when SQLCOPILOT_HOST is not a loopback address. Prefect:
# the server checks PREFECT_SERVER_API_AUTH_STRING, clients (CLI, worker, flow runs) send PREFECT_API_AUTH_STRING.
# MLflow: the basic-auth app, its admin user made from these on first start; clients send MLFLOW_TRACKING_USERNAME
# and MLFLOW_TRACKING_PASSWORD.
SQLCOPILOT_PREFECT_AUTH="${SQLCOPILOT_PREFECT_AUTH:-}"
SQLCOPILOT_MLFLOW_AUTH="${SQLCOPILOT_MLFLOW_AUTH:-}"
if [ -n "$SQLCOPILOT_PREFECT_AUTH" ]; then
  export PREFECT_SERVER_API_AUTH_STRING="$SQLCOPILOT_PREFECT_AUTH" PREFECT_API_AUTH_STRING="$SQLCOPILOT_PREFECT_AUTH"
fi
if [ -n "$SQLCOPILOT_MLFLOW_AUTH" ]; then
  export MLFLOW_TRACKING_USERNAME="${SQLCOPILOT_MLFLOW_AUTH%%:*}" MLFLOW_TRACKING_PASSWORD="${SQLCOPILOT_MLFLOW_AUTH#*:}"
fi
PREFECT_HOME="${PREFECT_HOME:-$SQLCOPILOT_HOME/prefect}"
PREFECT_API_URL="${PREFECT_API_URL:-http://$SQLCOPILOT_HOST:$SQLCOPILOT_PREFECT_PORT/api}"
export SQLCOPILOT_CHECKOUT SQLCOPILOT_REPO SQLCOPILOT_HOME SQLCOPILOT_BIN SQLCOPILOT_HOST SQLCOPILOT_PREFECT_PORT \
  SQLCOPILOT_MLFLOW_PORT SQLCOPILOT_WORK_POOL SQLCOPILOT_WORK_POOL_TYPE SQLCOPILOT_WORKER_LIMIT SQLCOPILOT_TIMEZONE \
  SQLCOPILOT_RUN_DIR SQLCOPILOT_PREFECT_AUTH SQLCOPILOT_MLFLOW_AUTH PREFECT_HOME PREFECT_API_URL
if [ -d "$SQLCOPILOT_BIN" ]; then PATH="$SQLCOPILOT_BIN:$PATH"; fi

is_loopback() {  # HOST: 127.x.x.x, ::1 or localhost
  case "$1" in 127.*|::1|"[::1]"|localhost) return 0 ;; *) return 1 ;; esac
}

require_credentials() {  # NAME VARIABLE: refuse a non-loopback bind without "user:password" in VARIABLE
  local value="${!2}"
  if [ -n "$value" ] && { [ "${value%%:*}" = "$value" ] || [ -z "${value%%:*}" ] || [ -z "${value#*:}" ]; }; then
    echo "$1: $2 must be user:password (both non-empty)" >&2
    return 1
  fi
  if ! is_loopback "$SQLCOPILOT_HOST" && [ -z "$value" ]; then
    echo "$1: refusing to listen on $SQLCOPILOT_HOST, which is not a loopback address, without credentials:" \
      "set $2=user:password (see docs/OPERATIONS.md, Authentication)" >&2
    return 1
  fi
}

start_background() {  # NAME COMMAND...: run COMMAND in its own session, logging to $SQLCOPILOT_RUN_DIR/NAME.log
  local name="$1"; shift
  local pidfile="$SQLCOPILOT_RUN_DIR/$name.pid"
  mkdir -p "$SQLCOPILOT_RUN_DIR"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "$name: already running (pid $(cat "$pidfile"))"
    return 0
  fi
  # setsid: the process leads its own process group, so stop_background can end it with all its children
  setsid "$@" >"$SQLCOPILOT_RUN_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "$name: started (pid $!, log $SQLCOPILOT_RUN_DIR/$name.log)"
}

wait_healthy() {  # NAME URL [SECONDS]: wait until URL answers 200, or fail showing the end of NAME's log
  local name="$1" url="$2" deadline=$((SECONDS + ${3:-120}))
  local pid; pid="$(cat "$SQLCOPILOT_RUN_DIR/$name.pid")"
  until python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$url" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "$name: not healthy at $url; last lines of $SQLCOPILOT_RUN_DIR/$name.log:" >&2
      tail -n 30 "$SQLCOPILOT_RUN_DIR/$name.log" >&2
      return 1
    fi
    sleep 1
  done
  echo "$name: healthy at $url"
}

session_alive() {  # PID: a process of the session PID leads is still running (zombies do not count)
  ps -o stat= --sid "$1" 2>/dev/null | grep -qv '^Z'
}

stop_background() {  # NAME: end NAME's process group (TERM, then KILL after $SQLCOPILOT_STOP_TIMEOUT s)
  local pidfile="$SQLCOPILOT_RUN_DIR/$1.pid"
  [ -f "$pidfile" ] || { echo "$1: not running"; return 0; }
  local pid; pid="$(cat "$pidfile")"
  if kill -TERM -- "-$pid" 2>/dev/null; then
    local waited=0 limit="${SQLCOPILOT_STOP_TIMEOUT:-20}"
    while session_alive "$pid" && [ "$waited" -lt "$limit" ]; do sleep 1; waited=$((waited + 1)); done
    if session_alive "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || true
      echo "$1: killed (pid $pid did not stop within $waited s)"
    else
      echo "$1: stopped (pid $pid, $waited s)"
    fi
  else
    echo "$1: not running (stale pid $pid)"
  fi
  rm -f "$pidfile"
}

ensure_work_pool() {  # create $SQLCOPILOT_WORK_POOL (type $SQLCOPILOT_WORK_POOL_TYPE) unless it exists
  if prefect work-pool inspect "$SQLCOPILOT_WORK_POOL" >/dev/null 2>&1; then
    echo "work pool $SQLCOPILOT_WORK_POOL: exists"
  elif [ -n "${SQLCOPILOT_JOB_TEMPLATE:-}" ]; then  # YAML (with comments) in the repo; Prefect reads JSON
    local template="$SQLCOPILOT_RUN_DIR/$SQLCOPILOT_WORK_POOL-job-template.json"
    mkdir -p "$SQLCOPILOT_RUN_DIR"
    python -c 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)' \
      "$SQLCOPILOT_JOB_TEMPLATE" >"$template"
    prefect work-pool create "$SQLCOPILOT_WORK_POOL" --type "$SQLCOPILOT_WORK_POOL_TYPE" --base-job-template "$template"
  else
    prefect work-pool create "$SQLCOPILOT_WORK_POOL" --type "$SQLCOPILOT_WORK_POOL_TYPE"
  fi
}
