"""Task download_base: fetch the base model (cached by source), score it zero-shot.

    python -c "from tasks.download_base import download_base; print(download_base.fn({'source': 'tiny'}, {}))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sqlcopilot_core import paths
from sqlcopilot_core.artifacts import Artifact
from sqlcopilot_core.config import config_from_dict, config_to_dict
from sqlcopilot_core.download_base import DownloadBaseConfig, download_base as fetch_base_model
from tasks.evaluate import python_scorer
from tasks.stage import run_stage

MODULES = ("download_base", "modeling")


@task(name="download_base", cache_policy=NO_CACHE)
def download_base(settings: dict[str, Any], eval_settings: dict[str, Any],
                  parent_run_id: str | None = None) -> Artifact:
    """The base model as a standard model folder, scored zero-shot on the eval split."""
    config = config_from_dict(DownloadBaseConfig, settings, "download_base")

    def produce(staging: Path, checkpoints: Path, run_id: str) -> dict[str, Any]:
        info = fetch_base_model(config, staging, cache_dir=paths.work_dir() / "downloads")
        return {"num_layers": info["num_layers"], "vocab_size": info["vocab_size"]}

    return run_stage("download_base", config_to_dict(config), {}, MODULES, produce, parent_run_id,
                     score=python_scorer(eval_settings), eval_config=eval_settings)
