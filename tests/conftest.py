"""Shared fixtures: the committed MNIST sample, a session-wide Prefect test API and MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digitpipe.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/fixtures/mnist-1000"
SHARED_MNIST = ROOT.parent / "shared/mnist"

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """1,000 real MNIST training images (stratified), IDX gz."""
    return FIXTURE


@pytest.fixture(scope="session")
def digits():
    """The fixture as a Dataset."""
    return load_dataset(FIXTURE)


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API for the whole session (its sqlite migrations cost seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """A sqlite-backed MLflow tracking URI shared by the session (MLflow migrates a fresh store for seconds)."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder}/mlflow.db"
