"""Training-loop plumbing shared by the finetune and distill stages: budget, data order, schedule, metrics, checkpoints.

    python -m sqlcopilot_core.training work/artifacts/finetune-checkpoints   # describe the latest checkpoint

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
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch.optim.lr_scheduler import LambdaLR

CHECKPOINT_PREFIX = "step-"


@dataclass
class TrainState:
    """Everything besides weights and optimizer that a resumed run needs to continue exactly where it stopped."""

    step: int = 0
    examples_seen: int = 0
    """Position in the (epoch-shuffled) example stream: the data order resumes from here."""
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
