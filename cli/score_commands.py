"""Commands of the loop in the field: score a file, record the labels that arrived for it."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.app import ConfigOption, app
from digitpipe.config import load_tracking_config
from digitpipe.errors import TooManyRejected, UserError


@app.command()
def score(
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a .onnx file.")],
    input: Annotated[Path, typer.Option("--input", help="Kaggle CSV (with or without labels), IDX, or Parquet.")],
    output: Annotated[Path, typer.Option(help="Predictions: .csv (Kaggle submission format) or .parquet.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per onnxruntime call.")] = 4096,
    probabilities: Annotated[bool, typer.Option(help="Add prob_0..prob_9 columns.")] = False,
    max_reject_fraction: Annotated[float, typer.Option(min=0, max=1, help="Exit 1 above this share of bad rows.")] = 0.01,
    reference: Annotated[Path | None, typer.Option(
        help="With a .onnx file: its monitor_reference.json, for the drift check (a registry model has its own).")]
    = None,
    config: ConfigOption = None,
) -> None:
    """Score a file with an ONNX model on onnxruntime, streaming; bad rows go to OUTPUT.rejects.csv. The batch is
    checked for drift against the model's training data (a signal: the scores are written either way)."""
    import tempfile

    from digitpipe.batch_scoring import checked_outputs, score_file
    from digitpipe.data.formats import check_readable, find_idx_pair, idx_parts
    from digitpipe.model_loading import load_model

    tracking = load_tracking_config(config)
    check_readable(input)  # a missing or unreadable input is said before a registered model is downloaded
    if input.is_dir() and idx_parts(input):
        typer.echo(f"reading {find_idx_pair(input)[0]}", err=True)  # which pair of the folder is scored
    if reference is not None and not reference.is_file():
        raise UserError(f"{reference}: no such reference file")
    read = [path for path in (Path(model), reference, config or Path("mlflow.yaml")) if path and Path(path).is_file()]
    checked_outputs(input, output, read)  # before the model is loaded: nothing read is replaced by predictions
    with tempfile.TemporaryDirectory(prefix="digitpipe-model-") as tmp:
        loaded = load_model(model, tracking, Path(tmp), reference=reference)
        with _progress(input) as advance:
            report = score_file(loaded.scorer(batch_size), input, output, loaded.identity, probabilities, advance,
                                reference=loaded.reference, thresholds=tracking.monitoring)
    typer.echo(report.line())
    typer.echo(report.drift.line())
    if report.rejected:
        typer.echo(f"{report.rejected:,} rejected rows with reasons -> {report.rejects_file}", err=True)
    if report.reject_fraction > max_reject_fraction:
        raise TooManyRejected(f"{input}: {report.reject_fraction:.2%} of rows rejected, above the allowed "
                        f"{max_reject_fraction:.2%} (see {report.rejects_file})")


@app.command()
def feedback(
    input: Annotated[Path, typer.Option("--input", help="The scored file: Kaggle CSV, IDX or Parquet (its pixels).")],
    labels: Annotated[Path, typer.Option(help="CSV ImageId,Label: the true digit of scored rows (ImageId: the "
                                              "row's number in the scored file, as in its predictions).")],
    model: Annotated[str | None, typer.Option(help="The model that scored it, as `score` was given it: "
                                                   "models:/NAME@ALIAS or models:/NAME/VERSION (default: the "
                                                   "configured model's champion).")] = None,
    config: ConfigOption = None,
) -> None:
    """Record labels that arrived for a scored file: the model's live accuracy on them, and the labelled digits
    kept in the store for retraining (`run --feedback`). Below the accuracy floor of mlflow.yaml's monitoring
    section, an alarm is recorded on the version, and sent as a Prefect event where a Prefect server is configured."""
    import tempfile

    from digitpipe.model_loading import load_model
    from digitpipe.monitoring.alarms import record_feedback
    from digitpipe.monitoring.feedback import join_labels
    from digitpipe.tracking import tracker_for

    tracking = load_tracking_config(config)
    model = model or f"models:/{tracking.registered_model}@{tracking.champion_alias}"
    if not model.startswith(f"models:/{tracking.registered_model}"):
        raise UserError(f"--model {model}: expected a version of {tracking.registered_model} (the registered model of "
                        f"{tracking.config_file}), as models:/{tracking.registered_model}@ALIAS or .../VERSION")
    labelled, skipped = join_labels(input, labels)
    tracker = tracker_for(tracking, create=False)
    with tempfile.TemporaryDirectory(prefix="digitpipe-model-") as tmp:
        loaded = load_model(model, tracking, Path(tmp), drift=False)  # int8 where accepted, as `score` uses it
        result = record_feedback(tracker, labelled, loaded.path, loaded.identity, tracking.monitoring)
    typer.echo(result.line() + (f"; {skipped:,} labels name rows the file rejected (skipped)" if skipped else ""))
    if result.alarm:
        typer.echo(result.alarm.line())
        _announce(result.alarm)


def _announce(alarm) -> None:
    """Send an alarm as a Prefect event where a Prefect server is configured (its automations react to it)."""
    from flows.startup import configured_api_url

    if not (api := configured_api_url()):
        typer.echo("no Prefect server configured (PREFECT_API_URL): the event was not sent")
        return
    from flows.events import announce

    announce(alarm, flush=True)
    typer.echo(f"sent Prefect event {alarm.event} to {api}")


@contextlib.contextmanager
def _progress(input: Path):
    """A rows-scored progress bar on an interactive terminal; silent in logs and CI."""
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"scoring {input.name}", total=None)
        yield lambda rows: bar.advance(task, rows)
