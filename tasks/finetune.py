"""Task finetune: train the base model on the Spider train split (sft or exec_guided), resumable, then score it.

    python -m pytest tests/flows -q -k rebuild
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import tracking
from sqlcopilot_core.artifacts import Artifact, ArtifactError, load_artifact
from sqlcopilot_core.config import config_from_dict, config_to_dict
from sqlcopilot_core.finetune import FinetuneConfig, finetune as train_on_spider
from sqlcopilot_core.modeling import load_model
from sqlcopilot_core.scoring import resolve_spider_dir
from sqlcopilot_core.spider import load_split
from tasks.evaluate import python_scorer
from tasks.stage import run_stage, with_score

MODULES = ("finetune", "training", "modeling", "prompting", "spider", "sqlexec", "sqlpool", "evaluation",
           "generate")


@task(name="finetune", cache_policy=NO_CACHE)
def finetune(settings: dict[str, Any], base: Artifact, spider_dir: str | None, eval_settings: dict[str, Any],
             parent_run_id: str | None = None) -> Artifact:
    """The base model fine-tuned on Spider train, with its training statistics and score."""
    config = config_from_dict(FinetuneConfig, settings, "finetune")
    train_dir = resolve_spider_dir(spider_dir)
    resolved = {**config_to_dict(config), "train_data": str(train_dir)}

    def produce(staging: Path, checkpoints: Path, run_id: str) -> dict[str, Any]:
        model, tokenizer = load_model(base.path)
        examples = load_split(train_dir, "train")
        stats = train_on_spider(model, tokenizer, examples, config, staging, resume_dir=checkpoints,
                                on_metrics=lambda step, metrics: tracking.log_metrics(run_id, metrics, step))
        return {(k if k.startswith("train_") else f"train_{k}"): v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    return run_stage("finetune", resolved, {"base": base}, MODULES, produce, parent_run_id,
                     score=python_scorer(eval_settings), eval_config=eval_settings)


@task(name="existing_finetune", cache_policy=NO_CACHE)
def existing_finetune(path: str, eval_settings: dict[str, Any], run_id: str) -> Artifact:
    """A fine-tuned artifact given by path (e.g. `sweep --teacher`), verified, and scored under `eval_settings` like a
    cache hit so it compares with models scored now; an error names the folder and what is wrong with it."""
    artifact = load_artifact(path)
    if artifact.stage != "finetune":
        raise ArtifactError(f"{path}: --teacher must be a finetune artifact, this one is from stage "
                            f"'{artifact.stage}'")
    return with_score(artifact, python_scorer(eval_settings), eval_settings, run_id)
