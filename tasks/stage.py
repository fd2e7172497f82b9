"""The stage contract shared by every task: resolve config, look up the cache, produce, score, commit, log.

    python -m pytest tests/tasks -q
"""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path
from typing import Any, Callable

from sqlcopilot_core import paths, tracking
from sqlcopilot_core.artifacts import Artifact, ArtifactStore, cache_key, code_version

# produce(staging_dir, checkpoint_dir, mlflow_run_id) -> metrics; it writes the artifact's files into staging_dir.
Producer = Callable[[Path, Path, str], dict[str, Any]]
# score(model_dir, out_dir) -> metrics (ex, params, size_mb, tokens_per_s, ...); writes predictions into out_dir.
Scorer = Callable[[Path, Path], dict[str, Any]]
SCORE_MODULES = ("scoring", "evaluation", "sqlexec", "sqlpool", "generate", "prompting", "spider", "hardness")


def logger():
    """Prefect's run logger inside a run, a plain logger outside (tasks are also called through .fn())."""
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("sqlcopilot")


def store() -> ArtifactStore:
    return ArtifactStore(paths.artifact_store())


def clean_up_after_killed_runs() -> None:
    """What killed commands left behind: their staging folders are removed, their RUNNING MLflow runs marked
    FAILED (only those whose process has ended; a run going on beside this one is left alone)."""
    removed = store().clean_stale_staging()
    failed = tracking.fail_orphaned_runs()
    if removed or failed:
        logger().warning(f"after killed runs: removed {len(removed)} staging folder(s) "
                         f"{[str(p) for p in removed]}, marked {len(failed)} MLflow run(s) FAILED {failed}")


def stage_key(stage: str, config: dict[str, Any], upstream: dict[str, Artifact], modules: tuple[str, ...]) -> str:
    return cache_key(stage, config, {a.stage: a.key for a in upstream.values()}, code_version(*modules))


def run_stage(stage: str, config: dict[str, Any], upstream: dict[str, Artifact], modules: tuple[str, ...],
              produce: Producer, parent_run_id: str | None = None, score: Scorer | None = None,
              eval_config: dict[str, Any] | None = None) -> Artifact:
    """Return the cached artifact for this (stage, config, upstream, code), or produce, score and commit it.

    Each call gets a nested MLflow run under `parent_run_id`; a cache hit's run carries the cached metrics and
    the tag cache_hit=true, so every flow run shows every stage side by side. Scores are artifacts of their own
    (stage 'score', keyed by the model's key and the evaluation settings), so changing how models are scored
    re-scores them without retraining anything. Checkpoints live in a folder named
    by the cache key, so a killed run started again resumes; it is removed once the artifact is committed.
    """
    log = logger()
    version = code_version(*modules)
    upstream_keys = {a.stage: a.key for a in upstream.values()}
    key = cache_key(stage, config, upstream_keys, version)
    artifacts = store()
    tags = {"stage": stage, "cache_key": key, **{f"upstream.{s}": k for s, k in upstream_keys.items()}}
    hit = artifacts.lookup(stage, key)
    if hit is not None:
        log.info(f"{stage}: cache hit {hit.path}")
        run_id = tracking.start_run(stage, config, parent_run_id, {**tags, "cache_hit": "true"})
        artifact = with_score(hit, score, eval_config, run_id)
        tracking.log_metrics(run_id, artifact.metrics)
        tracking.end_run(run_id)
        return artifact
    log.info(f"{stage}: producing {artifacts.path(stage, key)}")
    run_id = tracking.start_run(stage, config, parent_run_id, {**tags, "cache_hit": "false"})
    staging = artifacts.staging(stage, key)
    checkpoints = artifacts.root / stage / f".checkpoints-{key}"
    try:
        metrics = produce(staging, checkpoints, run_id)
        metrics = {**metrics, **scored(stage, key, staging, score, eval_config, run_id)}
        artifact = artifacts.commit(staging, stage=stage, key=key, config=config, upstream=upstream_keys,
                                    version=version, metrics=metrics, mlflow_run_id=run_id)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        tracking.set_tags(run_id, {"error": "".join(traceback.format_exception_only(exc)).strip()[:5000]})
        tracking.end_run(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    shutil.rmtree(checkpoints, ignore_errors=True)
    tracking.log_metrics(run_id, metrics)
    tracking.end_run(run_id)
    log.info(f"{stage}: committed {artifact.path} metrics={metrics}")
    return artifact


def with_score(artifact: Artifact, score: Scorer | None, eval_config: dict[str, Any] | None,
               run_id: str) -> Artifact:
    """A committed artifact with its score under `eval_config` (cached, or scored now) merged into its metrics."""
    metrics = {**artifact.metrics, **scored(artifact.stage, artifact.key, artifact.path, score, eval_config, run_id)}
    return Artifact(artifact.path, {**artifact.manifest, "metrics": metrics})


def scored(stage: str, key: str, model_dir: Path, score: Scorer | None, eval_config: dict[str, Any] | None,
           run_id: str) -> dict[str, Any]:
    """The score of model (stage, key) under `eval_config`: a cached 'score' artifact, or scored now and committed
    as one. A freshly produced model is scored from its staging folder, so its manifest carries its metrics."""
    if score is None:
        return {}
    artifacts = store()
    version = code_version(*SCORE_MODULES)
    score_key = cache_key("score", eval_config or {}, {stage: key}, version)
    hit = artifacts.lookup("score", score_key)
    if hit is not None:
        return hit.metrics
    logger().info(f"{stage}: scoring {model_dir}")
    staging = artifacts.staging("score", score_key)
    try:
        metrics = score(model_dir, staging)
        artifact = artifacts.commit(staging, stage="score", key=score_key, config=eval_config or {},
                                    upstream={stage: key}, version=version, metrics=metrics,
                                    mlflow_run_id=run_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in ("summary.json", "predictions.jsonl"):
        if (artifact.path / name).exists():
            tracking.log_artifact(run_id, str(artifact.path / name), "eval")
    return metrics
