"""The Prefect API a local command (`sqlcopilot rebuild`, `sweep`) runs its flow against: the configured server when
PREFECT_API_URL is set, else a temporary server started here, which

- dies with the command, however the command ends (SIGKILL included: PR_SET_PDEATHSIG), so no server is left
  listening after a killed rebuild;
- may take PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS to start (default STARTUP_LIMIT_S, which fits a 2-core
  machine busy with training; Prefect's own default of 20 s does not).

It is the server Prefect would start itself (uvicorn on prefect.server.api.server:create_app, no UI, 127.0.0.1),
its log in <work>/prefect-server.log.

    python -c "from flows.server import prefect_api; print(prefect_api().__enter__())"
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows import STARTUP_LIMIT_ENV, STARTUP_LIMIT_S
from sqlcopilot_core import paths
from sqlcopilot_core.lifetime import end_with_parent

# Prefect's own temporary server (prefect.server.api.server.SubprocessASGIServer) runs with these.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def startup_limit_s() -> float:
    value = os.environ.get(STARTUP_LIMIT_ENV, str(STARTUP_LIMIT_S))
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{STARTUP_LIMIT_ENV}={value!r} is not a number of seconds") from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_temporary_server(log_path: Path) -> tuple[subprocess.Popen, str]:
    """A Prefect server on a free loopback port that ends when this process ends; (process, API URL)."""
    import prefect

    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
               "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "error", "--lifespan", "on"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env={**os.environ, **SERVER_ENV}, stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, preexec_fn=end_with_parent())
    return process, f"http://127.0.0.1:{port}/api"


def wait_until_healthy(process: subprocess.Popen, api_url: str, limit_s: float, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the temporary Prefect server exited with code {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{api_url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the temporary Prefect server did not answer within {limit_s:g} s ({STARTUP_LIMIT_ENV}); "
                       f"see {log_path}, or set PREFECT_API_URL to a running server")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def prefect_api() -> Iterator[str]:
    """The API URL flows run against inside the block: PREFECT_API_URL, or a temporary server's (see above)."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    log_path = paths.work_dir() / "prefect-server.log"
    process, api_url = start_temporary_server(log_path)
    try:
        wait_until_healthy(process, api_url, startup_limit_s(), log_path)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield api_url
    finally:
        stop(process)
