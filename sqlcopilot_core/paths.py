"""Where outputs go: one work folder (SQLCOPILOT_HOME, default ./work) holding the artifact store and MLflow's store.

    python -c "from sqlcopilot_core import paths; print(paths.work_dir(), paths.tracking_uri())"
"""

from __future__ import annotations

import os
from pathlib import Path


def work_dir() -> Path:
    """The project's work folder: $SQLCOPILOT_HOME, else ./work under the current directory."""
    return Path(os.environ.get("SQLCOPILOT_HOME", "work")).resolve()


def artifact_store() -> Path:
    """Root of the content-addressed artifact store: $SQLCOPILOT_STORE, else <work>/artifacts."""
    return Path(os.environ.get("SQLCOPILOT_STORE", work_dir() / "artifacts")).resolve()


def tracking_uri() -> str:
    """MLflow tracking URI: $MLFLOW_TRACKING_URI, else a SQLite store at <work>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{work_dir() / 'mlflow.db'}"


def sample_data_dir() -> Path:
    """Where the embedded sample dataset is built (it is made by code, never committed as files)."""
    return work_dir() / "sample_spider"


def build_dir() -> Path:
    """Where cmake builds the C++ runner: $SQLCOPILOT_BUILD_DIR, else <work>/build (kept between runs)."""
    return Path(os.environ.get("SQLCOPILOT_BUILD_DIR", work_dir() / "build")).resolve()
