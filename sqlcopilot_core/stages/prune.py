"""Stage prune: structured GQA-aware pruning of the fine-tuned model to a ratio of its parameters; with the taylor
criterion or the sensitivity allocation its key reads the train examples it calibrates on.

A sensitivity measurement does not depend on the ratio, so every prune of one teacher that measures the same way
(the ratios of a sweep) reuses it: it is kept in <work>/cache/sensitivity/<digest>.json, named by everything it
depends on (the teacher's key, the train examples, the settings but the ratio, the code).

    python -m pytest tests/flows -q -k sweep
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlcopilot_core import paths
from sqlcopilot_core.config import config_to_dict
from sqlcopilot_core.identity import code_identity, data_identity
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
    cache = sensitivity_cache(config, inputs) if config.allocation == "sensitivity" else None
    measured = read_sensitivity(cache) if cache else None
    report = prune_model(model, config, calibration, sensitivity_batches, sensitivity=measured)
    if cache:
        run.tags({"sensitivity": f"reused {cache}" if measured else f"measured, kept in {cache}"})
        if measured is None:
            write_sensitivity(cache, report["sensitivity"])
    for layer, figures in enumerate(summary_by_layer(report)):
        run.metrics(figures, step=layer)  # MLflow charts each figure against the layer index
    save_model(model, tokenizer, staging)
    write_prompt_settings(staging, prompt)
    (staging / "prune_report.json").write_text(json.dumps(report, indent=1))
    return {"achieved_ratio": report["achieved_ratio"], "kept_parameters": report["kept_parameters"],
            "original_parameters": report["original_parameters"], "hidden_size": report["hidden_size"],
            "prune_seconds": report["seconds"]["total"]}


def sensitivity_cache(config: PruneConfig, inputs) -> Path:
    """Where the teacher's sensitivity under these settings is kept (see the module docstring)."""
    from sqlcopilot_core.stage import short_digest

    settings = {name: value for name, value in config_to_dict(config).items() if name != "ratio"}
    digest = short_digest({"teacher": inputs.upstream["teacher"].key, "data": data_identity(inputs.data),
                           "settings": settings, "code": code_identity(__name__)["digest"]})
    return paths.work_dir() / "cache" / "sensitivity" / f"{digest}.json"


def read_sensitivity(path: Path) -> dict | None:
    """A kept measurement with its fraction keys as numbers again (JSON made them strings), or None."""
    if not path.is_file():
        return None
    measured = json.loads(path.read_text())
    numbers = lambda figures: {float(fraction): rise for fraction, rise in figures.items()}
    return {**measured, "hidden": numbers(measured["hidden"]),
            "layers": [{structure: numbers(figures) for structure, figures in layer.items()}
                       for layer in measured["layers"]]}


def write_sensitivity(path: Path, measured: dict) -> None:
    """Write atomically (a temporary file renamed), so a killed run never leaves half a measurement."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    temporary.write_text(json.dumps(measured, indent=1))
    os.replace(temporary, path)
