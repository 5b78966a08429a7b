"""Model tasks: train one model, evaluate it, export it to ONNX."""

from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from digitpipe import steps
from digitpipe.config import PipelineConfig
from digitpipe.data import Split
from digitpipe.evaluate import Evaluation
from digitpipe.train import Callback, TrainedModel
from tasks import not_a_user_error


@task(cache_policy=NO_CACHE, task_run_name="train-{name}", retries=1, retry_condition_fn=not_a_user_error)
def train_model(name: str, cfg: PipelineConfig, split: Split, device: str, callbacks: list[Callback]) -> TrainedModel:
    """Fit one zoo model; a retry continues from the failed attempt's last epoch checkpoint, not from scratch."""
    if task_run.run_count > 1:
        cfg = cfg.model_copy(update={"resume": True})
    return steps.train(name, cfg, split, device, callbacks)


@task(cache_policy=NO_CACHE)
def evaluate_model(trained: TrainedModel, split: Split, folder: Path) -> tuple[Evaluation, np.ndarray]:
    """Held-out metrics and pictures."""
    return steps.evaluate_on_test(trained, split, folder)


@task(cache_policy=NO_CACHE)
def export_model(trained: TrainedModel, split: Split, predicted: np.ndarray, folder: Path) -> Path:
    """ONNX export with onnx.checker and a parity check against the native model."""
    return steps.export_checked(trained, split, predicted, folder)
