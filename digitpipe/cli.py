"""The `digitpipe` command line (Typer): run, validate, eda, score, export, models, promote, data fetch,
monitor reference, feedback.

Each command imports only what its work needs (heavy libraries are imported inside the commands), so `--help`
answers at once and `score` with an ONNX file never loads torch, MLflow or Prefect (tests/code/test_imports.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from digitpipe.config import PipelineConfig, TrackingConfig, build, load_tracking_config
from digitpipe.errors import DataError, TooManyRejected, UserError
from digitpipe.runtime import core_share
from digitpipe.zoo import MODEL_NAMES

app = typer.Typer(help="Handwritten-digit pipeline: MNIST to a registered ONNX champion.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="Tracking and promotion settings (YAML; default: ./mlflow.yaml where there is one, else the "
                     "built-in defaults).")]
UnlockedOption = Annotated[bool, typer.Option(help="With a remote MLflow store and no Prefect server to lock it: "
                                                   "promote anyway, accepting that promotions from several workers "
                                                   "may interleave.")]


data_app = typer.Typer(help="Get data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
monitor_app = typer.Typer(help="The drift monitor of scored batches.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


@data_app.command("fetch")
def data_fetch(
    dest: Annotated[Path | None, typer.Option(help="Folder to fill (default: the user cache).")] = None,
    mirror: Annotated[list[str] | None, typer.Option(help="Mirror base URL, tried in order (repeatable).")] = None,
) -> None:
    """Download the four canonical MNIST files, verified by MD5; files already cached and valid are skipped."""
    typer.echo(f"MNIST is in {_fetch(dest, mirror)}")


def _fetch(dest: Path | None, mirrors: list[str] | None) -> Path:
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress

    from digitpipe.data.fetch import DEFAULT_MIRRORS, fetch

    with Progress(*Progress.get_default_columns(), DownloadColumn(), console=Console(stderr=True),
                  transient=True, disable=not sys.stderr.isatty()) as bar:
        tasks: dict[str, object] = {}

        def show(name: str, done: int, total: int | None) -> None:
            task = tasks.setdefault(name, bar.add_task(name, total=total))
            bar.update(task, completed=done)

        return fetch(dest, mirrors or DEFAULT_MIRRORS, progress=show)


@app.command()
def run(
    data: Annotated[Path | None, typer.Option(help="IDX folder or file, or Kaggle CSV (default: MNIST in the "
                                                   "user cache, fetched if missing).")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated zoo models.")] = ",".join(MODEL_NAMES),
    epochs: Annotated[int | None, typer.Option(help="Override every net's epoch count.")] = None,
    stop_at_accuracy: Annotated[float | None, typer.Option(help="Stop a net at this validation accuracy.")] = None,
    patience: Annotated[int | None, typer.Option(help="Stop a net after N epochs of no better val loss.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue nets from an interrupted identical run.")] = False,
    feedback: Annotated[bool, typer.Option(help="Also train on the labelled feedback in the store (a share of it "
                                                "is held out to judge the gate).")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars or comparison table.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the split and training.")] = 42,
    protocol: Annotated[str, typer.Option(help="book: 75/25 of --data; standard: test on t10k.")] = "book",
    val_fraction: Annotated[float | None, typer.Option(help="Share of the training part kept for validation "
                                                             "(default 0.1).")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write a JSON summary here.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where ONNX files and pictures go.")] = Path("outputs"),
    task_runner: Annotated[str, typer.Option(help="local: one model at a time, all cores each; dask: the models "
                                                  "on a Dask cluster, one process per model and at least two "
                                                  "cores each (prefect-dask).")] = "local",
    dask_address: Annotated[str | None, typer.Option(help="With --task-runner dask: a running Dask scheduler "
                                                           "(default: a local cluster).")] = None,
    verbose: Annotated[bool, typer.Option(help="Prefect's and MLflow's own log lines too.")] = False,
    unlocked_promotion: UnlockedOption = False,
    config: ConfigOption = None,
) -> None:
    """Validate, split, train, evaluate, export, register and promote: the whole training pipeline."""
    from flows.api import prefect_api, wait_until_ready
    from flows.locks import lock_mode

    if task_runner not in ("local", "dask"):
        raise UserError(f"--task-runner {task_runner!r}: expected local or dask")
    promotion_lock = lock_mode(unlocked_promotion)  # before a temporary Prefect API, which would lock nothing
    names = tuple(m.strip() for m in models.split(",") if m.strip())
    dask_workers = _dask_workers(len(names), task_runner, dask_address)
    started = None  # with a local Dask cluster: waits for it and returns its address
    with prefect_api() as api_url, contextlib.ExitStack() as cluster:  # a temporary API starts now, beside the imports
        _quiet_orchestration_logs(verbose)
        data = data or _fetch(None, None)
        values = {
            "data": data, "models": names, "epochs": epochs,
            "stop_at_accuracy": stop_at_accuracy, "patience": patience, "resume": resume, "seed": seed,
            "feedback": feedback,
            "val_fraction": val_fraction, "protocol": protocol, "summary": summary, "out_dir": out_dir,
            "progress": not quiet and task_runner == "local" and sys.stderr.isatty(),  # no bars from Dask workers
            "threads": max(1, core_share() // dask_workers) if dask_workers else None,
            "tracking": load_tracking_config(config), "promotion_lock": promotion_lock,
        }
        cfg = build(PipelineConfig, {k: v for k, v in values.items() if v is not None}, source="command line")
        if not cfg.data.exists():  # fail before Prefect and MLflow start up
            raise UserError(f"{cfg.data}: no such file or directory")
        if dask_workers:  # a local cluster starts now, its workers importing the tasks' libraries beside ours
            from flows import local_cluster

            started = cluster.enter_context(local_cluster(dask_workers, _worker_preload(names)))
        store = _prepare_store(cfg.tracking.tracking_uri)
        # The CLI is the composition root: the one place the library reaches up to the orchestration layer.
        from flows.training import with_runner

        wait_until_ready(api_url)
        if store is not None:
            store.wait()
        result = with_runner(started() if started else dask_address)(cfg)
    if not quiet:
        from digitpipe.progress import print_comparison

        print_comparison(result)


def _prepare_store(uri: str) -> subprocess.Popen | None:
    """A new local sqlite store is created (its migrations take seconds) by a subprocess beside this one's imports."""
    if not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists():
        return None
    return subprocess.Popen([sys.executable, "-m", "digitpipe.tracking", uri], stdout=subprocess.DEVNULL,
                            env={**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING"})


NET_CORES = 2  # the fewest cores a net trains on: on 2 cores one LeNet takes 1.7x as long on 1 thread as on 2


def _dask_workers(models: int, task_runner: str, dask_address: str | None) -> int:
    """Processes of a local Dask cluster: one per model, each with at least NET_CORES cores (0: no local cluster).
    Two one-thread nets at once on 2 cores train only ~10% more per second than one after the other on both, and
    the net that dominates a run then takes 1.7x as long (bench/README.md): splitting too few cores loses."""
    if task_runner != "dask" or dask_address:
        return 0
    return max(1, min(models, core_share() // NET_CORES))


def _worker_preload(names: tuple[str, ...]) -> list[str]:
    """What a local Dask worker imports as it starts: the libraries a model's task uses (~6 s of imports that would
    otherwise come after the data is split), scikit-learn's for the baseline and torch's for nets."""
    from digitpipe.zoo import SPECS, LogRegSpec, NetSpec

    kinds = {type(SPECS.get(name)) for name in names}
    return (["flows.training", "mlflow", "digitpipe.export", "digitpipe.plots"]
            + (["torch", "torch.onnx"] if NetSpec in kinds else [])
            + (["digitpipe.baseline", "skl2onnx"] if LogRegSpec in kinds else []))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged, not when the handler was made: a process that runs
    several commands (the tests, through run_cli) may swap stderr in between."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _ignored) -> None:
        pass


def _quiet_orchestration_logs(verbose: bool) -> None:
    """The CLI's own stage lines on stderr; Prefect's per-task lines and MLflow's chatter only with --verbose."""
    stage_log = logging.getLogger("digitpipe")
    if not stage_log.handlers:  # once per process (tests run several commands in one)
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        stage_log.addHandler(handler)
    stage_log.setLevel(logging.INFO)
    stage_log.propagate = False
    if not verbose:  # read by Prefect and MLflow when they configure their logging on import
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # a local cluster's start and stop lines


@app.command()
def promote(
    version: Annotated[str | None, typer.Option(help="Make this version the champion by hand (recorded).")] = None,
    rollback: Annotated[bool, typer.Option(help="Swap champion and previous_champion back.")] = False,
    unlocked_promotion: UnlockedOption = False,
    config: ConfigOption = None,
) -> None:
    """Move the champion alias by hand: to --version N, or back to the previous champion with --rollback."""
    from digitpipe import promotion
    from digitpipe.tracking import tracker_for
    from flows.locks import PromotionLock, lock_mode

    if (version is None) == (not rollback):
        raise UserError("give exactly one of --version N or --rollback")
    tracking = load_tracking_config(config)
    registry = tracker_for(tracking, PromotionLock(tracking, lock_mode(unlocked_promotion)), create=False).registry
    cfg = registry.cfg
    if rollback:
        restored, demoted = promotion.rollback(registry)
        typer.echo(f"{cfg.registered_model}: {cfg.champion_alias} -> v{restored}, {cfg.previous_alias} -> v{demoted}")
    else:
        verdict = promotion.promote_by_hand(registry, version)
        typer.echo(f"{cfg.registered_model}: {cfg.champion_alias} -> v{version} ({verdict.reason})")


@app.command()
def models(config: ConfigOption = None) -> None:
    """The registered model's versions: aliases, held-out accuracy, and the promotion verdict of each."""
    from digitpipe.progress import print_versions
    from digitpipe.tracking import tracker_for

    registry = tracker_for(load_tracking_config(config), create=False).registry
    print_versions(registry.cfg.registered_model, registry.versions())


@app.command()
def validate(
    data: Annotated[Path, typer.Option(help="IDX folder or file, Kaggle CSV, Parquet or PNG folder.")],
    min_rows: Annotated[int, typer.Option(help="Fewest rows accepted.")] = 100,
) -> None:
    """Check a dataset against the expectation suite; exit 0 valid, 1 failed expectations, 2 unreadable.
    An IDX folder with both the train and the t10k pair has both checked."""
    from digitpipe.data import load_dataset
    from digitpipe.data.readers import idx_parts
    from digitpipe.validation import validate as check

    passed = True
    for part in (idx_parts(data) if data.is_dir() else []) or [None]:  # a PNG or empty folder: read as `run` does
        dataset = load_dataset(data, part)
        report = check(dataset, min_rows)
        typer.echo(f"{dataset.source}: {len(dataset):,} images\n{report.text()}")
        passed &= report.success
    raise typer.Exit(0 if passed else 1)


@app.command()
def eda(
    data: Annotated[Path, typer.Option(help="IDX folder or file, Kaggle CSV, Parquet or PNG folder.")],
    out: Annotated[Path, typer.Option(help="Folder for the pictures, summary.json and report.html.")] = Path("eda"),
) -> None:
    """The book's exploration: dimensions, label counts, pixel range, sample digits, centre-pixel histograms."""
    from digitpipe.data import load_dataset
    from digitpipe.eda import write_report

    typer.echo(f"wrote {write_report(load_dataset(data), out)}")


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

    from digitpipe.data.readers import find_idx_pair, idx_parts
    from digitpipe.monitor import Reference, registered_reference
    from digitpipe.scorer import OnnxScorer
    from digitpipe.scoring import score_file

    tracking = load_tracking_config(config)
    if not input.exists():
        raise UserError(f"{input}: no such file or directory")
    if input.is_dir() and idx_parts(input):
        typer.echo(f"reading {find_idx_pair(input)[0]}", err=True)  # which pair of the folder is scored
    if reference is not None and not reference.is_file():
        raise UserError(f"{reference}: no such reference file")
    with tempfile.TemporaryDirectory(prefix="digitpipe-model-") as tmp:
        registry, path, identity = _resolve_model(model, Path(tmp), tracking)
        scorer = OnnxScorer(path, batch_size)
        if reference is not None:
            baseline = Reference.load(reference)  # named by the user: a bad file is their error
        else:
            baseline = registered_reference(registry and registry.monitor_reference(identity, Path(tmp) / "ref"))
        with _progress(input) as advance:
            report = score_file(scorer, input, output, identity, probabilities, advance, reference=baseline,
                                thresholds=tracking.monitoring)
    typer.echo(report.line())
    typer.echo(report.drift_line())
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

    from digitpipe.feedback import join_labels
    from digitpipe.loop import record_feedback
    from digitpipe.tracking import tracker_for

    tracking = load_tracking_config(config)
    model = model or f"models:/{tracking.registered_model}@{tracking.champion_alias}"
    if not model.startswith(f"models:/{tracking.registered_model}"):
        raise UserError(f"--model {model}: expected a version of {tracking.registered_model} (the registered model of "
                        f"{tracking.config_file}), as models:/{tracking.registered_model}@ALIAS or .../VERSION")
    labelled, skipped = join_labels(input, labels)
    tracker = tracker_for(tracking, create=False)
    with tempfile.TemporaryDirectory(prefix="digitpipe-model-") as tmp:
        path, identity = tracker.registry.resolve(model, Path(tmp))  # int8 where accepted, as `score` uses it
        result = record_feedback(tracker, labelled, path, identity, tracking.monitoring)
    typer.echo(result.line() + (f"; {skipped:,} labels name rows the file rejected (skipped)" if skipped else ""))
    if result.alarm:
        typer.echo(result.alarm.line())
        _announce(result.alarm)


def _announce(alarm) -> None:
    """Send an alarm as a Prefect event where a Prefect server is configured (its automations react to it)."""
    from flows.api import configured_api_url

    if not (api := configured_api_url()):
        typer.echo("no Prefect server configured (PREFECT_API_URL): the event was not sent")
        return
    from flows.events import announce

    announce(alarm, flush=True)
    typer.echo(f"sent Prefect event {alarm.event} to {api}")


@app.command()
def export(
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a .onnx file.")],
    output: Annotated[Path, typer.Option(help="Where to write the ONNX file.")],
    quantize: Annotated[bool, typer.Option(help="Static QDQ int8, kept only if held-out accuracy holds.")] = False,
    data: Annotated[Path | None, typer.Option(
        help="Labelled data: calibration (train part), check (held-out part). A registry model's training run "
             "names its own; --data replaces it only if it reproduces the recorded split.")] = None,
    protocol: Annotated[str | None, typer.Option(help="With a .onnx file: book or standard, the split to check on.")]
    = None,
    seed: Annotated[int | None, typer.Option(help="With a .onnx file: the seed of the split to check on.")] = None,
    max_drop: Annotated[float, typer.Option(help="Largest accepted accuracy drop, as a fraction.")] = 0.001,
    config: ConfigOption = None,
) -> None:
    """Write a model's ONNX file; with --quantize, an int8 version, recorded in the registry with its verdict."""
    import shutil
    import tempfile

    tracking = load_tracking_config(config)
    with tempfile.TemporaryDirectory(prefix="digitpipe-model-") as tmp:
        registry, path, identity = _resolve_model(model, Path(tmp), tracking, prefer_int8=False)
        if not quantize:
            shutil.copyfile(path, output)
            typer.echo(f"wrote {output}")
            return
        from digitpipe.export import quantize_checked

        split, made_from = _training_split(registry, identity, data, protocol, seed)
        checked_on = f"checked on the held-out part of {made_from}"
        result = quantize_checked(path, split.train.images[:1024], split.test, output, max_drop)
    if registry is not None:
        registry.record_quantization(identity, result, checked_on)
    typer.echo(f"{result.reason()}, {checked_on}" + (f" -> {output}" if result.accepted else ""))
    if not result.accepted:
        raise typer.Exit(1)


@monitor_app.command("reference")
def monitor_reference(
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a .onnx file.")],
    data: Annotated[Path | None, typer.Option(
        help="Its training data: a registry version's run names its own (--data only where it moved).")] = None,
    protocol: Annotated[str | None, typer.Option(help="With a .onnx file: book or standard.")] = None,
    seed: Annotated[int | None, typer.Option(help="With a .onnx file: the split's seed.")] = None,
    output: Annotated[Path | None, typer.Option(help="With a .onnx file: where to write the reference.")] = None,
    config: ConfigOption = None,
) -> None:
    """Build a model's drift reference from the split it was trained on: for versions registered before digitpipe
    recorded references (logged on the version's run), or a .onnx file (written to --output)."""
    import shutil
    import tempfile

    from digitpipe.monitor import build_reference
    from digitpipe.pipeline import write_monitor_reference

    tracking = load_tracking_config(config)
    with tempfile.TemporaryDirectory(prefix="digitpipe-model-") as tmp:
        registry, path, identity = _resolve_model(model, Path(tmp), tracking, prefer_int8=False)
        if registry is None and output is None:
            raise UserError("a .onnx file has no run to record its reference on: give --output")
        try:
            split, made_from = _training_split(registry, identity, data, protocol, seed)
        except DataError as exc:
            raise UserError(f"no reference for {model}: {exc}") from None
        written = write_monitor_reference(path, build_reference(split.train.images), split.test, Path(tmp))
        if registry is None:
            typer.echo(f"wrote {shutil.copyfile(written, output)} (from {made_from})")
            return
        registry.record_monitor_reference(identity, written)
    typer.echo(f"recorded the drift reference of {model} on its run (from {made_from})")


def _training_split(registry, identity: dict, data: Path | None, protocol: str | None, seed: int | None):
    """The split a model was trained on, rebuilt, and a phrase saying which: a registry version's own (its run's
    recipe, checked against the recorded digests), else the one the user names for a .onnx file."""
    from digitpipe.data import SplitRecipe

    if registry is None:
        if data is None or protocol is None or seed is None:
            raise UserError("a .onnx file has no training run to rebuild its split from: give --data, --protocol "
                            "and --seed")
        if protocol not in ("book", "standard"):
            raise UserError(f"--protocol {protocol!r}: expected book or standard")
        return SplitRecipe(data, protocol, seed).rebuild(), f"the split named ({protocol}, seed {seed})"
    if protocol is not None or seed is not None:
        raise UserError(f"{identity['uri']} is checked on its training run's split: leave out --protocol and --seed")
    recipe = registry.training_split(identity["registered_model"], identity["version"])
    if data is not None:
        recipe = dataclasses.replace(recipe, data=data)
    return recipe.rebuild(), f"its training run's split ({recipe.protocol}, seed {recipe.seed})"


def _resolve_model(model: str, tmp: Path, tracking: TrackingConfig, prefer_int8: bool = True):
    """(registry or None, local ONNX path, identity) for a registry URI or a file."""
    if model.startswith("models:/"):
        from digitpipe.tracking import tracker_for

        registry = tracker_for(tracking, create=False).registry
        return (registry, *registry.resolve(model, tmp, prefer_int8))
    path = Path(model)
    if not path.is_file():
        raise UserError(f"{model}: no such model file (expected a .onnx file or models:/NAME@ALIAS)")
    return None, path, {"uri": str(path.resolve())}


@contextlib.contextmanager
def _progress(input: Path):
    """A rows-scored progress bar on an interactive terminal; silent in logs and CI."""
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(f"scoring {input.name}", total=None)
        yield lambda rows: bar.advance(task, rows)


class _DropUserErrorRecords(logging.Filter):
    """Prefect logs a task's exception with its traceback, then the task's final state; for user errors the CLI's
    one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return not isinstance(record.exc_info[1], UserError)
        message = record.getMessage()  # "Finished in state Failed('Task run encountered an exception DataError: ...')"
        return not any(f"exception {name}: " in message for name in _subclass_names(UserError))


def _subclass_names(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_subclass_names(sub) for sub in cls.__subclasses__()))


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    _exit_now(run_cli())


def run_cli() -> int:
    """Run the command named by sys.argv; returns its exit code (what tests call instead of `main`)."""
    # Prefect's throwaway local API migrates a sqlite db on first start: give it longer than the 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # MLflow retries HTTP calls with backoff; its defaults wait minutes on a dead server, these a few seconds.
    for key, value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}.items():
        os.environ.setdefault(key, value)
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_DropUserErrorRecords())
    try:
        code = app(standalone_mode=False, prog_name="digitpipe")  # the code of a typer.Exit raised by a command
    except UserError as exc:
        print(f"digitpipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except typer.TyperException as exc:  # a usage error (typer's own copy of click's): its short usage message
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("digitpipe: aborted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


def _exit_now(code: int) -> None:
    """Exit after the atexit handlers, skipping the interpreter's teardown of every module: with Prefect, MLflow
    and great-expectations loaded that teardown alone takes ~1.7 s here and does nothing a user needs."""
    import atexit

    atexit._run_exitfuncs()  # CPython's own exit handlers (Prefect's log drain, temporary files)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
