"""Stage finetune: the base model trained on the Spider train split (sft or exec_guided), resumable; its key reads
the train examples and their databases by content.

    python -m pytest tests/flows -q -k rebuild
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlcopilot_core.finetune import FinetuneConfig, finetune as train_on_spider
from sqlcopilot_core.modeling import load_model
from sqlcopilot_core.spider import load_split
from sqlcopilot_core.stages import training_metrics

NAME = "finetune"
CONFIG = FinetuneConfig
SCORE = "python"
READS_SPIDER = True


def reads(config: FinetuneConfig, spider_dir: Path, evaluation) -> dict[str, Any]:
    return {"train": load_split(spider_dir, "train")}


def produce(config: FinetuneConfig, inputs, staging: Path, checkpoints: Path, run) -> dict[str, Any]:
    model, tokenizer = load_model(inputs.upstream["base"].path)
    stats = train_on_spider(model, tokenizer, inputs.data["train"], config, staging, resume_dir=checkpoints,
                            on_metrics=lambda step, metrics: run.metrics(metrics, step))
    return training_metrics(stats)
