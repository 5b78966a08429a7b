"""`digitpipe tune`: builds the study's configuration, then calls the tuning flow and prints its summary."""

from __future__ import annotations

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
    app,
    call_flow,
    show_stage_lines,
)
from cli.data import check_data_flag, fetch_mnist, not_an_input
from cli.training import hyperparameters
from digitpipe.config import SQLITE, TuneConfig, build, load_tracking_config, sqlite_file
from digitpipe.errors import UserError
from flows import startup


@app.command()
def tune(
    model: Annotated[str, typer.Option(help="The zoo model to tune.")],
    trials: Annotated[int, typer.Option(help="Finished (complete or pruned) trials the study should have, shared "
                                             "by every process on it.")],
    data: DataOption = None,
    timeout: Annotated[float | None, typer.Option(help="Stop this process's search after S seconds.")] = None,
    study: Annotated[str | None, typer.Option(help="Study name; an existing one resumes (default: the model's "
                                                   "name).")] = None,
    storage: Annotated[str | None, typer.Option(help="Study database (SQLAlchemy URL; PostgreSQL, "
                                                     "postgresql+psycopg://..., for several processes; default: "
                                                     "optuna.db beside a local MLflow store).")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the best values here, for `run --params`.")] = None,
    seeds: Annotated[int, typer.Option(help="Retrain the best trial with this many other training seeds "
                                            "(its spread; 0: none).")] = 3,
    epochs: Annotated[int | None, typer.Option(help="Every trial's epochs (a net's budget; default: its "
                                                    "spec's).")] = None,
    sets: SetOption = None,
    params: ParamsOption = None,
    prune: Annotated[bool, typer.Option(help="Stop unpromising trials early (Hyperband from 2 epochs).")] = True,
    objective: Annotated[str, typer.Option(help="robust: the mean of clean and perturbed validation accuracy; "
                                                "people: of those and the drawn and photographed validation "
                                                "digits; accuracy-time: robust and training seconds, two "
                                                "objectives, unpruned (the Pareto front).")] = "robust",
    threads: Annotated[int | None, typer.Option(help="Torch threads of this process (default: every core it may "
                                                     "use; two processes on one machine: give each half).")] = None,
    seed: SeedOption = 42,
    split_seed: SplitSeedOption = None,
    protocol: Annotated[str, typer.Option(help="book: 75/25 of --data; standard: validation from the 60k "
                                               "training set.")] = "book",
    quiet: Annotated[bool, typer.Option(help="No progress bar or summary table.")] = False,
    verbose: Annotated[bool, typer.Option(help="Prefect's and MLflow's own log lines too.")] = False,
    config: ConfigOption = None,
) -> None:
    """Search a zoo model's hyperparameters (Optuna) on the split's validation part, never its test part; write the
    best for `run --params`."""
    from digitpipe.files import output_file

    if epochs is not None and model == "logreg":
        raise UserError("--epochs: logreg has no epochs")
    if output is not None:  # said now, not after the whole study
        output_file(output, "--output")
        not_an_input(output, "--output", data, params, config)
    tracking = load_tracking_config(config)  # a missing or bad --config, then --data, before anything starts
    check_data_flag(data, protocol)
    given = hyperparameters(sets, params, (model,))
    base = {**({"epochs": epochs} if epochs is not None else {}), **given["hyperparams"].get(model, {})}
    with startup.prefect_api() as api_url:
        show_stage_lines(verbose)
        values = {"model": model, "trials": trials, "study": study or model, "storage": storage or default_storage(tracking.tracking_uri),
                  "timeout": timeout, "seeds": seeds, "seed": seed,
                  "split_seed": split_seed, "protocol": protocol, "prune": prune,
                  "objective": objective,
                  "threads": threads, "base": base, "base_tags": given["params_tags"].get(model, {}), "output": output,
                  "progress": not quiet and sys.stderr.isatty(), "tracking": tracking}
        given = {k: v for k, v in values.items() if v is not None}
        build(TuneConfig, {"data": Path(), **given}, source="command line")  # the flags, before any download
        cfg = build(TuneConfig, {**given, "data": data or fetch_mnist(None, None)}, source="command line")
        if not cfg.data.exists():
            raise UserError(f"{cfg.data}: no such file or directory")
        summary = call_flow(_tuning_flow, tracking.tracking_uri, api_url, cfg)
    if not quiet:
        from digitpipe.progress import print_study

        print_study(summary, cfg.output)


def _tuning_flow():
    from flows.tuning_flow import tuning_flow

    return tuning_flow


def default_storage(tracking_uri: str) -> str:
    """optuna.db beside a local sqlite MLflow store, else in the working directory."""
    store = sqlite_file(tracking_uri)
    return f"{SQLITE}{(store.parent if store else Path()) / 'optuna.db'}"
