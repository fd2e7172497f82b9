"""Resolve a flow's settings: a profile, `stage.key=value` overrides and the Spider folder, as one plain dict.

    python -c "from flows.settings import resolve_settings; print(resolve_settings('smoke', [], None))"
"""

from __future__ import annotations

import os
from typing import Any

from sqlcopilot_core.config import apply_overrides, load_profile
from sqlcopilot_core.scoring import resolve_spider_dir


def resolve_settings(profile: str, overrides: list[str], spider_dir: str | None) -> dict[str, Any]:
    """Profile + overrides; the Spider folder (argument, $SPIDER_DIR, else sample data) fixed for every stage."""
    settings = apply_overrides(load_profile(profile), overrides)
    folder = str(resolve_spider_dir(spider_dir or settings.get("evaluate", {}).get("spider_dir")
                                    or os.environ.get("SPIDER_DIR")))
    settings.setdefault("evaluate", {})["spider_dir"] = folder
    settings["spider_dir"] = folder
    return settings
