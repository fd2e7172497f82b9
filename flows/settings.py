"""Resolve a flow's settings: a profile, `stage.key=value` overrides and the Spider folder, as one plain dict.

    python -c "from flows.settings import resolve_settings; print(resolve_settings('smoke', [], None))"
"""

from __future__ import annotations

import os
from typing import Any

from sqlcopilot_core.config import apply_overrides, load_profile
from sqlcopilot_core.scoring import resolve_spider_dir


def resolve_settings(profile: str, overrides: list[str], spider_dir: str | None) -> dict[str, Any]:
    """Profile + overrides; the Spider folder (argument, $SPIDER_DIR, else sample data) fixed for every stage."""
    settings = apply_overrides(load_profile(profile), overrides)
    folder = str(resolve_spider_dir(spider_dir or settings.get("evaluate", {}).get("spider_dir")
                                    or os.environ.get("SPIDER_DIR")))
    settings.setdefault("evaluate", {})["spider_dir"] = folder
    settings["spider_dir"] = folder
    return settings


# The shared training recipe's fields that make a budget: what the distillation spends, the control spends too.
BUDGET_FIELDS = ("epochs", "max_steps", "max_minutes", "batch_size", "grad_accum_steps", "learning_rate",
                 "warmup_steps", "max_seq_len", "train_limit", "seed", "bf16_autocast", "checkpoint_every",
                 "log_every")


def control_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """finetune's settings with the distill stage's budget (its resolved values, defaults included): the sweep's
    control trains the teacher on for exactly what a student's distillation is given. The profile's `control`
    section, when present, overrides finetune settings of the control alone: a learning rate that rebuilds a
    pruned student can wreck the trained teacher (cpu profile, docs/RESULTS.md: 3e-4 re-warmed took the one-epoch
    teacher from 0.333 to 0.199 in 50 steps; 5e-5 kept 0.318), and retention against a wrecked control says nothing."""
    from sqlcopilot_core.config import config_from_dict, config_to_dict
    from sqlcopilot_core.distill import DistillConfig

    distill = config_to_dict(config_from_dict(DistillConfig, settings.get("distill", {}), "distill"))
    return {**settings.get("finetune", {}), **{name: distill[name] for name in BUDGET_FIELDS},
            **settings.get("control", {})}
