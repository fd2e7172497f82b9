#!/usr/bin/env bash
# Stop what the start-*.sh scripts started (worker first, so no flow run is left without its server).
#     bash deploy/stop-all.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

for name in prefect-worker prefect-server mlflow-server; do
  stop_background "$name"
done
