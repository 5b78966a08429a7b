"""Registry tasks: I/O against MLflow, so retried with backoff."""

from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from digitpipe.data import Dataset
from digitpipe.promotion import Verdict, promote_if_earned
from digitpipe.robustness import Robustness, Suite
from digitpipe.tracking import Registry
from tasks import IO_RETRIES


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def register_model(registry: Registry, run_id: str, onnx_path: Path, images: np.ndarray, tags: dict) -> str:
    """Register the ONNX model under the configured name; returns the new version."""
    return registry.register_onnx(run_id, onnx_path, images, tags)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def promote_champion(registry: Registry, version: str, test: Dataset, predicted: np.ndarray, suite: Suite,
                     robustness: Robustness, feedback: Dataset | None = None) -> Verdict:
    """Move the champion alias to `version` only if it passes the promotion gate against the current champion."""
    return promote_if_earned(registry, version, test, predicted, suite, robustness, feedback)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def record_verdict(registry: Registry, verdict: Verdict) -> None:
    """Write a decision about a version as its tags."""
    registry.set_version_tags(verdict.version, verdict.tags())
