"""Task gold_check of the evaluate stage: the eval split's gold SQL scored against itself before anything trains.

    python -c "from tasks.evaluate import gold_check; print(gold_check.fn({}))"
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import stage
from tasks import logger


@task(name="gold_check", cache_policy=NO_CACHE)
def gold_check(settings: dict[str, Any], parent_run_id: str | None = None) -> dict[str, Any]:
    """Score the eval split's gold SQL against itself: every database present, every gold query runs (ex == 1)."""
    return stage.gold_check(settings, parent_run_id, logger())
