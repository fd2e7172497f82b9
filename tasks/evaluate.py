"""Scoring tasks: the standard model score every stage uses, and the gold-vs-gold check of the eval split.

    python -c "from tasks.evaluate import gold_check; print(gold_check.fn({}))"
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import tracking
from sqlcopilot_core.config import config_from_dict
from sqlcopilot_core.scoring import EvalConfig, eval_examples, score_model, score_predictions_to
from tasks.stage import logger


def eval_config(settings: dict[str, Any]) -> EvalConfig:
    return config_from_dict(EvalConfig, settings, "evaluate")


def python_scorer(settings: dict[str, Any]):
    """score(model_dir, out_dir) for a model folder, run in Python with transformers."""
    def score(model_dir: Path, out_dir: Path) -> dict[str, Any]:
        from sqlcopilot_core.modeling import load_model

        model, tokenizer = load_model(model_dir)
        return score_model(model, tokenizer, model_dir, eval_config(settings), out_dir)
    return score


@task(name="gold_check", cache_policy=NO_CACHE)
def gold_check(settings: dict[str, Any], parent_run_id: str | None = None) -> dict[str, Any]:
    """Score the eval split's gold SQL against itself: every database present, every gold query runs (ex == 1)."""
    config = eval_config(settings)
    examples = eval_examples(config)
    with tempfile.TemporaryDirectory() as out:
        summary = score_predictions_to(Path(out), examples, [e.query for e in examples], config)
    metrics = {"ex": summary["ex"], "n": summary["n"], "gold_errors": summary["gold_errors"]}
    run_id = tracking.start_run("gold_check", settings, parent_run_id, {"stage": "gold_check"})
    tracking.log_metrics(run_id, metrics)
    tracking.end_run(run_id)
    logger().info(f"gold_check: gold vs gold ex={summary['ex']:.4f} on {summary['n']} examples")
    return metrics
