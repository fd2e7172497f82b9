"""Task export: the distilled (or any) model traced to TorchScript with a versioned manifest and a parity check.

    python -m pytest tests/flows -q -k rebuild
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import stage
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.stages import export as definition
from tasks import logger


@task(name="export", cache_policy=NO_CACHE)
def export(settings: dict[str, Any], model: Artifact, eval_settings: dict[str, Any],
           parent_run_id: str | None = None) -> Artifact:
    """TorchScript graph + tokenizer + manifest under <artifact>/model, checked against the eager model."""
    return stage.run(definition, settings, {"model": model}, None, eval_settings, parent_run_id, logger())
