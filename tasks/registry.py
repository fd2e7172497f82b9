"""Registry tasks: register a flow's final artifact as a model version; re-score a registered version and judge it
against its registration score and the previous nightly result.

    python -m pytest tests/flows/test_deployments.py -q -m slow
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import registry, tracking
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.stages import evaluate
from tasks import logger


@task(name="register_model", cache_policy=NO_CACHE)
def register_model(final_artifact: Artifact, stage_keys: dict[str, str], parent_run_id: str | None = None,
                   model_name: str = registry.MODEL_NAME, shipped: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register the final artifact with its scores (and, given the build's `shipped` decision, which model it holds
    and why); aliased candidate, and champion when at least as good."""
    scores = registry.artifact_scores(final_artifact, parent_run_id)
    version = registry.register_artifact(final_artifact, stage_keys, scores, model_name, parent_run_id,
                                         registry.shipping_tags(shipped) if shipped else None)
    logger().info(f"registered {model_name} version {version.version} ({final_artifact.stage} "
                  f"{final_artifact.key}, ex={scores['ex']}) aliases={sorted(version.aliases)}")
    return {"model_name": model_name, "version": version.version, "aliases": sorted(version.aliases),
            "ex": scores["ex"], "artifact": str(final_artifact.path), "tags": dict(version.tags)}


@task(name="resolve_registered_model", cache_policy=NO_CACHE)
def resolve_registered_model(model_name: str, version_or_alias: str | int) -> tuple[dict[str, Any], Artifact]:
    """The version's number and tags, and its artifact verified file by file."""
    version = registry.get_version(model_name, version_or_alias)
    artifact = registry.version_artifact(version)
    logger().info(f"{model_name} {version_or_alias} is version {version.version}: {artifact.path}")
    return {"name": model_name, "version": version.version, "tags": dict(version.tags)}, artifact


@task(name="score_registered_model", cache_policy=NO_CACHE)
def score_registered_model(artifact: Artifact, eval_settings: dict[str, Any], run_id: str
                           ) -> tuple[dict[str, Any], dict[str, bool]]:
    """Score the model afresh (never from the score cache: finding drift is the point); predictions and the
    per-example outcomes (what the next night's paired comparison reads) go to MLflow."""
    with tempfile.TemporaryDirectory(prefix="nightly-") as out:
        metrics = evaluate.score_artifact(artifact, Path(out), evaluate.eval_config(eval_settings))
        outcomes = registry.write_outcomes(Path(out))
        for name in ("summary.json", "predictions.jsonl", registry.OUTCOMES_FILE):
            if (Path(out) / name).exists():
                tracking.log_artifact(run_id, str(Path(out) / name), evaluate.NAME)
    tracking.log_metrics(run_id, metrics)
    logger().info(f"nightly score of {artifact.stage} {artifact.key}: {metrics}")
    return metrics, outcomes


@task(name="compare_with_references", cache_policy=NO_CACHE)
def compare_with_references(version: dict[str, Any], metrics: dict[str, Any], outcomes: dict[str, bool],
                            eval_settings: dict[str, Any], tolerance: float, run_id: str) -> dict[str, Any]:
    """ex against the registration score (tonight's interval, the registered figure taken as fixed) and against the
    previous passing nightly (paired on the same examples); a Markdown report in Prefect."""
    name, number = version["name"], version["version"]
    registered = float(version["tags"]["ex"])
    comparisons = [registry.Comparison(f"registration of version {number}", registered, float(metrics["ex"]),
                                       (metrics["ex_ci_low"] - registered, metrics["ex_ci_high"] - registered))]
    previous = registry.previous_nightly(name, registry.eval_key(eval_settings))
    if previous is not None and "ex" in previous.data.metrics:
        label = f"the previous nightly (run {previous.info.run_id[:8]}, version {previous.data.tags.get('model_version')})"
        before = registry.read_outcomes(previous.info.run_id, evaluate.NAME)
        paired = registry.paired_comparison(label, before, outcomes) if before else None
        comparisons.append(paired or registry.Comparison(label, previous.data.metrics["ex"], float(metrics["ex"])))
    regressions = registry.regression_messages(comparisons, tolerance)
    markdown = registry.comparison_markdown(f"nightly-eval: {name} version {number}", comparisons, tolerance,
                                            metrics, version["tags"])
    create_markdown_artifact(markdown=markdown, key=artifact_key(name),
                             description=f"{name} v{number}: " + ("; ".join(regressions) or "no regression"))
    tracking.log_metrics(run_id, {"ex_registered": comparisons[0].reference_ex,
                                  **({"ex_previous_nightly": comparisons[1].reference_ex}
                                     if len(comparisons) > 1 else {})})
    return {"comparisons": [c.__dict__ for c in comparisons], "regressions": regressions, "markdown": markdown}


def artifact_key(model_name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "nightly-eval-" + re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
