"""Task export: the distilled (or any) model traced to TorchScript with a versioned manifest and a parity check.

    python -m pytest tests/flows -q -k rebuild
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.config import config_from_dict, config_to_dict
from sqlcopilot_core.copilot import EXPORT_SUBDIR
from sqlcopilot_core.export import ExportConfig, export_model
from sqlcopilot_core.prompting import Prompter, model_prompt_settings
from sqlcopilot_core.scoring import eval_examples
from sqlcopilot_core.modeling import count_parameters, load_model
from tasks.evaluate import eval_config
from tasks.stage import run_stage

MODULES = ("export", "decoder", "modeling", "prompting")


@task(name="export", cache_policy=NO_CACHE)
def export(settings: dict[str, Any], model: Artifact, eval_settings: dict[str, Any],
           parent_run_id: str | None = None) -> Artifact:
    """TorchScript graph + tokenizer + manifest under <artifact>/model, checked against the eager model."""
    config = config_from_dict(ExportConfig, settings, "export")

    def produce(staging: Path, checkpoints: Path, run_id: str) -> dict[str, Any]:
        eager, tokenizer = load_model(model.path)
        prompter = Prompter(model_prompt_settings(model.path), tokenizer)
        prompts = [prompter.text(e.db_path, e.question)
                   for e in eval_examples(eval_config(eval_settings))[:config.parity_prompts]]
        manifest = export_model(model.path, staging / EXPORT_SUBDIR, config, prompts)
        parity = manifest["parity"]
        return {"max_logit_diff": parity["max_abs_logit_diff"], "params": count_parameters(eager),
                "parity_greedy_identical": parity["greedy_identical"], "parity_prompts": parity["prompts"]}

    return run_stage("export", config_to_dict(config), {"model": model}, MODULES, produce, parent_run_id)
