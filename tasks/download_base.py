"""Task download_base: fetch the base model (cached by source), score it zero-shot.

    python -c "from tasks.download_base import download_base; print(download_base.fn({'source': 'tiny'}, {}))"
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import stage
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.stages import download_base as definition
from tasks import logger


@task(name="download_base", cache_policy=NO_CACHE)
def download_base(settings: dict[str, Any], eval_settings: dict[str, Any],
                  parent_run_id: str | None = None) -> Artifact:
    """The base model as a standard model folder, scored zero-shot on the eval split."""
    return stage.run(definition, settings, {}, None, eval_settings, parent_run_id, logger())
