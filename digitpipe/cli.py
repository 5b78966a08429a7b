"""The `digitpipe` command line (Typer): run the pipeline, validate data."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from digitpipe.config import PipelineConfig, build, load_tracking_config
from digitpipe.errors import UserError

app = typer.Typer(help="Handwritten-digit pipeline: MNIST to a registered ONNX champion.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

ConfigOption = Annotated[Path, typer.Option("--config", help="Tracking and promotion settings (YAML).")]


@app.command()
def run(
    data: Annotated[Path, typer.Option(help="IDX folder or file, or Kaggle CSV.")],
    models: Annotated[str, typer.Option(help="Comma-separated zoo models.")] = "logreg,lenet",
    epochs: Annotated[int | None, typer.Option(help="Override every net's epoch count.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split and training.")] = 42,
    summary: Annotated[Path | None, typer.Option(help="Write a JSON summary here.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where ONNX files and pictures go.")] = Path("outputs"),
    config: ConfigOption = Path("mlflow.yaml"),
) -> None:
    """Validate, split, train, evaluate, export, register and promote: the whole training pipeline."""
    cfg = build(PipelineConfig, {
        "data": data, "models": tuple(m.strip() for m in models.split(",") if m.strip()), "epochs": epochs,
        "seed": seed, "summary": summary, "out_dir": out_dir, "tracking": load_tracking_config(config),
    }, source="command line")
    if not cfg.data.exists():  # fail before Prefect and MLflow start up
        raise UserError(f"{cfg.data}: no such file or directory")
    # The CLI is the composition root: the one place the library reaches up to the orchestration layer.
    from flows.training import training_flow

    training_flow(cfg)


@app.command()
def validate(
    data: Annotated[Path, typer.Option(help="IDX folder or file, or Kaggle CSV.")],
    min_rows: Annotated[int, typer.Option(help="Fewest rows accepted.")] = 100,
) -> None:
    """Check a dataset against the expectation suite; exit 0 valid, 1 failed expectations, 2 unreadable."""
    from digitpipe.data import load_dataset
    from digitpipe.validation import validate as run_suite

    report = run_suite(load_dataset(data), min_rows)
    typer.echo(report.text())
    raise typer.Exit(0 if report.success else 1)


class _DropUserErrorRecords(logging.Filter):
    """Prefect logs a task's exception with its traceback; for user errors the CLI's one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], UserError))


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    # Prefect's throwaway local API migrates a sqlite db on first start: give it longer than the 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_DropUserErrorRecords())
    try:
        app(standalone_mode=False)
    except UserError as exc:
        print(f"digitpipe: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # bad flags: click's own one-line usage error
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("digitpipe: aborted", file=sys.stderr)
        sys.exit(130)
