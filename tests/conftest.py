"""Shared fixtures: the real Spider folder beside the project, an isolated work folder per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SPIDER = Path(os.environ.get("SPIDER_DIR", REPO.parent / "shared" / "spider"))


@pytest.fixture(scope="session", autouse=True)
def shared_cpp_build(tmp_path_factory):
    """One cmake build folder for the whole session (incremental after the first build), unless set outside."""
    if not os.environ.get("SQLCOPILOT_BUILD_DIR"):
        os.environ["SQLCOPILOT_BUILD_DIR"] = str(tmp_path_factory.mktemp("cpp-build"))
    yield


@pytest.fixture()
def work_home(tmp_path, monkeypatch) -> Path:
    """A private SQLCOPILOT_HOME (artifact store + MLflow SQLite store) for one test."""
    home = tmp_path / "work"
    monkeypatch.setenv("SQLCOPILOT_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SQLCOPILOT_STORE", raising=False)
    return home


@pytest.fixture(scope="session")
def shared_spider() -> Path:
    if not (SHARED_SPIDER / "dev.json").exists():
        pytest.skip(f"real Spider data not found at {SHARED_SPIDER}")
    return SHARED_SPIDER
