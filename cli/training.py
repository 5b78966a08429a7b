"""`digitpipe run`: builds the run's configuration, starts what it needs beside the imports (the Prefect API, a
new store, a local Dask cluster), then calls the training flow."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.app import (
    ConfigOption,
    DataOption,
    ParamsOption,
    SeedOption,
    SetOption,
    SplitSeedOption,
    UnlockedOption,
    app,
    call_flow,
    show_stage_lines,
)
from cli.data import check_data_flag, fetch_mnist, not_an_input
from digitpipe.config import PipelineConfig, build, load_tracking_config
from digitpipe.errors import UserError
from digitpipe.runtime import core_share
from digitpipe.records.specs import MODEL_NAMES
from flows import startup


TaskRunnerOption = Annotated[str, typer.Option(help="local: one model at a time, all cores each; dask: the models "
                                                "on a Dask cluster, one process per model and at least two cores "
                                                "each (prefect-dask).")]
DaskAddressOption = Annotated[str | None, typer.Option(help="With --task-runner dask: a running Dask scheduler "
                                                            "(default: a local cluster).")]


@app.command()
def run(
    data: DataOption = None,
    models: Annotated[str, typer.Option(help="Comma-separated zoo models.")] = ",".join(MODEL_NAMES),
    epochs: Annotated[int | None, typer.Option(help="Every net's epoch count (--params and --set win).")] = None,
    stop_at_accuracy: Annotated[float | None, typer.Option(help="Stop a net at this validation accuracy.")] = None,
    patience: Annotated[int | None, typer.Option(help="Stop a net after N epochs of no better val loss.")] = None,
    sets: SetOption = None,
    params: ParamsOption = None,
    resume: Annotated[bool, typer.Option(help="Continue nets from an interrupted identical run.")] = False,
    force: Annotated[bool, typer.Option(help="Train every model, even one registered already with the same data, "
                                             "code and settings (its training key).")] = False,
    feedback: Annotated[bool, typer.Option(help="Also train on the labelled feedback in the store (a share of it "
                                                "is held out to judge the gate).")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars or comparison table.")] = False,
    seed: SeedOption = 42,
    split_seed: SplitSeedOption = None,
    protocol: Annotated[str, typer.Option(help="book: 75/25 of --data; standard: test on t10k.")] = "book",
    val_fraction: Annotated[float | None, typer.Option(help="Share of the training part kept for validation "
                                                             "(default 0.1).")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write a JSON summary here.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where ONNX files and pictures go.")] = Path("outputs"),
    task_runner: TaskRunnerOption = "local",
    dask_address: DaskAddressOption = None,
    verbose: Annotated[bool, typer.Option(help="Prefect's and MLflow's own log lines too.")] = False,
    unlocked_promotion: UnlockedOption = False,
    config: ConfigOption = None,
) -> None:
    """Validate, split, train, evaluate, export, register and promote: the whole training pipeline."""
    from flows.locks import lock_mode

    from digitpipe.files import output_file, output_folder

    if task_runner not in ("local", "dask"):
        raise UserError(f"--task-runner {task_runner!r}: expected local or dask")
    output_folder(out_dir, "--out")
    if summary is not None:  # said now, not after the whole run
        output_file(summary, "--summary")
        not_an_input(summary, "--summary", data, params, config)
    tracking = load_tracking_config(config)  # a missing or bad --config, then --data, before anything starts
    check_data_flag(data, protocol)
    names = tuple(m.strip() for m in models.split(",") if m.strip())
    dask_workers = _dask_workers(len(names), task_runner, dask_address)
    values = {"models": names, "epochs": epochs, "stop_at_accuracy": stop_at_accuracy, "patience": patience,
              "resume": resume, "force": force, "feedback": feedback, "seed": seed, "split_seed": split_seed, "protocol": protocol,
              "val_fraction": val_fraction, "summary": summary, "out_dir": out_dir,
              "progress": not quiet and task_runner == "local" and sys.stderr.isatty(),  # no bars from Dask workers
              "threads": max(1, core_share() // dask_workers) if dask_workers else None,
              "promotion_lock": lock_mode(unlocked_promotion),  # before a temporary Prefect API, which locks nothing
              **hyperparameters(sets, params, names)}  # a bad value fails before anything starts
    started = None  # with a local Dask cluster: waits for it and returns its address
    with startup.prefect_api() as api_url, contextlib.ExitStack() as cluster:  # a temporary API starts now, beside the imports
        show_stage_lines(verbose)
        values["tracking"] = tracking
        given = {k: v for k, v in values.items() if v is not None}
        build(PipelineConfig, {"data": Path(), **given}, source="command line")  # the flags, before any download
        cfg = build(PipelineConfig, {**given, "data": data or fetch_mnist(None, None)}, source="command line")
        if not cfg.data.exists():  # fail before Prefect and MLflow start up
            raise UserError(f"{cfg.data}: no such file or directory")
        if dask_workers:  # a local cluster starts now, its workers importing the tasks' libraries beside ours
            from flows import local_cluster

            started = cluster.enter_context(local_cluster(dask_workers, _worker_preload(names)))
        address = started() if started else dask_address
        result = call_flow(lambda: _training_flow(address), cfg.tracking.tracking_uri, api_url, cfg)
    if not quiet:
        from digitpipe.progress import print_comparison

        print_comparison(result)


def hyperparameters(sets: list[str] | None, params: Path | None, models: tuple[str, ...]) -> dict[str, object]:
    """The config's hyperparams (the params file's values, --set's winning), the file's tags and its study's split;
    a --set, or a whole params file, for no model that trains is refused."""
    from digitpipe import hyperparams

    given = hyperparams.read_params(params) if params else None
    by_set = hyperparams.parse_sets(sets or ())
    if stray := set(by_set) - set(models):
        raise UserError(f"--set names {', '.join(sorted(stray))}, which this command does not train "
                        f"({', '.join(models)})")
    if given and not set(given.values) & set(models):
        raise UserError(f"{params}: sets {', '.join(given.values)}, none of which this command trains "
                        f"({', '.join(models)})")
    return {"hyperparams": hyperparams.combine(given.values if given else {}, by_set),
            "params_tags": given.tags() if given else {}, "params_split": given.split if given else None}


def _training_flow(dask_address: str | None):
    from flows.training import with_runner

    return with_runner(dask_address)


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
    from digitpipe.records.specs import SPECS, LogRegSpec, NetSpec

    kinds = {type(SPECS.get(name)) for name in names}
    return (["flows.training", "mlflow", "digitpipe.export", "digitpipe.plots"]
            + (["torch", "torch.onnx"] if NetSpec in kinds else [])
            + (["digitpipe.baseline", "skl2onnx"] if LogRegSpec in kinds else []))
