"""Forward + backward of the finetune stage's packs under other execution modes: what a training token could cost.

    python scripts/profile_training_step.py --model work/smollm2_base --spider ../shared/spider \
        --modes autocast,bf16,sparse,compile --packs 8

Takes `--packs` packs evenly spaced over epoch 0 of the cpu profile's packing (compact prompt, 400 schema tokens,
3 value hints, 1,024 tokens a pack), and for each mode runs them twice (the first pass warms up; the second is
the figure) through `per_branch_loss` + backward, with the weights reset between modes. Modes:
  autocast  what the stage does (float32 weights, bfloat16 autocast)
  bf16      every weight in bfloat16, no autocast (the ceiling of keeping a bfloat16 copy of the weights)
  sparse    autocast, the embedding's gradient sparse (it is tied to the output layer)
  compile   autocast under torch.compile(dynamic=True) (the first pass includes compilation)
Prints seconds and tokens/s a pass. `--profile` prints torch.profiler's table of the autocast mode instead.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--spider", required=True)
    parser.add_argument("--modes", default="autocast,bf16")
    parser.add_argument("--packs", type=int, default=8)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from sqlcopilot_core.config import config_from_dict
    from sqlcopilot_core.finetune import FinetuneConfig
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.packing import PackedData, collate_packs, per_branch_loss
    from sqlcopilot_core.prompting import Prompter
    from sqlcopilot_core.spider import load_split

    config = config_from_dict(FinetuneConfig, {"max_seq_len": 1024, "prompt_form": "compact",
                                               "max_schema_tokens": 400, "value_hints": 3})
    model, tokenizer = load_model(args.model)
    data = PackedData(load_split(args.spider, "train"), tokenizer, Prompter(config.prompt_settings(), tokenizer),
                      config.max_seq_len, 0, progress=False)
    packs = data.epoch_packs(0)
    chosen = [packs[i * len(packs) // args.packs] for i in range(args.packs)]
    tokens = sum(len(p) for p in chosen)
    print(f"{len(chosen)} packs of {len(packs)}: {tokens} tokens, {sum(len(p.branches) for p in chosen)} examples")
    batches = [collate_packs([p], tokenizer.eos_token_id) for p in chosen]
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def run_pass(module, autocast: bool) -> float:
        started = time.perf_counter()
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = per_branch_loss(module, batch).mean()
            loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        run_pass(model, True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_pass(model, True)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        return
    for mode in args.modes.split(","):
        model.float().load_state_dict(initial)
        model.model.embed_tokens.sparse = mode == "sparse"
        module = model
        if mode == "bf16":
            module = model.to(torch.bfloat16)
        elif mode == "compile":
            module = torch.compile(model, dynamic=True)
        for attempt in ("first", "second"):
            seconds = run_pass(module, autocast=mode != "bf16")
            print(f"{mode:9s} {attempt} pass {seconds:6.1f} s  {tokens / seconds:6.0f} tokens/s", flush=True)
        model.model.embed_tokens.sparse = False


if __name__ == "__main__":
    main()
