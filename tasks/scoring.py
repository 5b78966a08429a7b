"""Scoring tasks: fetch the model from the registry (I/O, retried), score one file (computation, not retried), and
what a scored batch sends back: its labels as feedback, its alarm."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from digitpipe.config import MonitoringConfig
from digitpipe.feedback import Alarm, labelled_in_file
from digitpipe.loop import FeedbackResult, batch_alarm, record_feedback
from digitpipe.monitor import Reference, file_features, registered_reference
from digitpipe.scorer import OnnxScorer
from digitpipe.scoring import ScoreReport, score_file
from digitpipe.tracking import Registry, Tracker
from digitpipe.validation import ValidationReport, validate_batch
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


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def keep_feedback(tracker: Tracker, model_path: Path, report: ScoreReport,
                  monitoring: MonitoringConfig) -> FeedbackResult | None:
    """A scored file that carried its labels is labelled feedback: live accuracy logged, digits kept in the store."""
    labelled = labelled_in_file(Path(report.input)) if report.accuracy is not None else None
    return labelled and record_feedback(tracker, labelled, model_path, report.model, monitoring)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def check_batch(tracker: Tracker, report: ScoreReport) -> Alarm | None:
    """The alarm a batch raises for drift (recorded on the version), or None."""
    return batch_alarm(tracker, report.model, report.input, report.drift or {})


@task(cache_policy=NO_CACHE)
def document_batch(input_path: Path, reference: Reference, docs_dir: Path) -> ValidationReport:
    """GX data docs of a scored batch: its digits against the suite its model's reference implies."""
    return validate_batch(file_features(input_path), reference, docs_dir)
