"""Task build: the C++ runner compiled against the installed libtorch, tested with ctest, and scored through it.

    python -m pytest tests/cpp -q
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import stage
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.stages import build as definition
from tasks import logger


@task(name="build", cache_policy=NO_CACHE)
def build(settings: dict[str, Any], exported: Artifact, eval_settings: dict[str, Any],
          parent_run_id: str | None = None) -> Artifact:
    """The runner program for `exported`, with the C++ path's execution accuracy."""
    return stage.run(definition, settings, {"export": exported}, None, eval_settings, parent_run_id, logger())
