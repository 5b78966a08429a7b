"""Batch scoring: fetch the champion once, score every input file beside itself, check each for drift against the
champion's training data, log counts and the drift check to MLflow; labelled inputs become feedback, and drift or
a low live accuracy is sent as a Prefect event (flows.events), which may start a retraining run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, unmapped

from digitpipe import interrupts
from digitpipe.config import load_tracking_config
from digitpipe.errors import TooManyRejected
from digitpipe.monitoring.drift import Reference, write_drift_report
from digitpipe.batch_scoring import ScoreReport
from digitpipe.tracking import RunLog, tracker_for
from flows import dask_runner, startup
from flows.events import announce
from tasks import batch_alarm, document_batch, load_model, record_scored_labels, score_beside


@flow(name="score-digits", log_prints=True)
def scoring_flow(inputs: list[Path], model: str = "models:/digits@champion", suffix: str = ".predictions.csv",
                 probabilities: bool = False, max_reject_fraction: float = 0.01,
                 config: Path | None = None) -> list[dict]:
    """Score each file in `inputs` with `model`; fail if a file rejects more than `max_reject_fraction` of its rows."""
    startup.set_environment()  # a deployment's run starts here, not at the command line
    interrupts.rearm()  # a signal stops the task threads too; Prefect's engine would keep SIGTERM to itself
    tracking = load_tracking_config(config)
    tracker = tracker_for(tracking)
    with tempfile.TemporaryDirectory(prefix="digitpipe-model-") as tmp:
        loaded = load_model(model, tracking, Path(tmp))
        reference = loaded.reference
        futures = score_beside.map(unmapped(loaded.path), unmapped(loaded.identity), inputs, unmapped(suffix),
                                   unmapped(probabilities), unmapped(reference), unmapped(tracking.monitoring))
        reports = [future.result() for future in futures]
        alarms = []
        for report in reports:
            log_report(tracker.runs, report, reference)
            print(report.line())
            print(report.drift.line())
            if feedback := record_scored_labels(tracker, loaded.path, report, tracking.monitoring):
                print(feedback.line())
                alarms.append(feedback.alarm)
    # after every file's feedback is recorded: a retraining the events start trains on all of it
    alarms += [batch_alarm(tracker, report.model, report.input, report.drift) for report in reports]
    for alarm in filter(None, alarms):
        announce(alarm)
        print(alarm.line())
    too_many = [r.input for r in reports if r.reject_fraction > max_reject_fraction]
    if too_many:
        raise TooManyRejected(f"more than {max_reject_fraction:.2%} of rows rejected in: {', '.join(too_many)}")
    return [r.as_dict() for r in reports]


def score_files(inputs: list[Path], dask_address: str | None = None, **options) -> list[dict]:
    """Run the scoring flow on threads (default) or on the Dask cluster at `dask_address` (prefect-dask;
    `flows.local_cluster` starts one on this machine): one task per file, so more workers score more files at once."""
    if not dask_address:
        return scoring_flow(inputs, **options)
    return scoring_flow.with_options(task_runner=dask_runner(dask_address))(inputs, **options)


def log_report(runs: RunLog, report: ScoreReport, reference: Reference | None) -> None:
    """One MLflow run per scored file: model identity, counts, throughput, and the drift check (each feature's PSI
    as a metric, the verdict as a tag, the report with its histograms and GX's data docs of the batch against the
    suite the model's reference implies as artifacts)."""
    drift = report.drift
    counts = {"rows_scored": report.scored, "rows_rejected": report.rejected,
              "reject_fraction": report.reject_fraction, "rows_per_second": report.rows_per_second}
    with runs.drift_run(f"score {Path(report.input).name}", "scoring",
                        {"input": report.input, "output": report.output, **report.model.params()}, drift,
                        counts) as run_id:
        if drift.features:
            with tempfile.TemporaryDirectory(prefix="digitpipe-drift-") as tmp:
                folder = write_drift_report(drift, report.input, Path(tmp))
                if reference is not None and reference.bounds:
                    checked = document_batch(Path(report.input), reference, folder / "data_docs")
                    runs.set_tags(run_id, {"batch_suite": "passed" if checked.success else "failed"})
                runs.log_artifacts(run_id, folder, "drift")
