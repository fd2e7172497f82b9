"""Stage evaluate: the one scorer of every model (execution accuracy on the eval split, parameters, size of the
weight files, greedy decode tokens/s), through Python (transformers) or through the C++ runner; and the gold check.

Both runtimes are measured the same way: `speed_tokens` tokens decoded greedily at batch 1 after the first eval
example's prompt, end-of-text not stopping them, prefill excluded: (tokens - 1) / decode seconds.

    python -m pytest tests/core/test_evaluate.py -q
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sqlcopilot_core.config import config_from_dict, config_to_dict
from sqlcopilot_core.prompting import Prompter, model_prompt_settings
from sqlcopilot_core.scoring import (EvalConfig, eval_examples, folder_size_mb, is_greedy, predict_config,
                                     score_predictions_to, summary_metrics)

NAME = "evaluate"


def eval_config(settings: dict[str, Any]) -> EvalConfig:
    return config_from_dict(EvalConfig, settings, NAME)


def keyed_settings(config: EvalConfig) -> dict[str, Any]:
    """The settings a score's key holds: all but the folder, which `reads` stands for by content."""
    return {k: v for k, v in config_to_dict(config).items() if k != "spider_dir"}


def reads(config: EvalConfig) -> dict[str, Any]:
    return {config.split: eval_examples(config)}


class PythonRuntime:
    """A model folder run with transformers."""

    def __init__(self, model_dir: Path):
        from sqlcopilot_core.modeling import count_parameters, load_model

        self.model, self.tokenizer = load_model(model_dir)
        self.weights_dir, self.params = Path(model_dir), count_parameters(self.model)
        self.prompt = model_prompt_settings(model_dir)

    def predict(self, examples, config: EvalConfig, greedy: bool = False) -> list[str]:
        from sqlcopilot_core.generate import predict_examples

        return predict_examples(self.model, self.tokenizer, examples, predict_config(config, self.prompt, greedy))

    def decode_tokens_per_s(self, prompt_ids: list[int], n_tokens: int) -> float:
        from sqlcopilot_core.generate import decode_tokens_per_s

        return decode_tokens_per_s(self.model, self.tokenizer, prompt_ids, n_tokens)


class CppRuntime:
    """An export folder run by a build folder's sqlcopilot-runner."""

    def __init__(self, build_dir: Path, export):
        from transformers import AutoTokenizer

        from sqlcopilot_core.build import RUNNER_NAME
        from sqlcopilot_core.copilot import EXPORT_SUBDIR, Runtime

        self.runtime = Runtime(export.path / EXPORT_SUBDIR, Path(build_dir) / "bin" / RUNNER_NAME)
        self.tokenizer = AutoTokenizer.from_pretrained(self.runtime.export_dir)
        self.weights_dir, self.params = self.runtime.export_dir, export.metrics.get("params", 0)
        self.prompt = model_prompt_settings(self.runtime.export_dir)

    def predict(self, examples, config: EvalConfig, greedy: bool = False) -> list[str]:
        from sqlcopilot_core.copilot import predict_and_time

        return predict_and_time(self.runtime, examples, config, greedy=greedy)[0]

    def decode_tokens_per_s(self, ids: list[int], n_tokens: int) -> float:
        from sqlcopilot_core.cpp_runtime import CppRunner

        with CppRunner(self.runtime.runner, self.runtime.export_dir) as runner:
            runner.generate([ids], 2, stop_at_eos=False)  # warm-up
            (_, timing), = runner.generate([ids], n_tokens, stop_at_eos=False)
        return (timing["new_tokens"] - 1) / max(timing["decode_ms"] / 1000, 1e-9)


def score(model_dir: Path, out_dir: Path, config: EvalConfig, export=None) -> dict[str, Any]:
    """The standard metrics of a model folder (or, given its `export` artifact, of a build folder's C++ runner):
    ex and the summary metrics, params, size_mb, tokens_per_s; predictions.jsonl and summary.json under out_dir."""
    runtime = CppRuntime(model_dir, export) if export is not None else PythonRuntime(model_dir)
    examples = eval_examples(config)
    summary = score_predictions_to(out_dir, examples, runtime.predict(examples, config), config)
    extra = {}
    if not is_greedy(config):  # the configured decoding's gain over greedy, on the same examples
        greedy = score_predictions_to(out_dir / "greedy", examples, runtime.predict(examples, config, greedy=True),
                                      config)
        extra = {"ex_greedy": greedy["ex"], "fail_share_greedy": summary_metrics(greedy)["fail_share"]}
    speed_prompt = Prompter(runtime.prompt, runtime.tokenizer).ids(examples[0].db_path, examples[0].question)
    return {**summary_metrics(summary), **extra, "params": runtime.params,
            "size_mb": round(folder_size_mb(runtime.weights_dir), 3),
            "tokens_per_s": round(runtime.decode_tokens_per_s(speed_prompt, config.speed_tokens), 2)}


def upstream_export(build):
    """The export artifact a build artifact was made from (it sits beside it in the same store)."""
    from sqlcopilot_core.artifacts import load_artifact

    return load_artifact(build.path.parents[1] / "export" / build.manifest["upstream"]["export"])


def score_artifact(artifact, out_dir: Path, config: EvalConfig) -> dict[str, Any]:
    """Score a committed model artifact the way its stage scored it: a build through its C++ runner."""
    export = upstream_export(artifact) if artifact.stage == "build" else None
    return score(artifact.path, out_dir, config, export)


def gold_check(config: EvalConfig) -> dict[str, Any]:
    """The eval split's gold SQL scored against itself: every database present, every gold query runs (ex == 1)."""
    examples = eval_examples(config)
    with tempfile.TemporaryDirectory() as out:
        summary = score_predictions_to(Path(out), examples, [e.query for e in examples], config)
    return {"ex": summary["ex"], "n": summary["n"], "gold_errors": summary["gold_errors"]}
