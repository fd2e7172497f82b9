"""The stage contract: identify a stage's inputs by content, look up the cache, produce, score, commit, track.

A stage is a module of sqlcopilot_core/stages (its CONFIG, what it `reads`, how it `produce`s, how its model is
scored); `run` drives any of them. Its key is made of the stage name, the resolved config, the upstream artifact
keys, a digest of the data it reads and a digest of its code (the project modules its module imports, plus the
versions of the libraries that shape its numbers). No Prefect here: tasks/ wrap these calls.

    python -m pytest tests/core/test_stage.py -q
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from sqlcopilot_core import paths, tracking
from sqlcopilot_core.artifacts import Artifact, ArtifactStore, cache_key
from sqlcopilot_core.config import config_from_dict, config_to_dict
from sqlcopilot_core.identity import code_identity, data_identity

EVALUATE = "evaluate"
EVALUATE_MODULE = "sqlcopilot_core.stages.evaluate"
LOG = logging.getLogger("sqlcopilot")


def clean_up_after_killed_runs(log: logging.Logger | None = None) -> None:
    """What killed commands left behind: their staging folders are removed, their RUNNING MLflow runs marked
    FAILED (only those whose process has ended; a run going on beside this one is left alone)."""
    removed = ArtifactStore(paths.artifact_store()).clean_stale_staging()
    failed = tracking.fail_orphaned_runs()
    if removed or failed:
        (log or LOG).warning(f"after killed runs: removed {len(removed)} staging folder(s) "
                             f"{[str(p) for p in removed]}, marked {len(failed)} MLflow run(s) FAILED {failed}")


@dataclass(frozen=True)
class RunLog:
    """What a producer may record in its stage's MLflow run while it works."""

    run_id: str

    def metrics(self, values: dict[str, Any], step: int | None = None) -> None:
        tracking.log_metrics(self.run_id, values, step)

    def tags(self, values: dict[str, Any]) -> None:
        tracking.set_tags(self.run_id, values)


# produce(staging_dir, checkpoint_dir, run) -> metrics; it writes the artifact's files into staging_dir.
Producer = Callable[[Path, Path, RunLog], dict[str, Any]]


@dataclass(frozen=True)
class Inputs:
    """What a stage module's `produce` is given: the upstream artifacts by role, the data its `reads` returned (the
    same objects its key was made of), the Spider folder they came from (None when it reads none) and the
    evaluation settings."""

    upstream: dict[str, Artifact]
    data: dict[str, Any]
    spider_dir: Path | None
    evaluation: Any


@dataclass(frozen=True)
class Scorer:
    """How a model folder is scored, and what the score's own key is made of (it is an 'evaluate' artifact)."""

    settings: dict[str, Any]
    data: dict[str, Any]
    score: Callable[[Path, Path], dict[str, Any]] = field(compare=False)
    code: tuple[str, ...] = (EVALUATE_MODULE,)


@dataclass(frozen=True)
class Identity:
    """A stage's cache key and the parts it is made of (each a digest, or the upstream key)."""

    key: str
    parts: dict[str, str]
    modules: list[str]

    def record(self) -> dict[str, Any]:
        return {"parts": self.parts, "modules": self.modules}


def store() -> ArtifactStore:
    return ArtifactStore(paths.artifact_store())


def short_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def identify(stage: str, config: dict[str, Any], upstream: dict[str, str], code: tuple[str, ...],
             data: dict[str, Any] | None = None) -> Identity:
    """The key of (stage, config, upstream keys, data content, code content, library versions)."""
    source = code_identity(*code)
    digests = data_identity(data or {})
    key = cache_key(stage, {"config": config, "upstream": dict(sorted(upstream.items())), "data": digests,
                            "code": source["digest"], "libraries": source["libraries"]})
    parts = {"config": short_digest(config), **{f"upstream.{s}": k for s, k in sorted(upstream.items())},
             **{f"data.{name}": d for name, d in digests.items()}, "code": source["digest"],
             "libraries": ",".join(f"{n}=={v}" for n, v in source["libraries"].items())}
    return Identity(key, parts, source["modules"])


def changed_parts(artifacts: ArtifactStore, stage: str, identity: Identity) -> tuple[str | None, list[str]]:
    """The newest committed artifact of `stage` and the key parts in which it differs from `identity`."""
    manifests = sorted((artifacts.root / stage).glob("[!.]*/manifest.json"), key=lambda p: p.stat().st_mtime)
    for manifest in reversed(manifests):
        try:
            previous = json.loads(manifest.read_text()).get("identity", {}).get("parts")
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if previous:
            names = sorted(set(previous) | set(identity.parts))
            return manifest.parent.name, [n for n in names if previous.get(n) != identity.parts.get(n)]
    return None, []


def run_stage(stage: str, config: dict[str, Any], upstream: dict[str, Artifact], produce: Producer, *,
              code: tuple[str, ...], data: dict[str, Any] | None = None, scorer: Scorer | None = None,
              parent_run_id: str | None = None, log: logging.Logger | None = None) -> Artifact:
    """Return the cached artifact for this stage's identity, or produce, score and commit it.

    Each call gets a nested MLflow run under `parent_run_id`; a cache hit's run carries the cached metrics, the tag
    cache_hit=true and the key parts that matched; a miss names the parts that differ from the stage's newest
    artifact (cache_changed). Scores are 'evaluate' artifacts of their own (keyed by the model's key, the
    evaluation settings, data and code), so changing how models are scored re-scores them without retraining.
    Checkpoints live in a folder named by the cache key, so a killed run started again resumes; it is removed once
    the artifact is committed. `lookup_s` (MLflow metric) is the time spent identifying and looking up.
    """
    log = log or LOG
    started = time.perf_counter()
    upstream_keys = {a.stage: a.key for a in upstream.values()}
    identity = identify(stage, config, upstream_keys, code, data)
    artifacts = store()
    hit = artifacts.lookup(stage, identity.key)
    score_identity = score_identity_of(stage, identity.key, scorer)
    score_hit = score_identity and artifacts.lookup(EVALUATE, score_identity.key)
    lookup_s = round(time.perf_counter() - started, 3)
    tags = {"stage": stage, "cache_key": identity.key, **{f"upstream.{s}": k for s, k in upstream_keys.items()},
            **{f"key.{part}": value for part, value in identity.parts.items()}}
    if hit is not None:
        matched = ", ".join(identity.parts)
        log.info(f"{stage}: cache hit {hit.path} (lookup {lookup_s:.2f} s); matched: {matched}")
        with tracking.run(stage, config, parent_run_id, {**tags, "cache_hit": "true",
                                                         "cache_matched": matched}) as run_id:
            artifact = with_score(hit, scorer, run_id, log, score_identity, score_hit)
            tracking.log_metrics(run_id, {**artifact.metrics, "lookup_s": lookup_s})
        return artifact
    previous, changed = changed_parts(artifacts, stage, identity)
    reason = f"changed since {previous}: {', '.join(changed)}" if previous else "no earlier artifact"
    log.info(f"{stage}: producing {artifacts.path(stage, identity.key)} ({reason})")
    with tracking.run(stage, config, parent_run_id, {**tags, "cache_hit": "false",
                                                     "cache_changed": ", ".join(changed) if previous else "new"}
                      ) as run_id:
        staging = artifacts.staging(stage, identity.key)
        checkpoints = artifacts.root / stage / f".checkpoints-{identity.key}"
        try:
            metrics = produce(staging, checkpoints, RunLog(run_id))
            metrics = {**metrics, **evaluated(stage, identity.key, staging, scorer, run_id, log, score_identity,
                                              score_hit)}
            artifact = artifacts.commit(staging, stage=stage, key=identity.key, config=config,
                                        upstream=upstream_keys, version=identity.parts["code"], metrics=metrics,
                                        mlflow_run_id=run_id, extra={"identity": identity.record()})
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(checkpoints, ignore_errors=True)
        tracking.log_metrics(run_id, {**metrics, "lookup_s": lookup_s})
    log.info(f"{stage}: committed {artifact.path} metrics={metrics}")
    return artifact


def score_identity_of(stage: str, key: str, scorer: Scorer | None) -> Identity | None:
    if scorer is None:
        return None
    return identify(EVALUATE, scorer.settings, {stage: key}, scorer.code, scorer.data)


def with_score(artifact: Artifact, scorer: Scorer | None, run_id: str, log: logging.Logger | None = None,
               score_identity: Identity | None = None, score_hit: Artifact | None = None) -> Artifact:
    """A committed artifact with its score under `scorer` (cached, or scored now) merged into its metrics."""
    metrics = {**artifact.metrics, **evaluated(artifact.stage, artifact.key, artifact.path, scorer, run_id,
                                               log or LOG, score_identity, score_hit)}
    return Artifact(artifact.path, {**artifact.manifest, "metrics": metrics})


def evaluated(stage: str, key: str, model_dir: Path, scorer: Scorer | None, run_id: str, log: logging.Logger,
              score_identity: Identity | None = None, score_hit: Artifact | None = None) -> dict[str, Any]:
    """The score of model (stage, key): a cached 'evaluate' artifact, or scored now and committed as one. A freshly
    produced model is scored from its staging folder, so its manifest carries its metrics."""
    if scorer is None:
        return {}
    artifacts = store()
    score_identity = score_identity or score_identity_of(stage, key, scorer)
    hit = score_hit or artifacts.lookup(EVALUATE, score_identity.key)
    if hit is not None:
        return hit.metrics
    log.info(f"{stage}: scoring {model_dir}")
    staging = artifacts.staging(EVALUATE, score_identity.key)
    try:
        metrics = scorer.score(model_dir, staging)
        artifact = artifacts.commit(staging, stage=EVALUATE, key=score_identity.key, config=scorer.settings,
                                    upstream={stage: key}, version=score_identity.parts["code"], metrics=metrics,
                                    mlflow_run_id=run_id, extra={"identity": score_identity.record()})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in ("summary.json", "predictions.jsonl"):
        if (artifact.path / name).exists():
            tracking.log_artifact(run_id, str(artifact.path / name), EVALUATE)
    return metrics


def scorer_for(kind: str | None, eval_settings: dict[str, Any], upstream: dict[str, Artifact]) -> Scorer | None:
    """The scorer of a stage's model: 'python' (the model folder through transformers), 'cpp' (a build folder's
    runner on its upstream export) or None (not scored)."""
    if kind is None:
        return None
    from sqlcopilot_core.stages import evaluate

    config = evaluate.eval_config(eval_settings)
    export = upstream["export"] if kind == "cpp" else None
    return Scorer(evaluate.keyed_settings(config), evaluate.reads(config),
                  lambda model_dir, out_dir: evaluate.score(model_dir, out_dir, config, export))


def run(stage: ModuleType, settings: dict[str, Any], upstream: dict[str, Artifact], spider_dir: str | None,
        eval_settings: dict[str, Any], parent_run_id: str | None = None,
        log: logging.Logger | None = None) -> Artifact:
    """Run the stage defined by module `stage` (sqlcopilot_core.stages.*): config from `settings`, the data it
    reads from `spider_dir`, its model scored under `eval_settings`."""
    from sqlcopilot_core.scoring import resolve_spider_dir
    from sqlcopilot_core.stages import evaluate

    config = config_from_dict(stage.CONFIG, settings, stage.NAME)
    folder = resolve_spider_dir(spider_dir) if stage.READS_SPIDER else None
    evaluation = evaluate.eval_config(eval_settings)
    data = stage.reads(config, folder, evaluation)

    def produce(staging: Path, checkpoints: Path, run_log: RunLog) -> dict[str, Any]:
        return stage.produce(config, Inputs(upstream, data, folder, evaluation), staging, checkpoints, run_log)

    return run_stage(stage.NAME, config_to_dict(config), upstream, produce, code=(stage.__name__,), data=data,
                     scorer=scorer_for(stage.SCORE, eval_settings, upstream), parent_run_id=parent_run_id, log=log)


def gold_check(eval_settings: dict[str, Any], parent_run_id: str | None = None,
               log: logging.Logger | None = None) -> dict[str, Any]:
    """The eval split's gold SQL scored against itself (ex must be 1.0), logged as a run of its own."""
    from sqlcopilot_core.stages import evaluate

    metrics = evaluate.gold_check(evaluate.eval_config(eval_settings))
    with tracking.run("gold_check", eval_settings, parent_run_id, {"stage": "gold_check"}) as run_id:
        tracking.log_metrics(run_id, metrics)
    (log or LOG).info(f"gold_check: gold vs gold ex={metrics['ex']:.4f} on {metrics['n']} examples")
    return metrics
