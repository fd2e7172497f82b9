"""Flow prune_sweep: one fine-tuned teacher, several pruning ratios, each pruned then distilled and scored.

    sqlcopilot sweep --profile smoke --ratios 0.75,0.5,0.25
    sqlcopilot sweep --profile cpu --ratios 0.75,0.5 --teacher work/artifacts/finetune/KEY   # sweep a teacher you have
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow

from sqlcopilot_core import tracking
from sqlcopilot_core.report import sweep_markdown, sweep_plot, sweep_rows
from flows.settings import resolve_settings
from tasks.distill import distill
from tasks.download_base import download_base
from tasks.finetune import existing_finetune, finetune
from tasks.prune import prune
from sqlcopilot_core.stage import clean_up_after_killed_runs


@flow(name="prune-sweep")
def prune_sweep(profile: str = "smoke", ratios: list[float] | None = None, overrides: list[str] | None = None,
                spider_dir: str | None = None, teacher: str | None = None) -> dict[str, Any]:
    """The cached teacher, then prune -> distill per ratio (a child MLflow run each) and a comparison table.

    `teacher`: an existing fine-tuned model artifact folder to sweep instead of the profile's download_base ->
    finetune (for example one trained on a GPU machine, or under an earlier code version). Its checksums are
    verified and its cache key is the prune and distill stages' upstream key, so results stay cached per teacher.
    """
    settings = resolve_settings(profile, overrides or [], spider_dir)
    ratios = ratios or [0.75, 0.5, 0.25]
    clean_up_after_killed_runs()
    with tracking.run("prune-sweep", {**settings, "ratios": ratios, "teacher": teacher or ""},
                      tags={"flow": "prune-sweep"}) as run_id:
        evaluate, folder = settings["evaluate"], settings["spider_dir"]
        if teacher:
            tuned = existing_finetune(teacher, evaluate, run_id)
        else:
            base = download_base(settings["download_base"], evaluate, run_id)
            tuned = finetune(settings["finetune"], base, folder, evaluate, run_id)
        results = [sweep_one(ratio, settings, tuned, run_id) for ratio in ratios]
        rows = publish(run_id, tuned.metrics, results)
    return {"mlflow_run_id": run_id, "teacher": str(tuned.path), "rows": rows}


def sweep_one(ratio: float, settings: dict[str, Any], teacher, parent_run_id: str) -> dict[str, Any]:
    """prune -> distill at one ratio, nested under a child run named after the ratio."""
    with tracking.run(f"ratio={ratio}", {"ratio": ratio}, parent_run_id, {"sweep_ratio": str(ratio)}) as child:
        evaluate, folder = settings["evaluate"], settings["spider_dir"]
        pruned = prune({**settings.get("prune", {}), "ratio": ratio}, teacher, folder, evaluate, child)
        student = distill(settings.get("distill", {}), pruned, teacher, folder, evaluate, child)
        metrics = {"ratio": ratio, **{f"pruned_{k}": v for k, v in pruned.metrics.items()}, **student.metrics}
        tracking.log_metrics(child, metrics)
    return {"ratio": ratio, "pruned": pruned.metrics, "distilled": student.metrics,
            "artifacts": {"prune": str(pruned.path), "distill": str(student.path)}}


def publish(run_id: str, teacher: dict[str, Any], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log the comparison table (markdown + JSON) and the plot as artifacts of the sweep's parent run."""
    rows = sweep_rows(teacher, results)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        (out / "sweep.md").write_text(sweep_markdown(rows, teacher))
        (out / "sweep.json").write_text(json.dumps({"teacher": teacher, "rows": rows, "results": results}, indent=1))
        sweep_plot(rows, teacher, out / "sweep.png")
        for name in ("sweep.md", "sweep.json", "sweep.png"):
            tracking.log_artifact(run_id, str(out / name), "sweep")
    return rows
