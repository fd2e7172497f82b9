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
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sqlcopilot_core.config import parse_key_values, ConfigError, config_from_dict, config_to_dict
from sqlcopilot_core.generate import PromptMaker, greedy_generate_ids, left_pad
from sqlcopilot_core.modeling import count_parameters, save_model
from sqlcopilot_core.prompting import extract_sql
from sqlcopilot_core.spider import Example
from sqlcopilot_core.training import (MetricsWindow, TrainBudget, TrainState, adamw, example_stream,
                                      latest_checkpoint, load_checkpoint, read_checkpoint_state, save_checkpoint,
                                      warmup_linear_decay)

OBJECTIVES = ("sft", "exec_guided")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The prompt's question and answer cue sit at its end; a target leaving fewer prompt tokens than this is skipped.
MIN_PROMPT_TOKENS = 32
# Config fields a resumed run may change: they bound or report the run but do not alter its trajectory so far.
RESUMABLE_CHANGES = {"max_steps", "max_minutes", "checkpoint_every", "log_every"}


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of the finetune stage."""

    objective: str = "sft"
    """'sft' (teacher-forced cross-entropy) or 'exec_guided' (execution-checked, edit-distance weighted)."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate, reached after warmup_steps and decayed linearly to 0 at max_steps."""
    weight_decay: float = 0.0
    """AdamW weight decay of matrices (norms and biases get none)."""
    warmup_steps: int = 10
    """Optimizer steps of linear learning-rate warmup."""
    max_steps: int = 100
    """Optimizer steps in total (a resumed run continues up to this count)."""
    max_minutes: float | None = None
    """Wall-clock training budget over all resumed segments; the run stops (and saves) when it is spent."""
    batch_size: int = 4
    """Examples per micro-batch (per process under accelerate)."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step."""
    max_seq_len: int = 512
    """Longest training sequence in tokens; prompts are cut from the left so the SQL target always fits."""
    train_limit: int | None = None
    """Train on a fixed random subset of this many examples (chosen by seed; None = all)."""
    seed: int = 0
    """Seed of the subset, the data order and the random-number generators."""
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
    bf16_autocast: bool = False
    """Run forward passes under bfloat16 autocast (weights and optimizer stay float32)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm before each optimizer step."""
    checkpoint_every: int = 50
    """Write a resumable checkpoint every this many steps (0 = only at the end); one is always written at the end."""
    values_per_column: int = 0
    """Sample values per column in the schema prompt (same meaning as at prediction time)."""
    max_schema_tokens: int | None = 400
    """Schema budget of the prompt in tokens (None = no limit beyond max_seq_len)."""
    exec_timeout_s: float = 5.0
    """exec_guided: time limit of each gold and predicted query."""
    exec_max_rows: int = 10000
    """exec_guided: row cap of each predicted query."""
    gen_max_new_tokens: int = 128
    """exec_guided: longest greedy answer generated per example."""
    log_every: int = 10
    """Report metrics (loss, lr, tokens/s, skipped_correct) every this many steps."""

    def __post_init__(self):
        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ConfigError(f"FinetuneConfig.{message}")

        need(self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        need(0 <= self.warmup_steps < self.max_steps,
             f"warmup_steps ({self.warmup_steps}) must be >= 0 and below max_steps ({self.max_steps})")
        need(self.max_minutes is None or (is_number(self.max_minutes) and self.max_minutes > 0),
             f"max_minutes must be a number > 0 or null, got {self.max_minutes!r}")
        need(self.batch_size >= 1 and self.grad_accum_steps >= 1,
             f"batch_size ({self.batch_size}) and grad_accum_steps ({self.grad_accum_steps}) must be >= 1")
        need(self.max_seq_len > 2 * MIN_PROMPT_TOKENS, f"max_seq_len must be > {2 * MIN_PROMPT_TOKENS}, "
                                                       f"got {self.max_seq_len}")
        need(self.max_schema_tokens is None or (is_number(self.max_schema_tokens)
                                                and 1 <= self.max_schema_tokens < self.max_seq_len),
             f"max_schema_tokens ({self.max_schema_tokens}) must be >= 1 and below max_seq_len ({self.max_seq_len})")
        need(self.train_limit is None or (is_number(self.train_limit) and self.train_limit >= 1),
             f"train_limit must be >= 1 or null, got {self.train_limit!r}")
        need(self.lora_r >= 1 and self.lora_alpha > 0, f"lora_r ({self.lora_r}) must be >= 1 and lora_alpha "
                                                       f"({self.lora_alpha}) > 0")
        need(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        need(not self.lora or len(self.lora_targets) > 0, "lora_targets must name at least one layer when lora")
        need(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        need(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        need(self.values_per_column >= 0, f"values_per_column must be >= 0, got {self.values_per_column}")
        need(self.exec_timeout_s > 0 and self.exec_max_rows >= 1,
             f"exec_timeout_s ({self.exec_timeout_s}) must be > 0 and exec_max_rows ({self.exec_max_rows}) >= 1")
        need(1 <= self.gen_max_new_tokens < self.max_seq_len,
             f"gen_max_new_tokens ({self.gen_max_new_tokens}) must be >= 1 and below max_seq_len "
             f"({self.max_seq_len})")
        need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- data: (prompt, gold SQL + eos) -> token ids and labels ----

@dataclass(frozen=True)
class EncodedExample:
    """Prompt tokens (cut from the left to fit) and target tokens (gold SQL then end-of-text)."""

    example: Example
    prompt_ids: list[int]
    target_ids: list[int]


@dataclass
class Batch:
    """Left-padded sequences: every row's target ends at the last column, so the last `keep` logits cover them."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    """-100 on prompt and padding: the loss sees the SQL tokens only."""
    keep: int
    encoded: list[EncodedExample] = field(repr=False)

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                     self.labels.to(device), self.keep, self.encoded)


def target_ids(tokenizer, sql: str) -> list[int]:
    """The gold SQL as the model should write it (whitespace collapsed, as extract_sql returns it) + end-of-text."""
    return tokenizer(" ".join(sql.split()), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


class TrainingData:
    """Training examples encoded on first use (a short run touches few of them) and cached."""

    def __init__(self, examples: list[Example], tokenizer, config: FinetuneConfig):
        self.tokenizer, self.max_seq_len = tokenizer, config.max_seq_len
        self.make_prompt = PromptMaker(config.values_per_column, config.max_schema_tokens, tokenizer)
        self.examples, self.too_long = [], []
        for example in examples:
            fits = len(target_ids(tokenizer, example.query)) <= config.max_seq_len - MIN_PROMPT_TOKENS
            (self.examples if fits else self.too_long).append(example)
        if not self.examples:
            raise ValueError(f"no training example has a gold query short enough for max_seq_len "
                             f"{config.max_seq_len} ({len(self.too_long)} too long)")
        if self.too_long:
            warnings.warn(f"finetune: skipped {len(self.too_long)} training example(s) whose gold SQL does not fit "
                          f"max_seq_len {config.max_seq_len} (first: index {self.too_long[0].index})", stacklevel=2)
        self.cache: dict[int, EncodedExample] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def encode(self, position: int) -> EncodedExample:
        if position not in self.cache:
            example = self.examples[position]
            target = target_ids(self.tokenizer, example.query)
            prompt = self.tokenizer(self.make_prompt(example)).input_ids
            self.cache[position] = EncodedExample(example, prompt[-(self.max_seq_len - len(target)):], target)
        return self.cache[position]


def collate(encoded: list[EncodedExample], pad_id: int) -> Batch:
    """Left-pad prompt + target rows; labels copy the target tokens and mask everything else with -100."""
    ids, mask, positions = left_pad([e.prompt_ids + e.target_ids for e in encoded], pad_id)
    labels = torch.full_like(ids, -100)
    for row, e in enumerate(encoded):
        labels[row, ids.shape[1] - len(e.target_ids):] = torch.tensor(e.target_ids)
    return Batch(ids, mask, positions, labels, max(len(e.target_ids) for e in encoded) + 1, encoded)


def select_examples(examples: list[Example], config: FinetuneConfig) -> list[Example]:
    """All examples, or a subset of train_limit fixed by the seed (kept in file order)."""
    if config.train_limit is None or config.train_limit >= len(examples):
        return list(examples)
    chosen = sorted(random.Random(config.seed).sample(range(len(examples)), config.train_limit))
    return [examples[i] for i in chosen]


# ---- loss ----

def per_example_loss(model, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over each row's target tokens, shape (batch,), computed in float32."""
    # Logits only where targets are: a Spider prompt is ~10x longer than its SQL, and the vocabulary is large.
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                   logits_to_keep=batch.keep).logits[:, :-1].float()
    labels = batch.labels[:, -(batch.keep - 1):]
    token_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return token_loss.sum(1) / (labels != -100).sum(1).clamp(min=1)


def weighted_sql_loss(model, batch: Batch, weights: torch.Tensor | None = None, always_forward: bool = False):
    """Mean over the batch of weight x per-example loss (sft: every weight 1).

    When every weight is zero the model is not run and the loss is a constant 0 without gradient, unless
    `always_forward` (several processes must all run backward for their gradients to be averaged).
    """
    if weights is not None and not bool(weights.any()) and not always_forward:
        return torch.zeros((), device=batch.input_ids.device)
    losses = per_example_loss(model, batch)
    if weights is None:
        return losses.mean()
    return (weights.to(losses.device) * losses).mean()


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


def answer_and_check(model, tokenizer, batch: Batch, config: FinetuneConfig) -> tuple[list[list[int]], list[bool]]:
    """exec_guided: greedy answers (token ids, end-of-text excluded) and whether each one's result matches gold."""
    from sqlcopilot_core.evaluation import execution_match

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        answers = greedy_generate_ids(model, [e.prompt_ids for e in batch.encoded], config.gen_max_new_tokens,
                                      tokenizer.eos_token_id, pad_id)
    finally:
        model.train(was_training)
    matches = [execution_match(e.example.db_path, e.example.query,
                               extract_sql(tokenizer.decode(ids, skip_special_tokens=True)),
                               timeout_s=config.exec_timeout_s, max_rows=config.exec_max_rows).match
               for e, ids in zip(batch.encoded, answers)]
    return answers, matches


# ---- the run ----

@dataclass
class FinetuneRun:
    """What setup() builds and the loop advances."""

    config: FinetuneConfig
    tokenizer: Any
    accelerator: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: TrainingData
    state: TrainState
    checkpoint_root: Path
    resumed_from_step: int = 0

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def autocast(self):
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16, enabled=self.config.bf16_autocast)


def add_lora(model, config: FinetuneConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def recorded_config(config: FinetuneConfig, data: TrainingData) -> dict[str, Any]:
    return {**config_to_dict(config), "train_examples": len(data)}


def check_resumable(checkpoint: Path, expected: dict[str, Any]) -> None:
    """Refuse a checkpoint made with settings that would change the trajectory (it would not be the same run)."""
    _, recorded = read_checkpoint_state(checkpoint)
    differ = sorted(k for k in set(recorded) | set(expected)
                    if k not in RESUMABLE_CHANGES and recorded.get(k) != expected.get(k))
    if differ:
        details = ", ".join(f"{k}: {recorded.get(k)!r} -> {expected.get(k)!r}" for k in differ)
        raise ValueError(f"checkpoint {checkpoint} was made with other settings ({details}); use another checkpoint "
                         f"folder or delete it to start over")


def setup(model, tokenizer, train_examples: list[Example], config: FinetuneConfig, checkpoint_root: Path):
    """Model (+ LoRA), AdamW, schedule, data and state, resumed from the latest checkpoint under checkpoint_root."""
    from accelerate import Accelerator

    accelerator = Accelerator()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    data = TrainingData(select_examples(train_examples, config), tokenizer, config)
    if config.lora:
        model = add_lora(model, config)
    model.train()
    optimizer = adamw(model, config.learning_rate, config.weight_decay)
    scheduler = warmup_linear_decay(optimizer, config.warmup_steps, config.max_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    run = FinetuneRun(config, tokenizer, accelerator, model, optimizer, scheduler, data, TrainState(),
                      Path(checkpoint_root))
    checkpoint = latest_checkpoint(checkpoint_root)
    if checkpoint is not None:
        check_resumable(checkpoint, recorded_config(config, data))
        run.state = load_checkpoint(checkpoint, run.unwrapped, optimizer, scheduler)
        run.resumed_from_step = run.state.step
    return run


def next_micro_batch(run: FinetuneRun, stream) -> Batch:
    """This process's slice of the next global batch (batch_size examples from each process's share)."""
    size, rank = run.config.batch_size, run.accelerator.process_index
    global_batch = [next(stream) for _ in range(size * run.accelerator.num_processes)]
    run.state.examples_seen += len(global_batch)
    pad_id = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else run.tokenizer.eos_token_id
    return collate([run.data.encode(i) for i in global_batch[rank * size:(rank + 1) * size]], pad_id)


def loss_step(run: FinetuneRun, batch: Batch) -> tuple[torch.Tensor, int]:
    """The objective's loss on one micro-batch, and how many of its examples were skipped as already correct."""
    batch = batch.to(run.accelerator.device)
    weights, skipped = None, 0
    with run.autocast():
        if run.config.objective == "exec_guided":
            answers, matches = answer_and_check(run.unwrapped, run.tokenizer, batch, run.config)
            weights = exec_guided_weights(answers, [e.target_ids[:-1] for e in batch.encoded], matches)
            skipped = sum(matches)
        loss = weighted_sql_loss(run.model, batch, weights, always_forward=run.accelerator.num_processes > 1)
    return loss, skipped


def train_step(run: FinetuneRun, stream) -> dict[str, float]:
    """One optimizer step over grad_accum_steps micro-batches; returns its loss, lr, grad norm, tokens and skips."""
    loss_sum, tokens, skipped = 0.0, 0, 0
    for _ in range(run.config.grad_accum_steps):
        batch = next_micro_batch(run, stream)
        loss, batch_skipped = loss_step(run, batch)
        if loss.requires_grad:
            run.accelerator.backward(loss / run.config.grad_accum_steps)
        loss_sum += float(loss.detach())
        tokens += int(batch.attention_mask.sum())
        skipped += batch_skipped
    grad_norm = run.accelerator.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_sum / run.config.grad_accum_steps, "lr": lr, "grad_norm": float(grad_norm),
            "tokens": tokens, "skipped_correct": skipped}


def write_checkpoint(run: FinetuneRun) -> None:
    if run.accelerator.is_main_process:
        save_checkpoint(run.checkpoint_root, run.unwrapped, run.optimizer, run.scheduler, run.state,
                        recorded_config(run.config, run.data))
    run.accelerator.wait_for_everyone()


def train(run: FinetuneRun, on_metrics: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Step until max_steps or the wall-clock budget, checkpointing every checkpoint_every steps and at the end."""
    config, state = run.config, run.state
    budget = TrainBudget(config.max_steps, config.max_minutes, spent_s=state.wall_s)
    stream = example_stream(len(run.data), config.seed, start=state.examples_seen)
    window, segment, last = MetricsWindow(), MetricsWindow(), {}
    with tqdm(total=config.max_steps, initial=state.step, desc=f"finetune {config.objective}", unit="step",
              disable=not run.accelerator.is_local_main_process) as bar:
        while (stop_reason := budget.stop_reason(state.step)) is None:
            last = train_step(run, stream)
            state.step += 1
            state.train_tokens += last["tokens"]
            state.counters["skipped_correct"] = state.counters.get("skipped_correct", 0) + last["skipped_correct"]
            state.wall_s = budget.elapsed_s
            window.add(last["tokens"], loss=last["loss"], grad_norm=last["grad_norm"],
                       skipped_correct=last["skipped_correct"])
            segment.add(last["tokens"])
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.3f}", lr=f"{last['lr']:.2e}")
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                write_checkpoint(run)
            if state.step % config.log_every == 0:
                report(run, window, last["lr"], on_metrics)
    if window.steps:
        report(run, window, last["lr"], on_metrics)
    if last and (not config.checkpoint_every or state.step % config.checkpoint_every):
        write_checkpoint(run)
    return {"steps": state.step, "examples_seen": state.examples_seen,
            "epochs": state.examples_seen / len(run.data), "train_tokens": state.train_tokens,
            "tokens_per_s": segment.pop()["tokens_per_s"], "wall_s": state.wall_s,
            "final_loss": last.get("loss"), "skipped_correct": int(state.counters.get("skipped_correct", 0)),
            "stop_reason": stop_reason, "resumed_from_step": run.resumed_from_step,
            "train_examples": len(run.data), "skipped_too_long": len(run.data.too_long),
            "trainable_parameters": sum(p.numel() for p in run.unwrapped.parameters() if p.requires_grad)}


def report(run: FinetuneRun, window: MetricsWindow, lr: float, on_metrics) -> None:
    """Send the window's means (loss, grad_norm, skipped_correct per step, tokens_per_s) and totals to on_metrics."""
    metrics = {**window.pop(), "lr": lr, "skipped_correct_total": run.state.counters.get("skipped_correct", 0),
               "epoch": run.state.examples_seen / len(run.data)}
    if on_metrics is not None and run.accelerator.is_main_process:
        on_metrics(run.state.step, metrics)


def save(run: FinetuneRun, out_dir: Path) -> torch.nn.Module:
    """Write a plain model folder (LoRA adapters merged into the weights) that modeling.load_model reads."""
    model = run.unwrapped
    if run.config.lora:
        model = model.merge_and_unload()
    if run.accelerator.is_main_process:
        save_model(model.eval(), run.tokenizer, out_dir)
    run.accelerator.wait_for_everyone()
    return model


def finetune(model, tokenizer, train_examples: list[Example], config: FinetuneConfig, out_dir: str | Path,
             resume_dir: str | Path | None = None, on_metrics: Callable[[int, dict], None] | None = None) -> dict:
    """Fine-tune `model` on `train_examples` and save it to `out_dir`; returns the run's statistics.

    Checkpoints go to `resume_dir` (default out_dir/checkpoint); when it already holds one, training resumes from
    it. Keep it outside an artifact folder that is renamed into place, so that a killed run can find it again.
    `on_metrics(step, metrics)` receives, every log_every steps and at the end, the means since the previous call
    of loss, grad_norm, skipped_correct (per step) and tokens_per_s, plus lr, skipped_correct_total and epoch.
    `model` is trained in place (with LoRA, the merged model is what is saved).

    Returns steps, examples_seen, epochs (fraction of the training set covered), train_tokens, tokens_per_s (this
    segment), wall_s (all segments), final_loss, skipped_correct, stop_reason ('max_steps' | 'max_minutes'),
    resumed_from_step, train_examples, skipped_too_long, trainable_parameters and parameters.
    """
    out_dir = Path(out_dir)
    run = setup(model, tokenizer, train_examples, config, Path(resume_dir) if resume_dir else out_dir / "checkpoint")
    stats = train(run, on_metrics)
    stats["parameters"] = count_parameters(save(run, out_dir))
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
    print(stats)


if __name__ == "__main__":
    main()
