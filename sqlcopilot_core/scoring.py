"""The pieces every model-producing stage is scored with: the eval split and its settings, predictions executed and
summarized, weight-file size. The scorer that puts them together (Python or C++ runtime) is
sqlcopilot_core/stages/evaluate.py, one function, so every stage's numbers mean the same thing.

    python -c "from sqlcopilot_core.scoring import EvalConfig, eval_examples; print(len(eval_examples(EvalConfig())))"
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlcopilot_core.spider import Example, load_split


@dataclass(frozen=True)
class EvalConfig:
    """Which split every stage is scored on, and how predictions are generated and executed."""

    spider_dir: str | None = None
    """Spider-format folder; None means $SPIDER_DIR, else the embedded sample data."""
    split: str = "dev"
    """'dev' or 'train'."""
    limit: int | None = None
    """Score N examples spread evenly over the split (None: all); Spider files are grouped by database, so the
    first N would cover one or two. CPU generation is slow; the profiles set this."""
    max_new_tokens: int = 96
    """Longest generated SQL, in tokens."""
    batch_size: int = 8
    """Prompts generated together."""
    timeout_s: float = 5.0
    """Wall-clock limit per executed query."""
    max_rows: int = 10000
    """Row cap per executed query."""
    speed_tokens: int = 32
    """Tokens decoded when measuring tokens/s."""
    decoding: str = "greedy"
    """greedy | beam | guided (the most probable of num_beams candidates that executes read-only); with any but
    greedy the score also holds ex_greedy, so the decoding's gain is visible."""
    num_beams: int = 4
    """Beams of beam and guided decoding."""
    constrained: bool = False
    """Only tokens that can still make valid SQL over the database's table and column names."""
    prefer_nonempty: bool = False
    """guided: prefer the first candidate whose result has rows."""
    retry_beams: int = 8
    """guided: a question none of whose candidates runs (not even cut short) is decoded once more with this many
    beams (0 or <= num_beams: never)."""

    def __post_init__(self):
        if self.split not in ("dev", "train"):
            raise ValueError(f"EvalConfig.split: {self.split!r} is not 'dev' or 'train'")
        if self.limit is not None and self.limit < 1:
            raise ValueError("EvalConfig.limit: must be >= 1 or None")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.timeout_s <= 0:
            raise ValueError("EvalConfig: max_new_tokens, batch_size and timeout_s must be positive")
        from sqlcopilot_core.generate import check_decoding

        check_decoding(self.decoding, self.num_beams, "EvalConfig", self.retry_beams)


def resolve_spider_dir(spider_dir: str | os.PathLike | None) -> Path:
    """An explicit folder, else $SPIDER_DIR, else the embedded sample data (built on first use)."""
    if spider_dir:
        return Path(spider_dir).resolve()
    if os.environ.get("SPIDER_DIR"):
        return Path(os.environ["SPIDER_DIR"]).resolve()
    from sqlcopilot_core.sample import ensure_sample_spider

    return ensure_sample_spider()


def eval_examples(config: EvalConfig) -> list[Example]:
    """The examples every stage is scored on: the split, or `limit` of them at evenly spaced positions."""
    examples = load_split(resolve_spider_dir(config.spider_dir), config.split)
    if not config.limit or config.limit >= len(examples):
        return examples
    return [examples[i * len(examples) // config.limit] for i in range(config.limit)]


def folder_size_mb(folder: Path, suffixes: tuple[str, ...] = (".safetensors", ".pt", ".bin")) -> float:
    """Size on disk of the weight files of a folder, in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.suffix in suffixes) / 1e6


def score_predictions_to(out_dir: Path, examples: list[Example], predictions: list[str],
                         config: EvalConfig) -> dict[str, Any]:
    """Execute and score predictions, write predictions.jsonl + summary.json into out_dir, return the summary."""
    from sqlcopilot_core.evaluation import score_predictions, write_summary

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.jsonl", "w") as handle:
        for example, pred in zip(examples, predictions):
            handle.write(json.dumps({"db_id": example.db_id, "question": example.question, "pred": pred}) + "\n")
    summary = score_predictions(examples, predictions, timeout_s=config.timeout_s, max_rows=config.max_rows)
    write_summary(summary, out_dir)
    return summary


def predict_config(config: EvalConfig, prompt, greedy: bool = False):
    """How `config` generates, with the prompt settings of the model being scored (its prompt.json); `greedy`:
    plain greedy decoding whatever the config says (the ex_greedy beside a beam or guided score)."""
    from sqlcopilot_core.generate import PredictConfig

    decoding = {} if greedy else {"decoding": config.decoding, "num_beams": config.num_beams,
                                  "constrained": config.constrained, "prefer_nonempty": config.prefer_nonempty,
                                  "retry_beams": config.retry_beams}
    return PredictConfig(prompt, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, **decoding)


def is_greedy(config: EvalConfig) -> bool:
    return config.decoding == "greedy" and not config.constrained


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The MLflow metrics of a scoring summary: ex with its 95% interval, n, ex per hardness level, prediction
    errors by kind."""
    failing = sum(summary["errors"].values())
    return {"ex": summary["ex"], "n": summary["n"], "ex_ci_low": summary["ex_ci"][0], "ex_ci_high": summary["ex_ci"][1],
            "fail_share": failing / summary["n"] if summary["n"] else 0.0,
            **{f"ex_{level}": v["ex"] for level, v in summary["by_hardness"].items() if v["ex"] is not None},
            **{f"errors_{kind}": n for kind, n in summary["errors"].items() if n}}
