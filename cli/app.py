"""The command line's shell: the Typer app, the options several commands share, and how a command ends (user
errors as one line on stderr and a non-zero exit, usage errors as click's usage message, exit 2)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from digitpipe import interrupts
from digitpipe.errors import UserError
from flows import startup

app = typer.Typer(help="Handwritten-digit pipeline: MNIST to a registered ONNX champion.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="Tracking and promotion settings (YAML; default: ./mlflow.yaml where there is one, else the "
                     "built-in defaults).")]
DataOption = Annotated[Path | None, typer.Option(
    help="IDX folder or file, Kaggle CSV, Parquet file or PNG folder (default: MNIST in the user cache, fetched if "
         "missing).")]
SeedOption = Annotated[int, typer.Option(help="Seed for the split and training.")]
SplitSeedOption = Annotated[int | None, typer.Option(help="Seed for the split alone (default: --seed).")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="A hyperparameter, MODEL.FIELD=VALUE (e.g. fastcnn.lr=3e-3); repeatable; wins over --params and "
                  "--epochs.")]
ParamsOption = Annotated[Path | None, typer.Option(
    "--params", help="Hyperparameters from a YAML file (what `digitpipe tune --output` writes).")]
UnlockedOption = Annotated[bool, typer.Option(help="With a remote MLflow store and no Prefect server to lock it: "
                                                   "promote anyway, accepting that promotions from several workers "
                                                   "may interleave.")]


data_app = typer.Typer(help="Get data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
monitor_app = typer.Typer(help="The drift monitor of scored batches.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged, not when the handler was made: a process that runs
    several commands (the tests, through run_cli) may swap stderr in between."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _ignored) -> None:
        pass


def show_stage_lines(verbose: bool) -> None:
    """The pipeline's own stage lines on stderr; Prefect's per-task lines and MLflow's chatter only with --verbose."""
    stage_log = logging.getLogger("digitpipe")
    if not stage_log.handlers:  # once per process (tests run several commands in one)
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        stage_log.addHandler(handler)
    stage_log.setLevel(logging.INFO)
    stage_log.propagate = False
    startup.set_environment(quiet=not verbose)


class _DropUserErrorRecords(logging.Filter):
    """Prefect logs a task's exception with its traceback, then the task's final state; for user errors and
    interrupts the CLI's one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if interrupts.asked():  # "Crash detected! Execution was aborted by an interrupt signal." per task and flow
            return record.levelno < logging.ERROR
        if record.exc_info:
            return not isinstance(record.exc_info[1], UserError) and refused_write(record.exc_info[1]) is None
        message = record.getMessage()  # "Finished in state Failed('Task run encountered an exception DataError: ...')"
        return not any(f"exception {name}: " in message for name in _subclass_names(UserError))


def refused_write(exc: BaseException) -> UserError | None:
    """`exc` as one line where the file system or a local MLflow store refused a write (read-only, full, not
    permitted), naming the file or the store; None for any other error."""
    from digitpipe import files

    tracking = sys.modules.get("digitpipe.tracking")  # loaded where a store was opened; never imported here
    return (tracking.refused_write(exc) if tracking else None) or files.refused_write(exc)


def _subclass_names(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_subclass_names(sub) for sub in cls.__subclasses__()))


def call_flow(load_flow: Callable[[], Callable], tracking_uri: str, api_url: str | None, *args):
    """A new local store created beside the flow's imports (`load_flow` imports it: seconds), then the flow called
    once the Prefect API answers and the store is ready."""
    store = startup.prepare_store(tracking_uri)
    flow = load_flow()
    startup.wait_until_ready(api_url)
    if store is not None:
        store.wait()
    return flow(*args)


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    startup.exit_now(run_cli())


def run_cli() -> int:
    """Run the command named by sys.argv; returns its exit code (what tests call instead of `main`)."""
    startup.set_environment()
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_DropUserErrorRecords())
    stops: list[interrupts.Interrupted] = []
    try:
        with interrupts.stoppable() as stops:
            code = app(standalone_mode=False, prog_name="digitpipe")  # the code of a typer.Exit raised by a command
    except BaseException as exc:
        if not stops:  # a stop asked for wins over whatever its clean-up raised
            return _failed(exc)
    if stops:  # typer turns a KeyboardInterrupt into a silent exit 130, whatever the signal
        print(stops[0].line, file=sys.stderr)
        return stops[0].exit_code
    return code if isinstance(code, int) else 0



def _failed(exc: BaseException) -> int:
    """How a command that raised ends: user errors as one line, usage errors as click's usage message."""
    if isinstance(exc, UserError):
        print(f"digitpipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, typer.TyperException):  # typer's own copy of click's usage error
        exc.show()
        return exc.exit_code
    if isinstance(exc, (typer.Abort, KeyboardInterrupt)):  # an answer that never came (EOF at a prompt)
        print("digitpipe: aborted", file=sys.stderr)
        return 130
    if isinstance(exc, Exception) and (refused := refused_write(exc)) is not None:  # a write the disk refused
        print(f"digitpipe: error: {refused}", file=sys.stderr)  # where nothing nearer said so (MLflow's own)
        return refused.exit_code
    raise exc
