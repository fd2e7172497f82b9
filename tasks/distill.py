"""Task distill: the pruned student distilled from the fine-tuned teacher (KL + hidden MSE + CE), then scored.

    python -m pytest tests/flows -q -k sweep
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import tracking
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.config import config_from_dict, config_to_dict
from sqlcopilot_core.distill import DistillConfig, distill as distill_student
from sqlcopilot_core.modeling import load_model
from sqlcopilot_core.prompting import model_prompt_settings
from sqlcopilot_core.training import with_prompt_settings
from sqlcopilot_core.scoring import resolve_spider_dir
from sqlcopilot_core.spider import load_split
from tasks.evaluate import python_scorer
from tasks.stage import run_stage

MODULES = ("distill", "training", "packing", "modeling", "prompting", "schema_prompt", "spider", "generate")


@task(name="distill", cache_policy=NO_CACHE)
def distill(settings: dict[str, Any], student: Artifact, teacher: Artifact, spider_dir: str | None,
            eval_settings: dict[str, Any], parent_run_id: str | None = None) -> Artifact:
    """The pruned model trained toward the fine-tuned teacher's logits and hidden states."""
    # the student is trained and asked with the prompt its teacher learned
    config = with_prompt_settings(config_from_dict(DistillConfig, settings, "distill"), model_prompt_settings(teacher.path))
    train_dir = resolve_spider_dir(spider_dir)
    resolved = {**config_to_dict(config), "train_data": str(train_dir)}

    def produce(staging: Path, checkpoints: Path, run_id: str) -> dict[str, Any]:
        student_model, tokenizer = load_model(student.path)
        teacher_model, _ = load_model(teacher.path)
        stats = distill_student(student_model, teacher_model, tokenizer, load_split(train_dir, "train"), config,
                                staging, resume_dir=checkpoints,
                                on_metrics=lambda step, metrics: tracking.log_metrics(run_id, metrics, step))
        tracking.set_tags(run_id, {"layer_map": stats.get("mapping")})
        return {(k if k.startswith("train_") else f"train_{k}"): v for k, v in stats.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    return run_stage("distill", resolved, {"student": student, "teacher": teacher}, MODULES, produce,
                     parent_run_id, score=python_scorer(eval_settings), eval_config=eval_settings)
