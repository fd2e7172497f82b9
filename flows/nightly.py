"""Flow nightly_eval: re-score a registered model on the Spider dev split and fail on a regression.

Deployed by prefect.yaml as `nightly-eval/nightly-eval` (cron 0 3 * * *); run once by hand with

    prefect deployment run 'nightly-eval/nightly-eval' -p version_or_alias=champion
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.settings import resolve_settings
from sqlcopilot_core import registry, tracking
from tasks.registry import compare_with_references, resolve_registered_model, score_registered_model
from sqlcopilot_core.stage import clean_up_after_killed_runs


@flow(name="nightly-eval")
def nightly_eval(model_name: str = "sqlcopilot", version_or_alias: str | int = "champion", profile: str = "smoke",
                 tolerance: float = 0.02, overrides: list[str] | None = None,
                 spider_dir: str | None = None) -> dict[str, Any]:
    """Score the registered version on the whole eval split; raise when ex drops by more than `tolerance` vs
    registration or last night and the 95% interval of the drop lies below zero (paired against last night)."""
    # the whole split, whatever the profile's stages are scored on: a nightly drop must be told from noise
    evaluate = {**resolve_settings(profile, overrides or [], spider_dir)["evaluate"], "limit": None}
    version, artifact = resolve_registered_model(model_name, version_or_alias)
    clean_up_after_killed_runs()
    with tracking.run(registry.NIGHTLY_RUN, evaluate, tags={
            "nightly": "true", "model_name": model_name, "model_version": version["version"],
            "requested": str(version_or_alias), "profile": profile, "eval_key": registry.eval_key(evaluate),
            "artifact_stage": artifact.stage, "artifact_key": artifact.key}) as run_id:
        metrics, outcomes = score_registered_model(artifact, evaluate, run_id)
        report = compare_with_references(version, metrics, outcomes, evaluate, tolerance, run_id)
        if report["regressions"]:
            message = f"{model_name} version {version['version']}: " + "; ".join(report["regressions"])
            tracking.set_tags(run_id, {"regression": message})
            # the run closes FAILED: a failed night never becomes the next night's reference
            raise registry.RegressionError(message)
    return {"mlflow_run_id": run_id, "model_version": version["version"], "ex": metrics["ex"], **report}
