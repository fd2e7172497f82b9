"""Training throughput of the finetune stage on a Spider-format train split: examples/s and tokens/s of a short run.

    python scripts/benchmark_training.py --model work/smollm2_base --spider ../shared/spider --steps 12 \
        --set batch_size=4 grad_accum_steps=2 bf16_autocast=true

Uses only `sqlcopilot_core.finetune.finetune(model, tokenizer, examples, config, out_dir)` and the statistics it
returns (examples_seen, train_tokens, wall_s), so the same script measures any version of the stage (check out an
older commit beside it and point PYTHONPATH at it). The first step is a warm-up and is not timed; the figures are
for the steps after it, measured by the stage's own counters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--spider", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from sqlcopilot_core.config import config_from_dict, parse_key_values
    from sqlcopilot_core.finetune import FinetuneConfig, finetune
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.spider import load_split

    examples = load_split(args.spider, "train")
    settings = {"warmup_steps": 0, "checkpoint_every": 0, "log_every": 1000, **parse_key_values(args.set)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, steps in (("warmup", 1), ("timed", args.steps + 1)):
            model, tokenizer = load_model(args.model)
            config = config_from_dict(FinetuneConfig, {**settings, "max_steps": steps})
            started = time.perf_counter()
            stats = finetune(model, tokenizer, examples, config, f"{tmp}/{label}", resume_dir=f"{tmp}/{label}-ck")
            results[label] = {**{k: stats[k] for k in ("steps", "examples_seen", "train_tokens", "wall_s")},
                              "elapsed_s": time.perf_counter() - started}
    warm, timed = results["warmup"], results["timed"]
    seconds = timed["wall_s"] - warm["wall_s"]
    examples_n = timed["examples_seen"] - warm["examples_seen"]
    tokens_n = timed["train_tokens"] - warm["train_tokens"]
    print(json.dumps({"examples_per_s": round(examples_n / seconds, 3), "tokens_per_s": round(tokens_n / seconds, 1),
                      "timed_steps": args.steps, "examples": examples_n, "tokens": tokens_n,
                      "seconds": round(seconds, 1), "settings": settings, "torch_threads": torch.get_num_threads(),
                      "cpus": os.cpu_count(), "machine": platform.machine(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=2))


if __name__ == "__main__":
    main()
