"""Scoring tasks: fetch the model from the registry (I/O, retried), score one file (computation, not retried)."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from digitpipe.config import MonitoringConfig
from digitpipe.monitor import Reference, registered_reference
from digitpipe.scorer import OnnxScorer
from digitpipe.scoring import ScoreReport, score_file
from digitpipe.tracking import Registry
from tasks import IO_RETRIES


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def fetch_model(registry: Registry, uri: str, dest: Path) -> tuple[Path, dict, Reference | None]:
    """Download the registered ONNX model named by `uri`, and its drift reference where it has one."""
    path, identity = registry.resolve(uri, dest)
    return path, identity, registered_reference(registry.monitor_reference(identity, dest / "reference"))


@task(cache_policy=NO_CACHE, task_run_name="score-{input_path.name}")
def score_one(model_path: Path, identity: dict, input_path: Path, suffix: str, probabilities: bool,
              reference: Reference | None, thresholds: MonitoringConfig) -> ScoreReport:
    """Score one input file into INPUT + suffix beside it, checking it for drift against `reference`."""
    output = input_path.with_name(input_path.name + suffix)
    return score_file(OnnxScorer(model_path), input_path, output, identity, probabilities=probabilities,
                      reference=reference, thresholds=thresholds)
