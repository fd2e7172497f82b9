"""Task build: the C++ runner compiled against the installed libtorch, tested with ctest, and scored through it.

    python -m pytest tests/cpp -q
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import stage, tracking
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.config import config_from_dict
from sqlcopilot_core.stages import build as definition
from tasks import logger


@task(name="build", cache_policy=NO_CACHE)
def build(settings: dict[str, Any], exported: Artifact, eval_settings: dict[str, Any],
          parent_run_id: str | None = None) -> Artifact:
    """The runner program for `exported`, with the C++ path's execution accuracy."""
    return stage.run(definition, settings, {"export": exported}, None, eval_settings, parent_run_id, logger())


@task(name="choose_shipped_model", cache_policy=NO_CACHE)
def choose_shipped_model(settings: dict[str, Any], student: Artifact, teacher: Artifact,
                         parent_run_id: str | None = None) -> tuple[Artifact, dict[str, Any]]:
    """The model the build compiles: the student when it keeps build.retention_floor of the teacher's ex, else the
    teacher; the decision is logged on the flow's MLflow run (tags shipped*, metrics retention*)."""
    decision = definition.ship_decision(config_from_dict(definition.CONFIG, settings, definition.NAME),
                                        student.metrics, teacher.metrics)
    chosen = student if decision["shipped"] == "student" else teacher
    decision = {**decision, "shipped_stage": chosen.stage, "shipped_key": chosen.key}
    if parent_run_id:
        tracking.set_tags(parent_run_id, {"shipped": decision["shipped"], "shipped_reason": decision["reason"],
                                          "shipped_stage": chosen.stage, "shipped_key": chosen.key})
        tracking.log_metrics(parent_run_id, {"retention": decision["retention"],
                                             "retention_floor": decision["retention_floor"]})
    logger().info(decision["reason"])
    return chosen, decision
