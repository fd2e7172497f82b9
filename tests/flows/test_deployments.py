"""The operator's path, for real, through the deploy/ scripts: Prefect server, work pool, `prefect deploy`, a process
worker, the MLflow server; the full-rebuild deployment on the smoke profile ends with a champion in the registry;
nightly-eval passes on the unchanged model and fails on a version whose recorded ex it no longer reaches.
Two quick checks of prefect.yaml and the job templates run without any server.

    python -m pytest tests/flows/test_deployments.py -q -m slow
"""

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from sqlcopilot_core import registry, tracking

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAGE_ORDER = ("download_base", "finetune", "prune", "distill", "export", "build")
TOLERANCE = 0.02


def test_prefect_yaml_deploys_each_flow_with_parameters_it_accepts():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"full-rebuild", "prune-sweep", "nightly-eval"}
    for name, deployment in deployments.items():
        path, function = deployment["entrypoint"].split(":")
        [flow_def] = [node for node in ast.parse((REPO / path).read_text()).body
                      if isinstance(node, ast.FunctionDef) and node.name == function]
        accepted = {arg.arg for arg in flow_def.args.args + flow_def.args.kwonlyargs}
        assert set(deployment["parameters"]) <= accepted, name
        assert deployment["work_pool"]["name"] == "sqlcopilot-process", name
    [schedule] = deployments["nightly-eval"]["schedules"]
    assert schedule["cron"] == "0 3 * * *" and schedule["timezone"] == "{{ $SQLCOPILOT_TIMEZONE }}"
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {
        "directory": "{{ $SQLCOPILOT_REPO }}"}}]


@pytest.mark.parametrize("template", ["k8s-job-template.yaml", "docker-job-template.yaml"])
def test_job_template_declares_every_variable_its_job_uses(template):
    spec = yaml.safe_load((REPO / "deploy" / template).read_text())
    used = set(re.findall(r"{{ (\w+) }}", json.dumps(spec["job_configuration"])))
    declared = set(spec["variables"]["properties"])
    assert used and used <= declared, used - declared
    env = spec["variables"]["properties"]["env"]["default"]
    assert {"SQLCOPILOT_REPO", "SQLCOPILOT_HOME", "MLFLOW_TRACKING_URI"} <= set(env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def script(name: str, env: dict, *args: str, timeout: float = 300) -> str:
    done = subprocess.run(["bash", str(REPO / "deploy" / name), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"deploy/{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def run_deployment(env: dict, name: str, *params: str) -> str:
    """`prefect deployment run NAME -p ... --watch` as an operator types it; returns the flow run id."""
    command = [str(BIN / "prefect"), "deployment", "run", name, *[a for p in params for a in ("-p", p)],
               "--watch", "--watch-timeout", "600"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=660, cwd=REPO)
    match = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    assert match, f"no flow run created:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return match.group(1)


def flow_run_state(flow_run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def markdown_of(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[flow_run_id])))
    return "\n".join(a.data for a in found if a.type == "markdown")


def own_leftovers(home: Path) -> list[int]:
    """Processes started for this test (flow runs live in their own sessions): their environment names our home."""
    marker = f"SQLCOPILOT_HOME={home}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0") and int(environ.parent.name) != os.getpid():
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


def cancel_unfinished_flow_runs() -> None:
    """A failed test may leave a flow run going: the worker kills it on Cancelling (stopping the worker would not)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        unfinished = [run for run in client.read_flow_runs() if run.state and (run.state.is_running()
                                                                             or run.state.is_pending())]
        for run in unfinished:
            client.set_flow_run_state(run.id, Cancelling(), force=True)
    if unfinished:
        time.sleep(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Prefect server, MLflow server, deployments and a worker, on free loopback ports and a private home."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("operations") / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SQLCOPILOT_"))
           or k == "SQLCOPILOT_BUILD_DIR"}  # a kept cmake folder makes the build stage incremental
    env.update(SQLCOPILOT_HOME=str(home), SQLCOPILOT_BIN=str(BIN), SQLCOPILOT_PREFECT_PORT=str(free_port()),
               SQLCOPILOT_MLFLOW_PORT=str(free_port()), SQLCOPILOT_STOP_TIMEOUT="5",
               PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false")  # no 03:00 run may sneak into the test
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{env['SQLCOPILOT_PREFECT_PORT']}/api"
    monkeypatch = pytest.MonkeyPatch()
    mlflow_start = subprocess.Popen(["bash", str(REPO / "deploy" / "start-mlflow-server.sh")], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        script("start-prefect-server.sh", env)
        script("deploy.sh", env)
        script("start-worker.sh", env)
        assert mlflow_start.wait(timeout=300) == 0, f"deploy/start-mlflow-server.sh: {mlflow_start.stdout.read()}"
        monkeypatch.setenv("SQLCOPILOT_HOME", str(home))
        for name in ("MLFLOW_TRACKING_URI", "SQLCOPILOT_STORE"):
            monkeypatch.delenv(name, raising=False)
        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
            yield {"env": env, "home": home}
            cancel_unfinished_flow_runs()
    finally:
        monkeypatch.undo()
        mlflow_start.wait(timeout=300)
        subprocess.run(["bash", str(REPO / "deploy" / "stop-all.sh")], env=env, capture_output=True, timeout=180)
        for pid in own_leftovers(home):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def rebuilt(stack):
    """The full-rebuild deployment on the smoke profile, then its registered version."""
    flow_run_id = run_deployment(stack["env"], "full-rebuild/full-rebuild", "profile=smoke")
    state = flow_run_state(flow_run_id)
    assert state.is_completed(), f"full-rebuild ended {state.type}: {state.message}"
    [parent] = tracking.client().search_runs([tracking.experiment_id()], "tags.flow = 'full-rebuild'")
    stages = {r.data.tags["stage"]: r for r in tracking.client().search_runs(
        [tracking.experiment_id()], f"tags.mlflow.parentRunId = '{parent.info.run_id}'") if "cache_key" in r.data.tags}
    keys = {stage: run.data.tags["cache_key"] for stage, run in stages.items()}
    final = [stage for stage in STAGE_ORDER if stage in keys][-1]
    return {"parent": parent, "stages": stages, "keys": keys, "final": final}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_full_rebuild_deployment_scores_every_stage_and_registers_a_champion(stack, rebuilt):
    assert rebuilt["parent"].info.status == "FINISHED"
    assert {"download_base", "finetune"} <= set(rebuilt["stages"])
    for stage, run in rebuilt["stages"].items():
        if stage != "export":  # an export is checked by its parity test; its runner (build) is scored
            assert {"ex", "params", "size_mb", "tokens_per_s"} <= set(run.data.metrics), stage
    champion = registry.get_version("sqlcopilot", "champion")
    assert {"candidate", "champion"} <= set(champion.aliases)
    assert {stage: champion.tags[f"key.{stage}"] for stage in rebuilt["keys"]} == rebuilt["keys"]
    artifact = registry.version_artifact(champion)
    assert (artifact.stage, artifact.key) == (rebuilt["final"], rebuilt["keys"][rebuilt["final"]])
    assert float(champion.tags["ex"]) == rebuilt["stages"][rebuilt["final"]].data.metrics["ex"]
    port = stack["env"]["SQLCOPILOT_MLFLOW_PORT"]  # the MLflow server reads the store the flows wrote
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/alias?name=sqlcopilot&alias=champion"
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert json.load(answer)["model_version"]["version"] == str(champion.version)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_nightly_eval_passes_unchanged_and_fails_when_ex_drops_beyond_tolerance(stack, rebuilt):
    champion = registry.get_version("sqlcopilot", "champion")
    passed = run_deployment(stack["env"], "nightly-eval/nightly-eval", "profile=smoke")
    state = flow_run_state(passed)
    assert state.is_completed(), f"nightly-eval on the unchanged champion ended {state.type}: {state.message}"
    [night] = tracking.client().search_runs([tracking.experiment_id()], "tags.nightly = 'true'")
    true_ex = night.data.metrics["ex"]
    assert night.info.status == "FINISHED" and night.data.tags["model_version"] == str(champion.version)
    # the whole dev split (the smoke profile scores stages on 6 examples), with its interval
    assert night.data.metrics["n"] > 6 and night.data.metrics["ex_ci_low"] <= true_ex <= night.data.metrics["ex_ci_high"]
    assert f"| registration of version {champion.version} |" in markdown_of(passed)

    recorded = round(true_ex + TOLERANCE + 0.1, 4)
    keys = {name[4:]: key for name, key in champion.tags.items() if name.startswith("key.")}
    inflated = registry.register_artifact(registry.version_artifact(champion), keys, {"ex": recorded})
    failed = run_deployment(stack["env"], "nightly-eval/nightly-eval", "profile=smoke",
                            f"version_or_alias={inflated.version}", f"tolerance={TOLERANCE}")
    state = flow_run_state(failed)
    assert state.is_failed(), f"nightly-eval on an inflated registration ended {state.type}"
    assert (f"ex dropped from {recorded:.4f} at registration of version {inflated.version} "
            f"to {true_ex:.4f} tonight") in state.message
    report = markdown_of(failed)
    assert "REGRESSION" in report and "| the previous nightly (run " in report
    regressed = tracking.client().search_runs([tracking.experiment_id()], "tags.nightly = 'true'",
                                              order_by=["attributes.start_time DESC"])[0]
    assert regressed.info.status == "FAILED" and "ex dropped" in regressed.data.tags["regression"]
