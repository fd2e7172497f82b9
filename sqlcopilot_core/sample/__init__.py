"""The embedded sample dataset: six small SQLite databases with Spider-style questions, made by code, not shipped.

    python -c "from sqlcopilot_core.sample import ensure_sample_spider; print(ensure_sample_spider())"
"""

from sqlcopilot_core.sample.build import build_sample_spider, ensure_sample_spider, sample_problems

__all__ = ["build_sample_spider", "ensure_sample_spider", "sample_problems"]
