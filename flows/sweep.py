"""Flow prune_sweep: one fine-tuned teacher, several pruning ratios, each pruned then distilled and scored, beside a
control (the teacher trained on for the same budget, unpruned) and compared in the parent MLflow run.

    sqlcopilot sweep --profile smoke --ratios 0.75,0.5,0.25,0.12
    sqlcopilot sweep --profile cpu --ratios 0.75,0.5 --teacher work/artifacts/finetune/KEY   # sweep a teacher you have
    sqlcopilot sweep --profile cpu --cpp-speed     # also export + build each student: C++ decode tokens/s
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from sqlcopilot_core import tracking
from sqlcopilot_core.report import publish_sweep
from flows.settings import control_settings, resolve_settings
from tasks.build import build
from tasks.distill import distill
from tasks.download_base import download_base
from tasks.export import export
from tasks.finetune import existing_finetune, finetune
from tasks.prune import prune
from sqlcopilot_core.stage import clean_up_after_killed_runs

DEFAULT_RATIOS = (0.75, 0.5, 0.25, 0.12)


@flow(name="prune-sweep")
def prune_sweep(profile: str = "smoke", ratios: list[float] | None = None, overrides: list[str] | None = None,
                spider_dir: str | None = None, teacher: str | None = None, control: bool = True,
                cpp_speed: bool = False, prune_hidden_below: float | None = 0.2) -> dict[str, Any]:
    """The cached teacher, then prune -> distill per ratio (a child MLflow run each), the control, and a comparison
    (table as the parent run's description, per-ratio metrics on the parent, Pareto plot, sweep.json).

    `teacher`: an existing fine-tuned model artifact folder to sweep instead of the profile's download_base ->
    finetune (for example one trained on a GPU machine, or under an earlier code version). Its checksums are
    verified and its cache key is the prune and distill stages' upstream key, so results stay cached per teacher.
    `control`: also fine-tune the teacher further for the distillation budget, unpruned (what the extra training
    alone is worth). `cpp_speed`: export and build each student and measure its C++ decode tokens/s.
    `prune_hidden_below`: ratios below this also prune the hidden width (None: as the profile says).
    """
    settings = resolve_settings(profile, overrides or [], spider_dir)
    ratios = ratios or list(DEFAULT_RATIOS)
    clean_up_after_killed_runs()
    with tracking.run("prune-sweep", {**settings, "ratios": ratios, "teacher": teacher or "", "control": control,
                                      "cpp_speed": cpp_speed, "prune_hidden_below": prune_hidden_below},
                      tags={"flow": "prune-sweep"}) as run_id:
        evaluate, folder = settings["evaluate"], settings["spider_dir"]
        if teacher:
            tuned = existing_finetune(teacher, evaluate, run_id)
        else:
            base = download_base(settings["download_base"], evaluate, run_id)
            tuned = finetune(settings["finetune"], base, folder, evaluate, run_id)
        results = [sweep_one(ratio, settings, tuned, run_id, cpp_speed, prune_hidden_below) for ratio in ratios]
        controlled = control_one(settings, tuned, run_id) if control else None
        rows = publish_sweep(run_id, tuned.metrics, results, controlled)
    return {"mlflow_run_id": run_id, "teacher": str(tuned.path), "rows": rows, "control": controlled}


def sweep_one(ratio: float, settings: dict[str, Any], teacher, parent_run_id: str, cpp_speed: bool = False,
              prune_hidden_below: float | None = None) -> dict[str, Any]:
    """prune -> distill (-> export -> build with cpp_speed) at one ratio, nested under a child run named after it."""
    prune_settings = {**settings.get("prune", {}), "ratio": ratio}
    if prune_hidden_below is not None and ratio < prune_hidden_below:
        prune_settings["prune_hidden"] = True
    with tracking.run(f"ratio={ratio}", {"ratio": ratio, "prune_hidden": prune_settings.get("prune_hidden", False)},
                      parent_run_id, {"sweep_ratio": str(ratio)}) as child:
        evaluate, folder = settings["evaluate"], settings["spider_dir"]
        pruned = prune(prune_settings, teacher, folder, evaluate, child)
        student = distill(settings.get("distill", {}), pruned, teacher, folder, evaluate, child)
        artifacts = {"prune": str(pruned.path), "distill": str(student.path)}
        cpp = {}
        if cpp_speed:
            runner = build(settings.get("build", {}), export(settings.get("export", {}), student, evaluate, child),
                           evaluate, child)
            cpp, artifacts["build"] = {"cpp_tokens_per_s": runner.metrics.get("tokens_per_s"),
                                       "cpp_ex": runner.metrics.get("ex")}, str(runner.path)
        metrics = {"ratio": ratio, **{f"pruned_{k}": v for k, v in pruned.metrics.items()}, **student.metrics, **cpp}
        tracking.log_metrics(child, metrics)
    return {"ratio": ratio, "prune_hidden": bool(prune_settings.get("prune_hidden", False)),
            "pruned": pruned.metrics, "distilled": {**student.metrics, **cpp}, "artifacts": artifacts}


def control_one(settings: dict[str, Any], teacher, parent_run_id: str) -> dict[str, Any]:
    """The teacher fine-tuned further for the distillation budget without pruning, nested under a child 'control'."""
    continued = control_settings(settings)
    with tracking.run("control", continued, parent_run_id, {"sweep_control": "true"}) as child:
        model = finetune(continued, teacher, settings["spider_dir"], settings["evaluate"], child)
        tracking.log_metrics(child, model.metrics)
    return {"metrics": model.metrics, "artifact": str(model.path), "settings": continued}
