"""Commands on data: fetch MNIST, validate a dataset, explore it as the book does."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.app import app, data_app
from digitpipe.errors import UserError


def check_data_flag(data: Path | None, protocol: str) -> None:
    """--data no reader could read, or --protocol standard without its test files, said before any work (the
    Prefect API, a download): a few bytes of the file are read, its rows when the work needs them."""
    if data is None:  # MNIST, fetched with both of its parts
        return
    from digitpipe.data.formats import check_protocol, check_readable

    check_readable(data, "train" if protocol == "standard" else None)
    check_protocol(data, protocol)


def not_an_input(output: Path, flag: str, *inputs: Path | None) -> None:
    """Refuse an output file that is one of the command's inputs, or a file already in an input folder: writing it
    would replace what the user gave (said before any work)."""
    target = output.resolve()
    for given in filter(None, inputs):
        source = given.resolve()
        if target == source or (output.exists() and source.is_dir() and target.is_relative_to(source)):
            raise UserError(f"{flag} {output}: writing it would replace the input {given}; choose another name")


@data_app.command("fetch")
def datafetch_mnist(
    dest: Annotated[Path | None, typer.Option(help="Folder to fill (default: the user cache).")] = None,
    mirror: Annotated[list[str] | None, typer.Option(help="Mirror base URL, tried in order (repeatable).")] = None,
) -> None:
    """Download the four canonical MNIST files, verified by MD5; files already cached and valid are skipped."""
    typer.echo(f"MNIST is in {fetch_mnist(dest, mirror)}")


def fetch_mnist(dest: Path | None, mirrors: list[str] | None) -> Path:
    """MNIST's four files into `dest` (default: the user cache), with a download bar on a terminal."""
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
def validate(
    data: Annotated[Path, typer.Option(help="IDX folder or file, Kaggle CSV, Parquet or PNG folder.")],
    min_rows: Annotated[int, typer.Option(min=1, help="Fewest rows accepted.")] = 100,
) -> None:
    """Check a dataset against the expectation suite; exit 0 valid, 1 failed expectations, 2 unreadable.
    An IDX folder with both the train and the t10k pair has both checked."""
    from digitpipe.data import load_dataset
    from digitpipe.data.formats import idx_parts
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
    from digitpipe.files import output_folder

    output_folder(out, "--out")
    typer.echo(f"wrote {write_report(load_dataset(data), out)}")
