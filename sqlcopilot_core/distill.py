"""Stage distill: train a pruned student to imitate the fine-tuned teacher, layer by layer (setup -> loss step ->
train -> save).

    python -m sqlcopilot_core.distill PRUNED TEACHER ../shared/spider /tmp/out --set max_steps=40 steps_per_layer=1

(for SmolLM2-135M's 30 layers: 30 one-step layer phases, then 10 steps of the final KL + CE phase).

Loss on a batch of packs (sqlcopilot_core/packing.py: one schema, several question + gold SQL branches), read by
the teacher (once per batch) and the student through the training recipe finetune shares (training.py):

    kl_weight * KL(teacher || student), both softmaxed at logits / temperature, times temperature^2,
                on the gold SQL positions only (mean over each example's target tokens, then over the batch)
  + hidden_weight * mean over the phase's mapped layers of MSE(student hidden_i, P_i(teacher hidden_map[i]))
                (or that MSE relative to the mean square of P_i(teacher hidden), DistillConfig.hidden_loss)
                on every real (non-padding) token
  + ce_weight * cross-entropy of the student on the gold SQL (as finetune's sft)

A layer's hidden state is the residual stream its decoder layer outputs (before the final norm). Student layer i is
paired with teacher layer map[i] (DistillConfig.layer_map). P_i is the identity when both hidden widths are equal;
after hidden-width pruning it is a learned linear map teacher width -> student width, one per student layer,
initialised to select the teacher channels the student kept (recovered from the pruning's kept indices, or by
matching embedding columns, which pruning copies unchanged), else a least-squares fit of the student embedding
from the teacher's. The projections are trained with the student, checkpointed, and never saved with the model.

Schedules (DistillConfig.schedule), with S student layers and N = steps_per_layer; step k counts from 0:
- all: every step uses the whole loss above, hidden MSE averaged over all S mapped layers.
- layerwise (the original SQL-Copilot's single-layer distillation): phase i (i = 0..S-1) is steps
  [i*N, (i+1)*N) and its loss is hidden_weight * MSE of student layer i against teacher layer map[i] alone (layers
  above i get no gradient; i and the layers below it, the embedding and P_i do); then the final phase, steps S*N up
  to max_steps, uses kl_weight * KL + ce_weight * CE (no hidden term). The phase is a function of the step, so a
  resumed run continues in the phase it was killed in. One AdamW and one warmup + linear-decay learning-rate
  schedule span all phases.
- either schedule, with final_ce_fraction f > 0: the last round(f * total steps) steps (at least one) form a 'gold'
  phase whose loss is the student's cross-entropy on the gold SQL alone (no KL, no hidden term), so the student
  ends on the answers rather than on the teacher's whole distribution.
The teacher runs in eval mode under torch.inference_mode with every parameter frozen.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sqlcopilot_core.config import ConfigError, config_from_dict, parse_key_values
from sqlcopilot_core.modeling import count_parameters, layer_shapes, save_model
from sqlcopilot_core.packing import PackedBatch, packed_forward, per_branch_mean
from sqlcopilot_core.prompting import write_prompt_settings
from sqlcopilot_core.spider import Example
from sqlcopilot_core.training import Run, TrainingConfig, is_number, setup_run, train

SCHEDULES = ("all", "layerwise")
HIDDEN_LOSSES = ("mse", "relative_mse")


@dataclass(frozen=True)
class DistillConfig(TrainingConfig):
    """Settings of the distill stage (the shared training settings, then the distillation loss's own)."""

    seed: int = 1
    """Seed of the subset, the data order and the random-number generators: by default not finetune's (0), so the
    student meets the examples in another order than the teacher did."""
    kl_weight: float = 1.0
    """Weight of KL(teacher || student) on the gold SQL positions (scaled by temperature^2)."""
    temperature: float = 2.0
    """Both models' logits are divided by this before the softmax of the KL term."""
    hidden_weight: float = 1.0
    """Weight of the mean squared error between mapped student and (projected) teacher hidden states."""
    hidden_loss: str = "mse"
    """'mse', or 'relative_mse': each layer's MSE divided by the mean square of the projected teacher hidden state
    on the same tokens, so the term does not depend on the activation scale (SmolLM2-135M's residual stream gives a
    raw MSE of ~5000 against a KL of ~15 after pruning to 50%, which drowns KL and CE in schedule 'all')."""
    ce_weight: float = 0.5
    """Weight of the student's cross-entropy on the gold SQL."""
    schedule: str = "layerwise"
    """'all' (every loss term at every step) or 'layerwise' (one layer's hidden MSE per phase of steps_per_layer
    steps, in layer order, then a final KL + CE phase); see the module docstring."""
    steps_per_layer: int = 10
    """layerwise: optimizer steps spent on each student layer before moving to the next."""
    final_ce_fraction: float = 0.0
    """Fraction of the run's steps, at its end, trained on cross-entropy on the gold SQL alone (phase 'gold'; at
    least one step when > 0); 0 = none. Must leave the distillation phases at least one step each."""
    layer_map: str | tuple[int, ...] = "uniform"
    """Teacher layer paired with each student layer: 'uniform' maps student layer i (of S) to teacher layer
    round_half_up((i + 1) * T / S) - 1 (of T), so the last layers pair up; or one teacher index per student layer."""

    def __post_init__(self):
        super().__post_init__()

        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ConfigError(f"DistillConfig.{message}")

        object.__setattr__(self, "layer_map", parse_layer_map(self.layer_map))
        weights = {name: getattr(self, name) for name in ("kl_weight", "hidden_weight", "ce_weight")}
        need(all(is_number(w) and w >= 0 for w in weights.values()),
             f"loss weights must be numbers >= 0, got {weights}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.hidden_loss in HIDDEN_LOSSES, f"hidden_loss must be one of {HIDDEN_LOSSES}, got {self.hidden_loss!r}")
        if self.schedule == "layerwise":
            need(self.hidden_weight > 0 and self.kl_weight + self.ce_weight > 0,
                 f"schedule 'layerwise' needs hidden_weight > 0 (layer phases) and kl_weight + ce_weight > 0 (final "
                 f"phase), got {weights}")
        need(sum(weights.values()) > 0, f"at least one loss weight must be > 0, got {weights}")
        need(is_number(self.temperature) and self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        need(self.steps_per_layer >= 1, f"steps_per_layer must be >= 1, got {self.steps_per_layer}")
        need(is_number(self.final_ce_fraction) and 0 <= self.final_ce_fraction < 1,
             f"final_ce_fraction must be in [0, 1), got {self.final_ce_fraction!r}")


def parse_layer_map(value) -> str | tuple[int, ...]:
    """'uniform', or teacher indices given as a tuple, a list or a comma-separated string (from --set)."""
    if value == "uniform":
        return value
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"DistillConfig.layer_map must be 'uniform' or teacher layer indices, got {value!r}")
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
        raise ConfigError(f"DistillConfig.layer_map must be 'uniform' or a non-empty list of teacher layer indices "
                          f">= 0, got {value!r}")
    if any(b < a for a, b in zip(value, value[1:])):
        raise ConfigError(f"DistillConfig.layer_map must not decrease (deeper student layers follow deeper teacher "
                          f"layers), got {list(value)}")
    return tuple(value)


def resolve_layer_map(layer_map: str | tuple[int, ...], student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """Teacher layer index of every student layer; 'uniform' spreads them evenly and pairs the two last layers."""
    if layer_map == "uniform":
        return tuple(math.floor((i + 1) * teacher_layers / student_layers + 0.5) - 1 for i in range(student_layers))
    if len(layer_map) != student_layers or max(layer_map) >= teacher_layers:
        raise ValueError(f"DistillConfig.layer_map {list(layer_map)} must give one teacher layer "
                         f"(0..{teacher_layers - 1}) for each of the student's {student_layers} layers")
    return tuple(layer_map)


# ---- schedule ----

@dataclass(frozen=True)
class Phase:
    """A run of steps with one loss: which student layers' hidden MSE counts, and whether KL + CE do."""

    index: int
    name: str
    start_step: int
    end_step: int | None
    """First step of the next phase (None = runs to max_steps)."""
    hidden_layers: tuple[int, ...]
    logits: bool
    teacher: bool = True
    """The logits term is kl_weight * KL + ce_weight * CE; False: CE on the gold SQL alone (phase 'gold')."""


def gold_steps(config: DistillConfig, total_steps: int) -> int:
    """Steps of the final gold-SQL cross-entropy phase in a run of `total_steps`."""
    return max(1, round(config.final_ce_fraction * total_steps)) if config.final_ce_fraction > 0 else 0


def distill_schedule(config: DistillConfig, student_layers: int, total_steps: int | None = None) -> list[Phase]:
    """The phases of a run in order (see the module docstring); the gold phase needs the run's `total_steps`."""
    every_layer = tuple(range(student_layers))
    if config.schedule == "all":
        phases = [Phase(0, "all", 0, None, every_layer, True)]
    else:
        n = config.steps_per_layer
        phases = [Phase(i, f"layer {i}", i * n, (i + 1) * n, (i,), False) for i in every_layer]
        phases.append(Phase(student_layers, "final", student_layers * n, None, (), True))
    gold = gold_steps(config, total_steps) if total_steps is not None else 0
    if gold:
        start = total_steps - gold
        if start <= phases[-1].start_step:
            raise ValueError(f"DistillConfig.final_ce_fraction {config.final_ce_fraction}: its {gold} gold step(s) "
                             f"of {total_steps} leave no step to the '{phases[-1].name}' phase (from step "
                             f"{phases[-1].start_step}); lower it or train longer")
        phases[-1] = dataclasses.replace(phases[-1], end_step=start)
        phases.append(Phase(len(phases), "gold", start, None, (), True, teacher=False))
    return phases


def phase_at(schedule: list[Phase], step: int) -> Phase:
    """The phase that step `step` (counted from 0) trains in."""
    return next(p for p in schedule if p.end_step is None or step < p.end_step)


# ---- hidden-width projections ----

class Distillation(nn.Module):
    """What the optimizer trains and a checkpoint holds: the student and one teacher->student projection per
    student layer (identity when the widths are equal)."""

    def __init__(self, student: nn.Module, projections: list[nn.Module]):
        super().__init__()
        self.student = student
        self.projections = nn.ModuleList(projections)


def kept_channels_from_embeddings(teacher_embedding: torch.Tensor, student_embedding: torch.Tensor) -> list[int] | None:
    """Teacher hidden channel each student channel was copied from, if every student embedding column equals a
    distinct teacher column exactly (a freshly pruned student); else None."""
    teacher_columns, student_columns = teacher_embedding.T.float(), student_embedding.T.float()
    nearest = torch.cdist(student_columns, teacher_columns).argmin(1)
    kept = nearest.tolist()
    if len(set(kept)) != len(kept) or not torch.equal(teacher_columns[nearest], student_columns):
        return None
    return kept


def initial_projection(teacher_embedding: torch.Tensor, student_embedding: torch.Tensor,
                       kept: Sequence[int] | None = None) -> tuple[torch.Tensor, str]:
    """(weight of shape student width x teacher width, how it was found): a channel selection when the kept
    channels are given or can be recovered, else the least-squares map from teacher to student embeddings."""
    student_width, teacher_width = student_embedding.shape[1], teacher_embedding.shape[1]
    how = "kept_channels"
    if kept is None:
        kept = kept_channels_from_embeddings(teacher_embedding, student_embedding)
        how = "matched_embedding_columns"
    if kept is not None:
        if len(kept) != student_width or max(kept) >= teacher_width:
            raise ValueError(f"kept hidden channels: {len(kept)} indices for a student width of {student_width}, "
                             f"largest {max(kept)} for a teacher width of {teacher_width}")
        weight = torch.zeros(student_width, teacher_width)
        weight[torch.arange(student_width), torch.tensor(list(kept))] = 1.0
        return weight, how
    solution = torch.linalg.lstsq(teacher_embedding.float(), student_embedding.float()).solution
    return solution.T.contiguous(), "least_squares_embedding"


def make_projections(student, teacher, kept_hidden_channels: Sequence[int] | None) -> tuple[list[nn.Module], dict]:
    """One projection per student layer, all starting from the same map; and a description of it."""
    teacher_width, student_width = teacher.config.hidden_size, student.config.hidden_size
    layers = len(student.model.layers)
    if teacher_width == student_width:
        return [nn.Identity() for _ in range(layers)], {"projection": "identity", "projection_init": None}
    weight, how = initial_projection(teacher.model.embed_tokens.weight.detach().cpu(),
                                     student.model.embed_tokens.weight.detach().cpu(), kept_hidden_channels)
    projections = []
    for _ in range(layers):
        linear = nn.Linear(teacher_width, student_width, bias=False)
        with torch.no_grad():
            linear.weight.copy_(weight)
        projections.append(linear)
    return projections, {"projection": "linear", "projection_init": how}


def describe_mapping(student, teacher, layer_map: tuple[int, ...], projection: dict) -> dict[str, Any]:
    """The layer and width pairing a run uses, for logs and stats."""
    return {"student_layers": len(student.model.layers), "teacher_layers": len(teacher.model.layers),
            "layer_map": {str(i): t for i, t in enumerate(layer_map)},
            "student_hidden_size": student.config.hidden_size, "teacher_hidden_size": teacher.config.hidden_size,
            **projection}


# ---- loss ----

def per_row_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over each row's masked-in positions, then over the rows."""
    mask = mask.to(values.dtype)
    return ((values * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def teacher_outputs(run: Run, batch: PackedBatch) -> dict:
    """The teacher's logits at the SQL positions and hidden states of the mapped layers, once per batch, as float32
    tensors autograd accepts."""
    with torch.inference_mode(), run.autocast():
        out = packed_forward(run.extra["teacher"], batch, run.extra["layer_map"])
    # inference-mode tensors cannot be saved for backward; clones made outside inference mode can
    return {"logits": out["logits"].float().clone(), "hidden": {i: h.float().clone() for i, h in out["hidden"].items()}}


def loss_parts(run: Run, batch: PackedBatch, phase: Phase) -> dict[str, Any]:
    """KL and CE on the SQL positions and each student layer's hidden MSE against its projected teacher layer
    (mean over every real token of a pack, then over the packs). Every part is computed for the metrics; those
    `phase` does not optimize are computed without gradient."""
    modules, layer_map = run.unwrapped, run.extra["layer_map"]
    teacher = teacher_outputs(run, batch)
    with run.autocast():
        student = packed_forward(modules.student, batch, range(len(layer_map)))
    real = batch.real_tokens
    hidden_mse = []
    for i, j in enumerate(layer_map):
        with torch.set_grad_enabled(i in phase.hidden_layers):
            target = modules.projections[i](teacher["hidden"][j])
            mse = per_row_mean((student["hidden"][i].float() - target).pow(2).mean(-1), real)
            if run.config.hidden_loss == "relative_mse":
                # not detached: a learned projection must not lower the loss by growing or shrinking the target
                mse = mse / per_row_mean(target.pow(2).mean(-1), real).clamp(min=1e-12)
            hidden_mse.append(mse)
    with torch.set_grad_enabled(phase.logits):
        kl, ce = logit_losses(student["logits"].float(), teacher["logits"], student["labels"], student["branch"],
                              len(batch.examples), run.config.temperature)
    return {"kl": kl, "ce": ce, "hidden_by_layer": hidden_mse}


def logit_losses(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, branch: torch.Tensor,
                 n_examples: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL(teacher || student) at `temperature`, times temperature^2; student cross-entropy), each averaged over
    every example's SQL tokens, then over the examples."""
    student_log_p = F.log_softmax(logits / temperature, -1)
    teacher_log_p = F.log_softmax(teacher_logits / temperature, -1)
    kl = (teacher_log_p.exp() * (teacher_log_p - student_log_p)).sum(-1)
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (per_branch_mean(kl, branch, n_examples).mean() * temperature ** 2,
            per_branch_mean(ce, branch, n_examples).mean())


def phase_loss(parts: dict[str, Any], phase: Phase, config: DistillConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss this phase optimizes, its unweighted hidden term)."""
    if phase.hidden_layers:
        hidden = torch.stack([parts["hidden_by_layer"][i] for i in phase.hidden_layers]).mean()
    else:
        hidden = torch.zeros((), device=parts["kl"].device)
    loss = config.hidden_weight * hidden
    if phase.logits and phase.teacher:
        loss = loss + config.kl_weight * parts["kl"] + config.ce_weight * parts["ce"]
    elif phase.logits:
        loss = loss + parts["ce"]
    return loss, hidden


def loss_step(run: Run, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of the phase the current step trains in, and every part of it for the metrics."""
    phase = phase_at(run.extra["schedule"], run.state.step)
    parts = loss_parts(run, batch, phase)
    loss, hidden_active = phase_loss(parts, phase, run.config)
    values = {"kl": parts["kl"], "ce": parts["ce"], "hidden_active": hidden_active,
              "hidden": torch.stack(parts["hidden_by_layer"]).mean()}
    return loss, {**{k: float(v.detach()) for k, v in values.items()}, "phase": phase.index}


# ---- the run ----

def check_pair(student, teacher) -> None:
    """Refuse a teacher/student pair distillation cannot relate (vocabulary, device)."""
    student_vocab, teacher_vocab = student.model.embed_tokens.num_embeddings, teacher.model.embed_tokens.num_embeddings
    if student_vocab != teacher_vocab:
        raise ValueError(f"distill: student vocabulary {student_vocab} != teacher vocabulary {teacher_vocab}; the "
                         f"student must be pruned from the teacher (same tokenizer)")
    student_device, teacher_device = next(student.parameters()).device, next(teacher.parameters()).device
    if student_device != teacher_device:
        raise ValueError(f"distill: student on {student_device}, teacher on {teacher_device}; move both to one device")


def setup(student, teacher, tokenizer, train_examples: list[Example], config: DistillConfig, checkpoint_root: Path,
          kept_hidden_channels: Sequence[int] | None = None) -> Run:
    """Frozen teacher, student + projections and the shared recipe's data, optimizer and state, resumed from the
    latest checkpoint."""
    check_pair(student, teacher)
    torch.manual_seed(config.seed)
    layer_map = resolve_layer_map(config.layer_map, len(student.model.layers), len(teacher.model.layers))
    teacher.eval().requires_grad_(False)
    projections, projection = make_projections(student, teacher, kept_hidden_channels)
    modules = Distillation(student.requires_grad_(True), projections).to(next(student.parameters()).device)
    mapping = describe_mapping(student, teacher, layer_map, projection)
    recorded = {"layer_map_resolved": mapping["layer_map"], "student_layer_shapes": layer_shapes(student),
                "student_hidden_size": mapping["student_hidden_size"]}
    run = setup_run(modules, tokenizer, train_examples, config, checkpoint_root, recorded, what="distill",
                    extra={"teacher": teacher, "layer_map": layer_map, "mapping": mapping})
    schedule = run.extra["schedule"] = distill_schedule(config, len(layer_map), run.total_steps)
    final = next(p for p in schedule if p.name in ("final", "all"))
    if config.schedule == "layerwise" and run.total_steps <= final.start_step:
        raise ValueError(f"distill: the run's {run.total_steps} steps must exceed steps_per_layer x student layers "
                         f"({config.steps_per_layer} x {len(layer_map)} = {final.start_step}) so that the "
                         f"final KL + CE phase runs")
    return run


def distill(student, teacher, tokenizer, train_examples: list[Example], config: DistillConfig, out_dir: str | Path,
            resume_dir: str | Path | None = None, on_metrics: Callable[[int, dict], None] | None = None, *,
            kept_hidden_channels: Sequence[int] | None = None, prompt_settings=None) -> dict[str, Any]:
    """Distill `teacher` into `student` (trained in place) on `train_examples`; save the student to `out_dir`.

    Checkpoints (student + projections + optimizer + data position; the phase follows from the step) go to
    `resume_dir` (default out_dir/checkpoint); when it already holds one, training resumes from it and stops at the
    same total step count. `on_metrics(step, metrics)` receives, every log_every steps and at the end, the means
    since the previous call of loss (the optimized one), kl, ce, hidden (all mapped layers), hidden_active (the
    phase's hidden term), grad_norm, examples_per_s and tokens_per_s, plus lr, epoch and phase (an index into
    stats['schedule']). `kept_hidden_channels`: the teacher hidden channels the pruning kept, in order, when
    known; otherwise they are recovered from the embeddings. The student is saved with the prompt settings it was
    trained on (config.prompt_settings()). Returns statistics including 'mapping' and 'schedule'.
    """
    out_dir = Path(out_dir)
    run = setup(student, teacher, tokenizer, train_examples, config,
                Path(resume_dir) if resume_dir else out_dir / "checkpoint", kept_hidden_channels)
    postfix = lambda r: {"phase": phase_at(r.extra["schedule"], r.state.step).name}
    stats = train(run, loss_step, on_metrics, desc="distill", postfix=postfix)
    schedule = run.extra["schedule"]
    save_model(run.unwrapped.student.eval(), tokenizer, out_dir)
    write_prompt_settings(out_dir, config.prompt_settings())
    stats.update(parameters=count_parameters(run.unwrapped.student), teacher_parameters=count_parameters(teacher),
                 final_phase=phase_at(schedule, max(run.state.step - 1, 0)).name, mapping=run.extra["mapping"],
                 schedule=[vars(p) | {"hidden_layers": list(p.hidden_layers)} for p in schedule])
    return stats


def main(argv: list[str] | None = None) -> None:
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.spider import load_split

    parser = argparse.ArgumentParser(description="Distill a fine-tuned teacher into a pruned student on Spider train.")
    parser.add_argument("student_dir", help="pruned student model folder (modeling.load_model reads it)")
    parser.add_argument("teacher_dir", help="fine-tuned teacher model folder")
    parser.add_argument("spider_dir", help="Spider-format folder (train_spider.json, database/...)")
    parser.add_argument("out_dir", help="where the distilled student folder is written")
    parser.add_argument("--resume-dir", help="checkpoint folder (default OUT_DIR/checkpoint); resumed if present")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="DistillConfig overrides, values read as YAML (e.g. schedule=all layer_map=[1,3])")
    args = parser.parse_args(argv)
    config = config_from_dict(DistillConfig, parse_key_values(args.set))
    student, tokenizer = load_model(args.student_dir)
    teacher, _ = load_model(args.teacher_dir)
    stats = distill(student, teacher, tokenizer, load_split(args.spider_dir, "train"), config, args.out_dir,
                    args.resume_dir, on_metrics=lambda step, metrics: print(f"step {step}: {metrics}"))
    print(stats)


if __name__ == "__main__":
    main()
