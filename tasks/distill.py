"""Task distill: the pruned student distilled from the fine-tuned teacher (KL + hidden MSE + CE), then scored.

    python -m pytest tests/flows -q -k sweep
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import stage
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.stages import distill as definition
from tasks import logger


@task(name="distill", cache_policy=NO_CACHE)
def distill(settings: dict[str, Any], student: Artifact, teacher: Artifact, spider_dir: str | None,
            eval_settings: dict[str, Any], parent_run_id: str | None = None) -> Artifact:
    """The pruned model trained toward the fine-tuned teacher's logits and hidden states."""
    return stage.run(definition, settings, {"student": student, "teacher": teacher}, spider_dir, eval_settings,
                     parent_run_id, logger())
