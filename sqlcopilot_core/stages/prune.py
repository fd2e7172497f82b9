"""Stage prune: structured GQA-aware pruning of the fine-tuned model to a ratio of its parameters; with the taylor
criterion or the sensitivity allocation its key reads the train examples it calibrates on.

    python -m pytest tests/flows -q -k sweep
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlcopilot_core.modeling import load_model, save_model
from sqlcopilot_core.prompting import model_prompt_settings, write_prompt_settings
from sqlcopilot_core.prune import PruneConfig, calibration_sequences, make_calibration_batches, prune_model
from sqlcopilot_core.sensitivity import packed_batches, summary_by_layer
from sqlcopilot_core.spider import load_split

NAME = "prune"
CONFIG = PruneConfig
SCORE = "python"
READS_SPIDER = True


def reads(config: PruneConfig, spider_dir: Path, evaluation) -> dict[str, Any]:
    reads_train = config.criterion == "taylor" or config.allocation == "sensitivity"
    return {"train": load_split(spider_dir, "train")} if reads_train else {}


def produce(config: PruneConfig, inputs, staging: Path, checkpoints: Path, run) -> dict[str, Any]:
    teacher = inputs.upstream["teacher"].path
    model, tokenizer = load_model(teacher)
    prompt = model_prompt_settings(teacher)  # the student is asked as its teacher was trained
    calibration = None
    if config.criterion == "taylor":
        count = config.calibration_batches * config.calibration_batch_size
        sequences = calibration_sequences(inputs.spider_dir, tokenizer, count, config.seed, prompt)
        calibration = make_calibration_batches(sequences, config, tokenizer.pad_token_id)
    sensitivity_batches = None
    if config.allocation == "sensitivity":
        sensitivity_batches = packed_batches(inputs.data["train"], tokenizer, prompt, config.sensitivity_examples,
                                             config.seed, config.calibration_batch_size,
                                             config.sensitivity_max_seq_len, what="sensitivity",
                                             per_database=config.sensitivity_per_database)
    report = prune_model(model, config, calibration, sensitivity_batches)
    for layer, figures in enumerate(summary_by_layer(report)):
        run.metrics(figures, step=layer)  # MLflow charts each figure against the layer index
    save_model(model, tokenizer, staging)
    write_prompt_settings(staging, prompt)
    (staging / "prune_report.json").write_text(json.dumps(report, indent=1))
    return {"achieved_ratio": report["achieved_ratio"], "kept_parameters": report["kept_parameters"],
            "original_parameters": report["original_parameters"], "hidden_size": report["hidden_size"],
            "prune_seconds": report["seconds"]["total"]}
