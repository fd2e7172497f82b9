"""The training recipe finetune and distill share: settings, packed data, budget, loop, resume, metrics.

    python -m sqlcopilot_core.training work/artifacts/finetune-checkpoints   # describe the latest checkpoint

A stage is its config (a TrainingConfig subclass), its setup (what is trained) and its loss: `setup_run` builds
the packed data (sqlcopilot_core/packing.py), AdamW, the warmup + linear-decay schedule over the run's steps and
resumes from the latest checkpoint; `train` steps until the budget (epochs, steps or minutes) is spent, calling
the stage's `loss_step(run, batch) -> (loss, values)` on each micro-batch of packs.

A checkpoint is a folder `step-<N>/` under a run's checkpoint root, holding the trainable weights
(trainable.safetensors), optimizer + scheduler + random-number state (trainer_state.pt, read back with
weights_only=True) and state.json (step, data position, counters, the config that made it). It is written to a
temporary folder and renamed, so a run killed at any moment leaves the previous checkpoint intact; older ones are
deleted only after the new one is in place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

CHECKPOINT_PREFIX = "step-"


@dataclass
class TrainState:
    """Everything besides weights and optimizer that a resumed run needs to continue exactly where it stopped."""

    step: int = 0
    examples_seen: int = 0
    """Examples trained on so far (over all processes)."""
    packs_seen: int = 0
    """Position in the (epoch-shuffled) stream of packs: the data order resumes from here."""
    train_tokens: int = 0
    wall_s: float = 0.0
    """Training time spent so far, over every resumed segment; counts against the wall-clock budget."""
    counters: dict[str, float] = field(default_factory=dict)
    """Stage-specific running totals (e.g. finetune's skipped_correct)."""


class TrainBudget:
    """Stop at `max_steps` optimizer steps or after `max_minutes` of training, whichever comes first."""

    def __init__(self, max_steps: int, max_minutes: float | None, spent_s: float = 0.0):
        self.max_steps, self.max_minutes, self.spent_s = max_steps, max_minutes, spent_s
        self.started = time.monotonic()

    @property
    def elapsed_s(self) -> float:
        """Training time including earlier segments of a resumed run."""
        return self.spent_s + time.monotonic() - self.started

    def stop_reason(self, step: int) -> str | None:
        if step >= self.max_steps:
            return "max_steps"
        if self.max_minutes is not None and self.elapsed_s >= self.max_minutes * 60:
            return "max_minutes"
        return None


class MetricsWindow:
    """Per-step metrics averaged over the steps since the last report, plus token throughput over that time."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps, self.tokens, self.started = 0, 0, time.monotonic()

    def add(self, tokens: int, **values: float) -> None:
        self.steps += 1
        self.tokens += tokens
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)

    def pop(self) -> dict[str, float]:
        """Means of every added value and tokens_per_s since the last pop (or creation); then start afresh."""
        seconds = time.monotonic() - self.started
        means = {name: total / max(1, self.steps) for name, total in self.sums.items()}
        means["tokens_per_s"] = self.tokens / seconds if seconds > 0 else 0.0
        self.reset()
        return means


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n_examples) fixed by (seed, epoch): every epoch is shuffled differently."""
    order = list(range(n_examples))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def example_stream(n_examples: int, seed: int, start: int = 0) -> Iterator[int]:
    """Example indices epoch after epoch from stream position `start`, so a resumed run sees the same order."""
    if n_examples < 1:
        raise ValueError("example_stream: no training examples")
    epoch, offset = divmod(start, n_examples)
    while True:
        yield from epoch_order(n_examples, seed, epoch)[offset:]
        epoch, offset = epoch + 1, 0


def warmup_linear_decay(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Learning rate rising linearly over `warmup_steps`, then falling linearly to zero at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def adamw(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over trainable parameters; norms, biases and other 1-d weights get no weight decay (as in nanoGPT)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("adamw: the model has no trainable parameters")
    groups = [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (a tied embedding appears once), detached and contiguous."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's name and bytes: equal on every process of a data-parallel run after each step."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: str | Path, model: torch.nn.Module, optimizer, scheduler, state: TrainState,
                    config: dict[str, Any], keep: int = 1) -> Path:
    """Write checkpoint `root/step-<N>` atomically (temporary folder + rename), then keep only the newest `keep`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{CHECKPOINT_PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
               tmp / "trainer_state.pt")
    (tmp / "state.json").write_text(json.dumps({"state": asdict(state), "config": config}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (temporary folders of an interrupted write are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def latest_checkpoint(root: str | Path) -> Path | None:
    found = checkpoints(root)
    return found[-1] if found else None


def read_checkpoint_state(path: Path) -> tuple[TrainState, dict[str, Any]]:
    """(TrainState, config dict) recorded in checkpoint `path`."""
    data = json.loads((Path(path) / "state.json").read_text())
    return TrainState(**data["state"]), data["config"]


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer, scheduler) -> TrainState:
    """Restore weights, optimizer, scheduler and random-number state from `path`; returns its TrainState."""
    path = Path(path)
    missing = [n for n in ("trainable.safetensors", "trainer_state.pt", "state.json") if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {path} lacks {missing}; delete the folder to resume from an older one")
    weights = load_file(path / "trainable.safetensors")
    expected = set(trainable_state(model))
    if set(weights) != expected:
        raise ValueError(f"checkpoint {path} does not fit the model: missing {sorted(expected - set(weights))[:5]}, "
                         f"unexpected {sorted(set(weights) - expected)[:5]}")
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            parameters[name].copy_(tensor)
    trainer = torch.load(path / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    set_rng_state(trainer["rng"])
    return read_checkpoint_state(path)[0]


def describe(root: str | Path) -> str:
    latest = latest_checkpoint(root)
    if latest is None:
        return f"{root}: no checkpoint"
    state, config = read_checkpoint_state(latest)
    return (f"{latest}: step {state.step}, {state.examples_seen} examples, {state.train_tokens} tokens, "
            f"{state.wall_s:.0f} s, counters {state.counters}, {len(config)} config keys")


if __name__ == "__main__":
    print(describe(sys.argv[1] if len(sys.argv) > 1 else "."))


# ---- the shared recipe ----

@dataclass(frozen=True)
class TrainingConfig:
    """Settings every training stage shares: prompt, data, budget, optimizer, checkpoints. Stages add their loss's."""

    learning_rate: float = 1e-4
    """Peak AdamW learning rate, reached after warmup_steps and decayed linearly to 0 at the run's last step."""
    warmup_steps: int = 10
    """Optimizer steps of linear learning-rate warmup."""
    epochs: float | None = None
    """Passes over the training set; when set, the run's step count is what they take (max_steps still caps it)."""
    max_steps: int = 100
    """Optimizer steps in total (a resumed run continues up to this count)."""
    max_minutes: float | None = None
    """Wall-clock training budget over all resumed segments; the run stops (and saves) when it is spent."""
    batch_size: int = 2
    """Packs per micro-batch (per process under accelerate); a pack is one schema and the questions sharing it."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step."""
    max_seq_len: int = 1024
    """Longest pack in tokens (schema + branches); an example that does not fit with its schema is skipped."""
    train_limit: int | None = None
    """Train on a fixed random subset of this many examples (chosen by seed; None = all)."""
    seed: int = 0
    """Seed of the subset, the data order and the random-number generators."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm before each optimizer step."""
    bf16_autocast: bool = False
    """Run forward passes under bfloat16 autocast (weights and optimizer stay float32)."""
    checkpoint_every: int = 50
    """Write a resumable checkpoint every this many steps (0 = only at the end); one is always written at the end."""
    log_every: int = 10
    """Report metrics every this many steps."""
    prompt_form: str = "compact"
    """Schema text: 'compact' (table(col, ...) lines and a join-key line) or 'create_table'."""
    max_schema_tokens: int | None = 400
    """Schema budget in tokens; a larger schema is filtered by relevance to the question (None = no limit)."""
    value_hints: int = 3
    """Lines of cell values the question mentions, shown after the schema (0 = none)."""
    values_per_column: int = 0
    """Sample values per column in the schema text (dropped first when over budget)."""

    def __post_init__(self):
        from sqlcopilot_core.config import ConfigError

        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ConfigError(f"{type(self).__name__}.{message}")

        need(is_number(self.learning_rate) and self.learning_rate > 0,
             f"learning_rate must be > 0, got {self.learning_rate}")
        need(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        need(0 <= self.warmup_steps < self.max_steps,
             f"warmup_steps ({self.warmup_steps}) must be >= 0 and below max_steps ({self.max_steps})")
        need(self.epochs is None or (is_number(self.epochs) and self.epochs > 0),
             f"epochs must be a number > 0 or null, got {self.epochs!r}")
        need(self.max_minutes is None or (is_number(self.max_minutes) and self.max_minutes > 0),
             f"max_minutes must be a number > 0 or null, got {self.max_minutes!r}")
        need(self.batch_size >= 1 and self.grad_accum_steps >= 1,
             f"batch_size ({self.batch_size}) and grad_accum_steps ({self.grad_accum_steps}) must be >= 1")
        need(self.max_seq_len >= 64, f"max_seq_len must be >= 64, got {self.max_seq_len}")
        need(self.train_limit is None or (is_number(self.train_limit) and self.train_limit >= 1),
             f"train_limit must be >= 1 or null, got {self.train_limit!r}")
        need(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        need(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        need(self.max_schema_tokens is None or (is_number(self.max_schema_tokens)
                                                and 1 <= self.max_schema_tokens < self.max_seq_len),
             f"max_schema_tokens ({self.max_schema_tokens}) must be >= 1 and below max_seq_len ({self.max_seq_len})")
        try:
            self.prompt_settings()
        except ValueError as exc:
            raise ConfigError(f"{type(self).__name__}: {exc}") from None

    def prompt_settings(self):
        from sqlcopilot_core.prompting import PromptSettings

        return PromptSettings(form=self.prompt_form, max_schema_tokens=self.max_schema_tokens,
                              value_hints=self.value_hints, values_per_column=self.values_per_column)


def with_prompt_settings(config: TrainingConfig, settings) -> TrainingConfig:
    """`config` with its prompt fields set from a PromptSettings (a student takes its teacher's)."""
    import dataclasses

    return dataclasses.replace(config, prompt_form=settings.form, max_schema_tokens=settings.max_schema_tokens,
                               value_hints=settings.value_hints, values_per_column=settings.values_per_column)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def select_examples(examples: list, config: TrainingConfig) -> list:
    """All examples, or a subset of train_limit fixed by the seed (kept in file order)."""
    if config.train_limit is None or config.train_limit >= len(examples):
        return list(examples)
    chosen = sorted(random.Random(config.seed).sample(range(len(examples)), config.train_limit))
    return [examples[i] for i in chosen]


# Config fields a resumed run may change: they bound or report the run but do not alter its trajectory so far.
RESUMABLE_CHANGES = {"max_steps", "max_minutes", "checkpoint_every", "log_every", "epochs"}


@dataclass
class Run:
    """What setup_run builds and train advances: one stage's model(s), optimizer, data and position."""

    config: TrainingConfig
    tokenizer: Any
    accelerator: Any
    modules: torch.nn.Module
    """What the optimizer trains and a checkpoint holds (wrapped by accelerate when several processes run)."""
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: Any
    state: TrainState
    checkpoint_root: Path
    recorded: dict[str, Any]
    total_steps: int
    resumed_from_step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    """Stage-specific pieces (distill: teacher, layer map, schedule)."""

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.modules)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16_autocast)


def planned_steps(config: TrainingConfig, packs_per_epoch: int, processes: int) -> int:
    """Optimizer steps of the run: what `epochs` take when set (at most max_steps), else max_steps."""
    if config.epochs is None:
        return config.max_steps
    per_step = config.batch_size * config.grad_accum_steps * processes
    return max(1, min(config.max_steps, int(-(-config.epochs * packs_per_epoch // per_step))))


def setup_run(modules: torch.nn.Module, tokenizer, examples: list, config: TrainingConfig, checkpoint_root: Path,
              recorded: dict[str, Any], *, weight_decay: float = 0.0, what: str = "training",
              extra: dict[str, Any] | None = None) -> Run:
    """Packed data, AdamW, schedule over the run's planned steps, accelerate, resumed from the latest checkpoint.

    `recorded`: what a checkpoint must agree with to be resumed (beyond the config itself).
    """
    from accelerate import Accelerator

    from sqlcopilot_core.config import config_to_dict
    from sqlcopilot_core.packing import PackedData
    from sqlcopilot_core.prompting import Prompter

    accelerator = Accelerator()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    data = PackedData(select_examples(examples, config), tokenizer, Prompter(config.prompt_settings(), tokenizer),
                      config.max_seq_len, config.seed, progress=accelerator.is_local_main_process, what=what)
    total = planned_steps(config, data.packs_per_epoch(), accelerator.num_processes)
    if config.warmup_steps >= total:
        raise ValueError(f"{type(config).__name__}.warmup_steps ({config.warmup_steps}) must be below the run's "
                         f"{total} steps")
    modules.train()
    optimizer = adamw(modules, config.learning_rate, weight_decay)
    scheduler = warmup_linear_decay(optimizer, config.warmup_steps, total)
    modules, optimizer = accelerator.prepare(modules, optimizer)
    recorded = {**config_to_dict(config), "train_examples": len(data), **recorded}
    run = Run(config, tokenizer, accelerator, modules, optimizer, scheduler, data, TrainState(),
              Path(checkpoint_root), recorded, total, extra=extra or {})
    checkpoint = latest_checkpoint(checkpoint_root)
    if checkpoint is not None:
        check_resumable(checkpoint, recorded)
        run.state = load_checkpoint(checkpoint, run.unwrapped, optimizer, scheduler)
        run.resumed_from_step = run.state.step
    return run


def check_resumable(checkpoint: Path, expected: dict[str, Any]) -> None:
    """Refuse a checkpoint made with settings that would change the trajectory (it would not be the same run)."""
    _, recorded = read_checkpoint_state(checkpoint)
    differ = sorted(k for k in set(recorded) | set(expected)
                    if k not in RESUMABLE_CHANGES and recorded.get(k) != expected.get(k))
    if differ:
        details = ", ".join(f"{k}: {recorded.get(k)!r} -> {expected.get(k)!r}" for k in differ)
        raise ValueError(f"checkpoint {checkpoint} was made with other settings ({details}); use another checkpoint "
                         f"folder or delete it to start over")


def next_micro_batch(run: Run, stream):
    """This process's slice of the next global batch of packs (batch_size packs from each process's share)."""
    from sqlcopilot_core.packing import collate_packs

    size, rank = run.config.batch_size, run.accelerator.process_index
    global_packs = [next(stream) for _ in range(size * run.accelerator.num_processes)]
    run.state.packs_seen += len(global_packs)
    run.state.examples_seen += sum(len(p.branches) for p in global_packs)
    pad_id = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else run.tokenizer.eos_token_id
    return collate_packs(global_packs[rank * size:(rank + 1) * size], pad_id).to(run.device)


# loss_step(run, batch) -> (loss to minimize, or None when the batch adds none; float values to report)
LossStep = Callable[[Run, Any], tuple[torch.Tensor | None, dict[str, float]]]


def train_step(run: Run, stream, loss_step: LossStep) -> dict[str, float]:
    """One optimizer step over grad_accum_steps micro-batches; returns the means of the loss step's values, lr,
    grad norm and the counts of examples and tokens read."""
    accum = run.config.grad_accum_steps
    sums: dict[str, float] = {}
    examples = tokens = 0
    for _ in range(accum):
        batch = next_micro_batch(run, stream)
        loss, values = loss_step(run, batch)
        if loss is not None and loss.requires_grad:
            run.accelerator.backward(loss / accum)
        for name, value in {"loss": float(loss.detach()) if loss is not None else 0.0, **values}.items():
            sums[name] = sums.get(name, 0.0) + float(value) / accum
        examples += len(batch.examples)
        tokens += batch.n_tokens()
    grad_norm = run.accelerator.clip_grad_norm_(run.modules.parameters(), run.config.max_grad_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {**sums, "lr": lr, "grad_norm": float(grad_norm), "examples": examples, "tokens": tokens}


def write_checkpoint(run: Run) -> None:
    if run.accelerator.is_main_process:
        save_checkpoint(run.checkpoint_root, run.unwrapped, run.optimizer, run.scheduler, run.state, run.recorded)
    run.accelerator.wait_for_everyone()


def train(run: Run, loss_step: LossStep, on_metrics: Callable[[int, dict], None] | None = None,
          desc: str = "train", postfix: Callable[[Run], dict] | None = None) -> dict[str, Any]:
    """Step until the run's planned steps or the wall-clock budget, checkpointing every checkpoint_every steps and
    at the end. `on_metrics(step, metrics)` gets, every log_every steps and at the end, the means of the loss
    step's values since the previous call, grad_norm, examples_per_s and tokens_per_s, plus lr and epoch."""
    config, state = run.config, run.state
    budget = TrainBudget(run.total_steps, config.max_minutes, spent_s=state.wall_s)
    stream = run.data.stream(start=state.packs_seen)
    window, segment, last = MetricsWindow(), MetricsWindow(), {}
    main = run.accelerator.is_local_main_process
    with tqdm(total=run.total_steps, initial=state.step, desc=desc, unit="step", disable=not main) as bar:
        while (stop_reason := budget.stop_reason(state.step)) is None:
            last = train_step(run, stream, loss_step)
            state.step += 1
            state.train_tokens += last["tokens"]
            state.wall_s = budget.elapsed_s
            for name in ("skipped_correct",):
                if name in last:
                    state.counters[name] = state.counters.get(name, 0) + last[name]
            window.add(last["tokens"], examples=last["examples"],
                       **{k: v for k, v in last.items() if k not in ("tokens", "examples", "lr")})
            segment.add(last["tokens"], examples=last["examples"])
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.3f}", lr=f"{last['lr']:.2e}", **(postfix(run) if postfix else {}))
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                write_checkpoint(run)
            if state.step % config.log_every == 0:
                report(run, window, last["lr"], on_metrics)
    if window.steps:
        report(run, window, last["lr"], on_metrics)
    if last and (not config.checkpoint_every or state.step % config.checkpoint_every):
        write_checkpoint(run)
    seconds = time.monotonic() - segment.started
    examples_read = segment.sums.get("examples", 0.0)
    throughput = segment.pop()
    return {"steps": state.step, "planned_steps": run.total_steps, "examples_seen": state.examples_seen,
            "epochs": state.examples_seen / len(run.data), "train_tokens": state.train_tokens,
            "tokens_per_s": throughput["tokens_per_s"],
            "examples_per_s": examples_read / seconds if seconds > 0 else 0.0,
            "wall_s": state.wall_s, "final_loss": last.get("loss"), "stop_reason": stop_reason,
            "resumed_from_step": run.resumed_from_step, "train_examples": len(run.data),
            "skipped_too_long": len(run.data.too_long), "packs_per_epoch": run.data.packs_per_epoch(),
            **{f"tokens_per_epoch_{k}": v for k, v in run.data.tokens_per_epoch().items()}}


def report(run: Run, window: MetricsWindow, lr: float, on_metrics) -> None:
    """Send the window's means and throughput, lr and epoch to on_metrics (main process only)."""
    seconds = time.monotonic() - window.started
    examples = window.sums.get("examples", 0.0)
    metrics = {**window.pop(), "lr": lr, "epoch": run.state.examples_seen / len(run.data),
               "examples_per_s": examples / seconds if seconds > 0 else 0.0,
               **{f"{name}_total": total for name, total in run.state.counters.items()}}
    metrics.pop("examples", None)
    if on_metrics is not None and run.accelerator.is_main_process:
        on_metrics(run.state.step, metrics)
