"""Task prune: structured GQA-aware pruning of the fine-tuned model to a ratio of its parameters, then scored.

    python -m pytest tests/flows -q -k sweep
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.config import config_from_dict, config_to_dict
from sqlcopilot_core.modeling import load_model, save_model
from sqlcopilot_core.prompting import model_prompt_settings, write_prompt_settings
from sqlcopilot_core.prune import PruneConfig, calibration_sequences, make_calibration_batches, prune_model
from sqlcopilot_core.scoring import resolve_spider_dir
from tasks.evaluate import python_scorer
from tasks.stage import run_stage

MODULES = ("prune", "modeling", "prompting", "spider")


@task(name="prune", cache_policy=NO_CACHE)
def prune(settings: dict[str, Any], teacher: Artifact, spider_dir: str | None, eval_settings: dict[str, Any],
          parent_run_id: str | None = None) -> Artifact:
    """The fine-tuned model pruned structurally to `ratio` of its parameters."""
    config = config_from_dict(PruneConfig, settings, "prune")
    train_dir = resolve_spider_dir(spider_dir)
    resolved = {**config_to_dict(config), **({"calibration_data": str(train_dir)} if config.criterion == "taylor"
                                            else {})}

    def produce(staging: Path, checkpoints: Path, run_id: str) -> dict[str, Any]:
        model, tokenizer = load_model(teacher.path)
        calibration = None
        if config.criterion == "taylor":
            count = config.calibration_batches * config.calibration_batch_size
            sequences = calibration_sequences(train_dir, tokenizer, count, config.seed,
                                              model_prompt_settings(teacher.path))
            calibration = make_calibration_batches(sequences, config, tokenizer.pad_token_id)
        report = prune_model(model, config, calibration)
        save_model(model, tokenizer, staging)
        write_prompt_settings(staging, model_prompt_settings(teacher.path))
        (staging / "prune_report.json").write_text(json.dumps(report, indent=1))
        return {"achieved_ratio": report["achieved_ratio"], "kept_parameters": report["kept_parameters"],
                "original_parameters": report["original_parameters"], "hidden_size": report["hidden_size"],
                "prune_seconds": report["seconds"]["total"]}

    return run_stage("prune", resolved, {"teacher": teacher}, MODULES, produce, parent_run_id,
                     score=python_scorer(eval_settings), eval_config=eval_settings)
