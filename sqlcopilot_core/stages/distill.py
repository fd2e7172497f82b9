"""Stage distill: the pruned student distilled from the fine-tuned teacher (KL + hidden MSE + CE) on the train
split, whose examples and databases are part of its key.

    python -m pytest tests/flows -q -k sweep
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlcopilot_core.distill import DistillConfig, distill as distill_student
from sqlcopilot_core.modeling import load_model
from sqlcopilot_core.prompting import model_prompt_settings
from sqlcopilot_core.training import with_prompt_settings
from sqlcopilot_core.spider import load_split
from sqlcopilot_core.stages import training_metrics

NAME = "distill"
CONFIG = DistillConfig
SCORE = "python"
READS_SPIDER = True


def reads(config: DistillConfig, spider_dir: Path, evaluation) -> dict[str, Any]:
    return {"train": load_split(spider_dir, "train")}


def produce(config: DistillConfig, inputs, staging: Path, checkpoints: Path, run) -> dict[str, Any]:
    student_model, tokenizer = load_model(inputs.upstream["student"].path)
    teacher_model, _ = load_model(inputs.upstream["teacher"].path)
    # the student is trained and asked with the prompt its teacher learned (a function of the teacher's key)
    config = with_prompt_settings(config, model_prompt_settings(inputs.upstream["teacher"].path))
    stats = distill_student(student_model, teacher_model, tokenizer, inputs.data["train"], config, staging,
                            resume_dir=checkpoints, on_metrics=lambda step, metrics: run.metrics(metrics, step))
    run.tags({"layer_map": stats.get("mapping")})
    return training_metrics(stats)
