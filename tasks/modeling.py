"""Model tasks: train one zoo model, evaluate it, export it to ONNX, check it on perturbed digits."""

from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from digitpipe import pipeline
from digitpipe.config import PipelineConfig
from digitpipe.data import Dataset, Split
from digitpipe.evaluate import Evaluation
from digitpipe.monitor import Reference, build_reference
from digitpipe.robustness import Robustness, Suite, build_suite
from digitpipe.zoo import Callback, TrainedModel
from tasks import not_a_user_error


@task(cache_policy=NO_CACHE, task_run_name="train-{name}", retries=1, retry_condition_fn=not_a_user_error)
def train_model(name: str, cfg: PipelineConfig, split: Split, device: str, callbacks: list[Callback]) -> TrainedModel:
    """Fit one zoo model; a retry continues from the failed attempt's last epoch checkpoint, not from scratch."""
    return pipeline.train_zoo_model(name, pipeline.model_spec(name, cfg), split, device, cfg.seed, cfg.threads,
                                    callbacks, pipeline.checkpoint_path(name, cfg, split),
                                    resume=cfg.resume or task_run.run_count > 1)


@task(cache_policy=NO_CACHE)
def evaluate_model(trained: TrainedModel, test: Dataset, folder: Path) -> tuple[Evaluation, np.ndarray]:
    """Held-out metrics and pictures."""
    return pipeline.evaluate_on_test(trained, test, folder)


@task(cache_policy=NO_CACHE)
def perturb_held_out(test: Dataset, seed: int) -> Suite:
    """The perturbation suite of this run's held-out part: the same images for every model and the champion."""
    return build_suite(test, seed)


@task(cache_policy=NO_CACHE)
def check_robustness(onnx_path: Path, suite: Suite, folder: Path) -> Robustness:
    """The exported model on the perturbation suite: accuracy per perturbation and the flipped digits."""
    return pipeline.check_robustness(onnx_path, suite, folder)


@task(cache_policy=NO_CACHE)
def describe_training_part(train: Dataset) -> Reference:
    """What the drift monitor compares scoring batches with: the training images' features and class shares."""
    return build_reference(train.images)


@task(cache_policy=NO_CACHE)
def record_monitor_reference(onnx_path: Path, base: Reference, held_out: Dataset, folder: Path) -> Path:
    """The model's drift reference (the training part's plus the model's held-out confidence) beside its report."""
    return pipeline.write_monitor_reference(onnx_path, base, held_out, folder)


@task(cache_policy=NO_CACHE)
def export_model(trained: TrainedModel, test: Dataset, predicted: np.ndarray, folder: Path) -> Path:
    """ONNX export with onnx.checker and a parity check against the native model."""
    return pipeline.export_checked(trained, test, predicted, folder)
