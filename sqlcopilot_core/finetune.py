"""Stage finetune: teach a causal LM to write SQL for Spider questions (setup -> loss step -> train -> save).

    python -m sqlcopilot_core.finetune work/smollm2_base ../shared/spider /tmp/ft --set max_steps=20 batch_size=4

Two objectives, chosen by FinetuneConfig.objective:
- sft: cross-entropy on the gold SQL tokens (prompt and padding masked), each example weighted 1;
- exec_guided (the original SQL-Copilot objective): the model first answers each question greedily; answers whose
  execution result equals the gold result add no loss, the others are trained on the gold SQL with their
  cross-entropy weighted by the normalized token edit distance between answer and gold (see exec_guided_weights).

The loop is accelerate-compatible; on several GPUs or machines the same module runs under accelerate:

    accelerate launch --multi_gpu --num_processes 4 -m sqlcopilot_core.finetune BASE SPIDER OUT --set batch_size=8
    accelerate launch --multi_gpu --num_machines 2 --machine_rank R --main_process_ip HOST --num_processes 8 \
        -m sqlcopilot_core.finetune BASE SPIDER OUT
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m sqlcopilot_core.finetune BASE SPIDER OUT   # CPU, gloo

Each process trains on its own slice of every global batch (batch_size per process; gradients are averaged by DDP)
and only the main process writes checkpoints, the model and metrics; the returned statistics count the main
process's share of tokens and loss. A killed run started again with the same checkpoint folder resumes from its
latest checkpoint and stops at the same total step count.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from sqlcopilot_core.config import ConfigError, config_from_dict, parse_key_values
from sqlcopilot_core.generate import greedy_generate_ids
from sqlcopilot_core.modeling import count_parameters, save_model
from sqlcopilot_core.packing import PackedBatch, per_branch_loss
from sqlcopilot_core.prompting import extract_sql, write_prompt_settings
from sqlcopilot_core.spider import Example
from sqlcopilot_core.training import Run, TrainingConfig, setup_run, train, weights_digest

OBJECTIVES = ("sft", "exec_guided")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FinetuneConfig(TrainingConfig):
    """Settings of the finetune stage (the shared training settings, then the objective's own)."""

    objective: str = "sft"
    """'sft' (teacher-forced cross-entropy) or 'exec_guided' (execution-checked, edit-distance weighted)."""
    weight_decay: float = 0.0
    """AdamW weight decay of matrices (norms and biases get none)."""
    lora: bool = False
    """Train low-rank adapters (merged into the weights before saving) instead of every weight."""
    lora_r: int = 16
    """Rank of each LoRA adapter."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."""
    lora_dropout: float = 0.05
    """Dropout on the adapter input during training."""
    lora_targets: tuple[str, ...] = LORA_TARGETS
    """Names of the linear layers that receive adapters."""
    exec_timeout_s: float = 5.0
    """exec_guided: time limit of each gold and predicted query."""
    exec_max_rows: int = 10000
    """exec_guided: row cap of each predicted query."""
    gen_max_new_tokens: int = 128
    """exec_guided: longest greedy answer generated per example."""

    def __post_init__(self):
        super().__post_init__()

        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ConfigError(f"FinetuneConfig.{message}")

        need(self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.lora_r >= 1 and self.lora_alpha > 0, f"lora_r ({self.lora_r}) must be >= 1 and lora_alpha "
                                                       f"({self.lora_alpha}) > 0")
        need(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        need(not self.lora or len(self.lora_targets) > 0, "lora_targets must name at least one layer when lora")
        need(self.exec_timeout_s > 0 and self.exec_max_rows >= 1,
             f"exec_timeout_s ({self.exec_timeout_s}) must be > 0 and exec_max_rows ({self.exec_max_rows}) >= 1")
        need(1 <= self.gen_max_new_tokens < self.max_seq_len,
             f"gen_max_new_tokens ({self.gen_max_new_tokens}) must be >= 1 and below max_seq_len "
             f"({self.max_seq_len})")


# ---- loss ----

def exec_guided_weights(pred_ids: list[list[int]], gold_ids: list[list[int]], matches: list[bool]) -> torch.Tensor:
    """Per-example loss weights in [0, 1]: 0 when the answer's result matched, else its normalized edit distance.

    The distance is Levenshtein over token ids divided by the longer sequence's length, so an answer one token off
    is barely pushed while an unrelated one gets the full gold cross-entropy.
    """
    import Levenshtein

    if not len(pred_ids) == len(gold_ids) == len(matches):
        raise ValueError(f"exec_guided_weights: {len(pred_ids)} predictions, {len(gold_ids)} golds, "
                         f"{len(matches)} match flags")
    weights = [0.0 if match else Levenshtein.distance(pred, gold) / max(len(pred), len(gold), 1)
               for pred, gold, match in zip(pred_ids, gold_ids, matches)]
    return torch.tensor(weights, dtype=torch.float32)


def answer_and_check(model, tokenizer, batch: PackedBatch, config: FinetuneConfig
                     ) -> tuple[list[list[int]], list[bool]]:
    """exec_guided: greedy answers (token ids, end-of-text excluded) and whether each one's result matches gold."""
    from sqlcopilot_core.evaluation import execution_match

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        answers = greedy_generate_ids(model, [e.prompt_ids for e in batch.examples], config.gen_max_new_tokens,
                                      tokenizer.eos_token_id, pad_id)
    finally:
        model.train(was_training)
    matches = [execution_match(e.example.db_path, e.example.query,
                               extract_sql(tokenizer.decode(ids, skip_special_tokens=True)),
                               timeout_s=config.exec_timeout_s, max_rows=config.exec_max_rows).match
               for e, ids in zip(batch.examples, answers)]
    return answers, matches


def weighted_sql_loss(model, batch: PackedBatch, weights: torch.Tensor | None = None,
                      always_forward: bool = False) -> torch.Tensor | None:
    """Mean over the batch's examples of weight x its SQL cross-entropy (sft: every weight 1).

    When every weight is zero the model is not run (None: no loss), unless `always_forward` (several processes
    must all run backward for their gradients to be averaged).
    """
    if weights is not None and not bool(weights.any()) and not always_forward:
        return None
    losses = per_branch_loss(model, batch)
    if weights is None:
        return losses.mean()
    return (weights.to(losses.device) * losses).mean()


def loss_step(run: Run, batch: PackedBatch) -> tuple[torch.Tensor | None, dict[str, float]]:
    """The objective's loss on one micro-batch of packs, and how many examples were skipped as already correct."""
    config, weights, skipped = run.config, None, 0
    with run.autocast():
        if config.objective == "exec_guided":
            answers, matches = answer_and_check(run.unwrapped, run.tokenizer, batch, config)
            weights = exec_guided_weights(answers, [list(e.target_ids[:-1]) for e in batch.examples], matches)
            skipped = sum(matches)
        loss = weighted_sql_loss(run.modules, batch, weights, always_forward=run.accelerator.num_processes > 1)
    return loss, {"skipped_correct": skipped}


# ---- setup and save ----

def add_lora(model, config: FinetuneConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def setup(model, tokenizer, train_examples: list[Example], config: FinetuneConfig, checkpoint_root: Path) -> Run:
    """Model (+ LoRA) and the shared recipe's data, optimizer and state, resumed from the latest checkpoint."""
    torch.manual_seed(config.seed)
    if config.lora:
        model = add_lora(model, config)
    return setup_run(model, tokenizer, train_examples, config, checkpoint_root, {},
                     weight_decay=config.weight_decay, what="finetune")


def save(run: Run, out_dir: Path) -> torch.nn.Module:
    """Write a plain model folder (LoRA adapters merged into the weights) with the prompt settings it learned."""
    model = run.unwrapped
    if run.config.lora:
        model = model.merge_and_unload()
    if run.accelerator.is_main_process:
        save_model(model.eval(), run.tokenizer, out_dir)
        write_prompt_settings(out_dir, run.config.prompt_settings())
    run.accelerator.wait_for_everyone()
    return model


def finetune(model, tokenizer, train_examples: list[Example], config: FinetuneConfig, out_dir: str | Path,
             resume_dir: str | Path | None = None, on_metrics: Callable[[int, dict], None] | None = None) -> dict:
    """Fine-tune `model` on `train_examples` and save it to `out_dir`; returns the run's statistics.

    Checkpoints go to `resume_dir` (default out_dir/checkpoint); when it already holds one, training resumes from
    it. Keep it outside an artifact folder that is renamed into place, so that a killed run can find it again.
    `on_metrics(step, metrics)` receives, every log_every steps and at the end, the means since the previous call
    of loss, grad_norm, skipped_correct (per step), examples_per_s and tokens_per_s, plus lr and epoch.
    `model` is trained in place (with LoRA, the merged model is what is saved).

    Returns steps, planned_steps, examples_seen, epochs, train_tokens, tokens_per_s and examples_per_s (this
    segment), wall_s (all segments), final_loss, skipped_correct, stop_reason ('max_steps' | 'max_minutes'),
    resumed_from_step, train_examples, skipped_too_long, packs_per_epoch, tokens_per_epoch_packed/_unpacked,
    trainable_parameters, parameters, process_index, processes and weights_sha256 (equal on every process of a
    data-parallel run).
    """
    out_dir = Path(out_dir)
    run = setup(model, tokenizer, train_examples, config, Path(resume_dir) if resume_dir else out_dir / "checkpoint")
    stats = train(run, loss_step, on_metrics, desc=f"finetune {config.objective}")
    stats["skipped_correct"] = int(run.state.counters.get("skipped_correct", 0))
    stats["trainable_parameters"] = sum(p.numel() for p in run.unwrapped.parameters() if p.requires_grad)
    saved = save(run, out_dir)
    stats.update(parameters=count_parameters(saved), process_index=run.accelerator.process_index,
                 processes=run.accelerator.num_processes, weights_sha256=weights_digest(saved))
    return stats


def main(argv: list[str] | None = None) -> None:
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.spider import load_split

    parser = argparse.ArgumentParser(description="Fine-tune a model folder on a Spider-format training split.")
    parser.add_argument("model_dir", help="base model folder (modeling.load_model reads it)")
    parser.add_argument("spider_dir", help="Spider-format folder (train_spider.json, database/...)")
    parser.add_argument("out_dir", help="where the fine-tuned model folder is written")
    parser.add_argument("--resume-dir", help="checkpoint folder (default OUT_DIR/checkpoint); resumed if present")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="FinetuneConfig overrides, values read as YAML (e.g. objective=exec_guided lora=true)")
    args = parser.parse_args(argv)
    config = config_from_dict(FinetuneConfig, parse_key_values(args.set))
    model, tokenizer = load_model(args.model_dir)
    stats = finetune(model, tokenizer, load_split(args.spider_dir, "train"), config, args.out_dir, args.resume_dir,
                     on_metrics=lambda step, metrics: print(f"step {step}: {metrics}"))
    print(json.dumps({k: v for k, v in stats.items() if isinstance(v, (int, float, str)) or v is None}))


if __name__ == "__main__":
    main()
