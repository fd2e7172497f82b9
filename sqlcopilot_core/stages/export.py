"""Stage export: the model traced to TorchScript with a versioned manifest, checked against the eager model on the
first eval prompts (which are part of its key).

    python -m pytest tests/flows -q -k rebuild
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlcopilot_core.copilot import EXPORT_SUBDIR
from sqlcopilot_core.export import ExportConfig, export_model
from sqlcopilot_core.modeling import count_parameters, load_model
from sqlcopilot_core.prompting import Prompter, model_prompt_settings
from sqlcopilot_core.scoring import eval_examples

NAME = "export"
CONFIG = ExportConfig
SCORE = None
READS_SPIDER = False


def reads(config: ExportConfig, spider_dir: Path | None, evaluation) -> dict[str, Any]:
    return {"parity": eval_examples(evaluation)[:config.parity_prompts]}


def produce(config: ExportConfig, inputs, staging: Path, checkpoints: Path, run) -> dict[str, Any]:
    model = inputs.upstream["model"]
    eager, tokenizer = load_model(model.path)
    prompter = Prompter(model_prompt_settings(model.path), tokenizer)  # the prompt the model was trained with
    prompts = [prompter.text(e.db_path, e.question) for e in inputs.data["parity"]]
    manifest = export_model(model.path, staging / EXPORT_SUBDIR, config, prompts)
    parity = manifest["parity"]
    return {"max_logit_diff": parity["max_abs_logit_diff"], "params": count_parameters(eager),
            "parity_greedy_identical": parity["greedy_identical"], "parity_prompts": parity["prompts"]}
