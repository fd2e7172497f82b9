"""Flow full_rebuild: the whole DAG, stage after stage, each cached and scored.

    sqlcopilot rebuild --profile smoke
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from sqlcopilot_core import tracking
from flows.settings import resolve_settings
from tasks.build import build, choose_shipped_model
from tasks.distill import distill
from tasks.download_base import download_base
from tasks.evaluate import gold_check
from tasks.export import export
from tasks.finetune import finetune
from tasks.prune import prune
from tasks.registry import register_model
from sqlcopilot_core.stage import clean_up_after_killed_runs


@flow(name="full-rebuild")
def full_rebuild(profile: str = "smoke", overrides: list[str] | None = None,
                 spider_dir: str | None = None) -> dict[str, Any]:
    """download_base -> finetune -> prune -> distill -> export -> build, every stage a cached artifact with its score
    in a nested MLflow run. The distilled student is exported and built only when it keeps build.retention_floor of
    the teacher's ex, else the teacher is ('shipped' in the result, on the flow's run and the registry tags). The
    built model is registered in the MLflow model registry (alias candidate, champion when it scores at least the
    champion)."""
    settings = resolve_settings(profile, overrides or [], spider_dir)
    clean_up_after_killed_runs()
    with tracking.run("full-rebuild", settings, tags={"flow": "full-rebuild", "profile": profile}) as run_id:
        evaluate = settings["evaluate"]
        gold = gold_check(evaluate, run_id)
        base = download_base(settings["download_base"], evaluate, run_id)
        folder = settings["spider_dir"]
        tuned = finetune(settings["finetune"], base, folder, evaluate, run_id)
        pruned = prune(settings.get("prune", {}), tuned, folder, evaluate, run_id)
        student = distill(settings.get("distill", {}), pruned, tuned, folder, evaluate, run_id)
        shipped, decision = choose_shipped_model(settings.get("build", {}), student, tuned, run_id)
        exported = export(settings.get("export", {}), shipped, evaluate, run_id)
        runner = build(settings.get("build", {}), exported, evaluate, run_id)
        stages = {"download_base": base, "finetune": tuned, "prune": pruned, "distill": student,
                  "export": exported, "build": runner}
        registered = register_model(runner, {name: a.key for name, a in stages.items()}, run_id, shipped=decision)
    return {"mlflow_run_id": run_id, "gold_ex": gold["ex"], "registered": registered, "shipped": decision,
            "artifacts": {name: str(a.path) for name, a in stages.items()},
            "keys": {name: a.key for name, a in stages.items()}}
