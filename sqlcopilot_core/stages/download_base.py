"""Stage download_base: fetch the base model (cached by source) as a standard model folder, scored zero-shot.

    python -c "from sqlcopilot_core.stage import run; from sqlcopilot_core.stages import download_base; print(run(download_base, {'source': 'tiny'}, {}, None, {}))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlcopilot_core import paths
from sqlcopilot_core.download_base import DownloadBaseConfig, download_base as fetch_base_model

NAME = "download_base"
CONFIG = DownloadBaseConfig
SCORE = "python"
READS_SPIDER = False


def reads(config: DownloadBaseConfig, spider_dir: Path | None, evaluation) -> dict[str, Any]:
    return {}


def produce(config: DownloadBaseConfig, inputs, staging: Path, checkpoints: Path, run) -> dict[str, Any]:
    info = fetch_base_model(config, staging, cache_dir=paths.work_dir() / "downloads")
    return {"num_layers": info["num_layers"], "vocab_size": info["vocab_size"]}
