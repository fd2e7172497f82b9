"""MLflow tracking: one parent run per flow run, one nested run per stage, the same metric names everywhere.

The default store is SQLite under the work folder; MLFLOW_TRACKING_URI points elsewhere.

    python -c "from sqlcopilot_core import tracking; print(tracking.client().tracking_uri)"
"""

from __future__ import annotations

import json
import math
import os
import traceback
from contextlib import contextmanager
from typing import Any, Iterator

from sqlcopilot_core import lifetime, paths

EXPERIMENT = "sqlcopilot"
# Every model-producing stage logs these names, so runs line up in the MLflow UI.
MODEL_METRICS = ("ex", "params", "size_mb", "tokens_per_s")
# The process that created a run ('host:pid:start_ticks'): a RUNNING run whose process has ended was killed.
PROCESS_TAG = "sqlcopilot.process"


def client():
    """An MlflowClient on the configured tracking store (created on first use)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = paths.tracking_uri()
    if uri.startswith("sqlite:///"):
        paths.work_dir().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(name: str = EXPERIMENT) -> str:
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=(paths.work_dir() / "mlartifacts").as_uri())


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow params ('stage.key' -> string, cut to MLflow's 6000-character limit)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            out[name] = (value if isinstance(value, str) else json.dumps(value, default=str))[:6000]
    return out


def start_run(name: str, params: dict[str, Any] | None = None, parent_run_id: str | None = None,
              tags: dict[str, str] | None = None, experiment: str = EXPERIMENT) -> str:
    """Create a run (nested under `parent_run_id` when given) and log its params; returns the run id."""
    all_tags = {"mlflow.runName": name, PROCESS_TAG: lifetime.process_identity(os.getpid()), **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client().create_run(experiment_id(experiment), tags=all_tags, run_name=name)
    if params:
        log_params(run.info.run_id, params)
    return run.info.run_id


def log_params(run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in flatten_params(params).items()]
    for start in range(0, len(items), 90):
        client().log_batch(run_id, params=items[start:start + 90])


def log_metrics(run_id: str, metrics: dict[str, Any], step: int | None = None) -> None:
    """Log the numeric, finite entries of `metrics`; anything else is skipped rather than failing a stage."""
    from mlflow.entities import Metric
    import time

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
    if items:
        client().log_batch(run_id, metrics=items)


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client().set_tag(run_id, key, str(value))


def log_artifact(run_id: str, local_path: str, artifact_path: str | None = None) -> None:
    client().log_artifact(run_id, local_path, artifact_path)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


@contextmanager
def run(name: str, params: dict[str, Any] | None = None, parent_run_id: str | None = None,
        tags: dict[str, str] | None = None) -> Iterator[str]:
    """A run that always closes: FINISHED when the block ends, FAILED (KILLED on Ctrl-C) with the error as the tag
    `error` when it raises; the exception goes on."""
    run_id = start_run(name, params, parent_run_id, tags)
    try:
        yield run_id
    except BaseException as exc:
        set_tags(run_id, {"error": "".join(traceback.format_exception_only(exc)).strip()[:5000]})
        end_run(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    end_run(run_id)


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(client().get_run(run_id).data.metrics)


def fail_orphaned_runs(experiment: str = EXPERIMENT) -> list[str]:
    """Mark FAILED every RUNNING run whose process (PROCESS_TAG) has ended on this host: a killed command never
    ended them. Runs of processes still running, or of other hosts, are left alone. Returns the run ids."""
    mlflow_client = client()
    failed, token = [], None
    while True:
        page = mlflow_client.search_runs([experiment_id(experiment)], "attributes.status = 'RUNNING'",
                                         max_results=1000, page_token=token)
        for run in page:
            identity = run.data.tags.get(PROCESS_TAG)
            if identity and lifetime.identity_alive(identity) is False:
                mlflow_client.set_tag(run.info.run_id, "sqlcopilot.ended", "FAILED at a later start: its process "
                                      "ended without ending the run (killed)")
                mlflow_client.set_terminated(run.info.run_id, status="FAILED")
                failed.append(run.info.run_id)
        token = page.token
        if not token:
            return failed
