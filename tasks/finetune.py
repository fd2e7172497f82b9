"""Task finetune: train the base model on the Spider train split (sft or exec_guided), resumable, then score it.

    python -m pytest tests/flows -q -k rebuild
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import stage
from sqlcopilot_core.artifacts import Artifact, ArtifactError, load_artifact
from sqlcopilot_core.stages import finetune as definition
from tasks import logger


@task(name="finetune", cache_policy=NO_CACHE)
def finetune(settings: dict[str, Any], base: Artifact, spider_dir: str | None, eval_settings: dict[str, Any],
             parent_run_id: str | None = None) -> Artifact:
    """The base model fine-tuned on Spider train, with its training statistics and score."""
    return stage.run(definition, settings, {"base": base}, spider_dir, eval_settings, parent_run_id, logger())


@task(name="existing_finetune", cache_policy=NO_CACHE)
def existing_finetune(path: str, eval_settings: dict[str, Any], run_id: str) -> Artifact:
    """A fine-tuned artifact given by path (e.g. `sweep --teacher`), verified, and scored under `eval_settings` like a
    cache hit so it compares with models scored now; an error names the folder and what is wrong with it."""
    artifact = load_artifact(path)
    if artifact.stage != "finetune":
        raise ArtifactError(f"{path}: --teacher must be a finetune artifact, this one is from stage "
                            f"'{artifact.stage}'")
    return stage.with_score(artifact, stage.scorer_for(definition.SCORE, eval_settings, {}), run_id, logger())
