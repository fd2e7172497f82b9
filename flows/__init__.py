"""Prefect flows: the order of stages and their parameters, nothing else."""

import os

STARTUP_LIMIT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_LIMIT_S = 180
# A temporary Prefect server (started by flows.server, or by Prefect itself for a flow called directly) may take this
# long to start: Prefect's default of 20 s fails on a 2-core machine busy with training. Set before Prefect is
# imported, since Prefect reads its settings then; a value the user set is kept.
os.environ.setdefault(STARTUP_LIMIT_ENV, str(STARTUP_LIMIT_S))
