"""Authentication of the Prefect and MLflow servers, through the deploy/ scripts and real servers: a bind to an
address that is not loopback needs credentials, and with credentials a request without them is rejected.

    python -m pytest tests/flows/test_server_auth.py -q
"""

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deploy_env(home: Path, **settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SQLCOPILOT_"))}
    env.update(SQLCOPILOT_HOME=str(home), SQLCOPILOT_BIN=str(BIN), SQLCOPILOT_PREFECT_PORT=str(free_port()),
               SQLCOPILOT_MLFLOW_PORT=str(free_port()), SQLCOPILOT_STOP_TIMEOUT="5", **settings)
    return env


def run_script(name: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "deploy" / name)], env=env, capture_output=True, text=True, timeout=300)


def status(url: str, credentials: str | None = None, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("script, variable", [("start-prefect-server.sh", "SQLCOPILOT_PREFECT_AUTH"),
                                              ("start-mlflow-server.sh", "SQLCOPILOT_MLFLOW_AUTH")])
def test_a_non_loopback_bind_without_credentials_refuses_to_start(tmp_path, script, variable):
    env = deploy_env(tmp_path / "work", SQLCOPILOT_HOST="0.0.0.0")
    done = run_script(script, env)
    assert done.returncode != 0 and "refusing to listen on 0.0.0.0" in done.stderr and variable in done.stderr
    assert not list((tmp_path / "work" / "run").glob("*.pid")), "nothing may have been started"
    done = run_script(script, {**env, variable: "operator-without-password"})
    assert done.returncode != 0 and f"{variable} must be user:password" in done.stderr


def test_with_credentials_a_request_without_them_is_rejected(tmp_path):
    prefect_auth, mlflow_auth = "operator:prefect-secret", "operator:mlflow-secret"
    env = deploy_env(tmp_path / "work", SQLCOPILOT_PREFECT_AUTH=prefect_auth, SQLCOPILOT_MLFLOW_AUTH=mlflow_auth)
    try:
        for name in ("start-prefect-server.sh", "start-mlflow-server.sh"):
            started = run_script(name, env)
            assert started.returncode == 0, f"{name}:\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}"
        flows = f"http://127.0.0.1:{env['SQLCOPILOT_PREFECT_PORT']}/api/flows/filter"
        assert status(flows, body=b"{}") == 401
        assert status(flows, "operator:wrong", body=b"{}") == 401
        assert status(flows, prefect_auth, body=b"{}") == 200
        experiments = f"http://127.0.0.1:{env['SQLCOPILOT_MLFLOW_PORT']}/api/2.0/mlflow/experiments/search?max_results=5"
        assert status(experiments) == 401
        assert status(experiments, "operator:wrong") == 401
        assert status(experiments, mlflow_auth) == 200
        # an operator who sourced deploy/env.sh gets in with the Prefect CLI and the MLflow client
        cli = subprocess.run(["bash", "-c", f"source {REPO}/deploy/env.sh && prefect work-pool ls && python -c "
                              f"\"import mlflow; mlflow.set_tracking_uri('http://127.0.0.1:"
                              f"{env['SQLCOPILOT_MLFLOW_PORT']}'); print(mlflow.search_experiments())\""],
                             env=env, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr[-3000:]
    finally:
        subprocess.run(["bash", str(REPO / "deploy" / "stop-all.sh")], env=env, capture_output=True, timeout=120)
