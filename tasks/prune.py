"""Task prune: structured GQA-aware pruning of the fine-tuned model to a ratio of its parameters, then scored.

    python -m pytest tests/flows -q -k sweep
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import stage
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.stages import prune as definition
from tasks import logger


@task(name="prune", cache_policy=NO_CACHE)
def prune(settings: dict[str, Any], teacher: Artifact, spider_dir: str | None, eval_settings: dict[str, Any],
          parent_run_id: str | None = None) -> Artifact:
    """The fine-tuned model pruned structurally to `ratio` of its parameters."""
    return stage.run(definition, settings, {"teacher": teacher}, spider_dir, eval_settings, parent_run_id, logger())
