"""Terminal progress: one bar per model during training, and the comparison table at the end of a run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from digitpipe.records.specs import NetSpec
from digitpipe.records.models import VersionRecord
from digitpipe.records.training import Callback, EpochResult
from digitpipe.records.verdicts import VerdictKind


@contextmanager
def epoch_bars(name: str, spec: object, enabled: bool) -> Iterator[list[Callback]]:
    """Training callbacks that draw a bar for a net's epochs; none for the baseline or when disabled."""
    if not (enabled and isinstance(spec, NetSpec)):
        yield []
        return
    bar = EpochBar(name, spec.epochs)
    try:
        yield [bar]
    finally:
        bar.close()


class EpochBar:
    """A training callback drawing `name`'s epochs as a bar with loss and validation accuracy (stderr, TTY only)."""

    def __init__(self, name: str, epochs: int) -> None:
        self.progress = Progress(TextColumn(f"[bold]{name:<8}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                 console=Console(stderr=True), disable=not sys.stderr.isatty())
        self.task = self.progress.add_task(name, total=epochs, status="")
        self.progress.start()

    def __call__(self, result: EpochResult) -> None:
        status = f"loss {result.train_loss:.4f}  val acc {result.val_accuracy:.4f}"
        self.progress.update(self.task, completed=result.epoch, status=status)

    def close(self) -> None:
        """Stop drawing (early stopping can end before the bar is full)."""
        self.progress.stop()


@contextmanager
def trial_bar(study: str, total: int, done: int, enabled: bool) -> Iterator[list[Callable]]:
    """Optuna callbacks that draw the study's finished trials out of `total` (`done` before this process started)
    with the best objective so far; none when disabled. Rich, not Optuna's tqdm bar, which a terminal that reports
    no width shows as nothing."""
    if not enabled:
        yield []
        return
    progress = Progress(TextColumn(f"[bold]study {study}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=Console(stderr=True),
                        disable=not sys.stderr.isatty())
    task = progress.add_task(study, total=total, completed=done, status="")

    def finished(study, trial) -> None:
        if trial.state.name not in ("COMPLETE", "PRUNED"):  # a failed trial does not count towards the total
            return
        try:
            best = f"best {study.best_value:.4f}" if len(study.directions) == 1 else ""
        except ValueError:  # none complete yet (all pruned)
            best = ""
        progress.update(task, advance=1, status=best)

    progress.start()
    try:
        yield [finished]
    finally:
        progress.stop()


def print_comparison(summary: dict) -> None:
    """The run's models side by side, best first, and which version holds the champion alias."""
    table = Table(title="models of this run (held-out test part)")
    for column in ("model", "accuracy", "perturbed", "train s", "ONNX KB", "registry version"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, m in sorted(summary["models"].items(), key=lambda item: -item[1]["accuracy"]):
        onnx = Path(m["onnx_path"])
        robust = f"{m['robust_accuracy']:.2%}" if m["robust_accuracy"] is not None else "-"
        table.add_row(name, f"{m['accuracy']:.2%}", robust,
                      "unchanged" if m.get("unchanged") else f"{m['train_seconds']:.1f}",
                      f"{onnx.stat().st_size / 1024:.0f}" if onnx.is_file() else "-", m["model_version"])
    console = Console()
    console.print(table)
    champion, verdict = summary["champion"], summary.get("verdict") or {}
    waiting = (f"v{verdict['version']} passed the gate and awaits approval (digitpipe approve)"
               if verdict.get("verdict") == VerdictKind.AWAITING_APPROVAL.value else "")
    if champion is None:
        console.print(f"no champion yet: {waiting or 'no model has passed the promotion gate (see mlflow.yaml)'}")
    else:
        console.print(f"champion: {champion['name']} v{champion['model_version']} ({champion['accuracy']:.2%})"
                      + (f"; {waiting}" if waiting else ""))


def print_versions(name: str, versions: list[VersionRecord]) -> None:
    """`digitpipe models`: one row per registered version, newest first (full width: reasons are long)."""
    table = Table(title=f"registered model {name}", caption="robust: accuracy on perturbed held-out digits "
                  "(suite named after the value where it is not the current one); live: on the latest labelled "
                  "feedback (digitpipe feedback)")
    numbers = ("version", "accuracy", "robust", "live")
    for column in ("version", "model", *numbers[1:], "aliases", "verdict", "reason", "created"):
        table.add_column(column, justify="right" if column in numbers else "left", overflow="fold")
    for v in versions:
        verdict = v.verdict
        table.add_row(v.version, v.model_name, _percent(v.tags.get("test_accuracy")), _robust(v.tags),
                      _percent(v.tags.get("live_accuracy")), ", ".join(v.aliases),
                      verdict.kind.value if verdict else "-", verdict.said if verdict else "", v.created)
    Console(width=max(160, Console().width)).print(table)


def _percent(value: str | None) -> str:
    return f"{float(value):.2%}" if value else "-"


def _robust(tags: Mapping[str, str]) -> str:
    """Robust accuracy, comparable only between versions measured on the same suite specification."""
    from digitpipe.robustness import SPEC

    spec = tags.get("robustness_spec")
    return _percent(tags.get("robust_accuracy")) + ("" if spec in (None, SPEC) else f" ({spec})")


def print_study(summary: dict, output: Path | None) -> None:
    """`digitpipe tune`: the best trial beside the shipped defaults (validation part), then what changed."""
    table = Table(title=f"study {summary['study']} ({summary['model']}): trials "
                  + ", ".join(f"{n} {state}" for state, n in summary["counts"].items()),
                  caption="on the validation part; objective: mean of clean and perturbed accuracy")
    for column in ("trial", "objective", "clean val", "perturbed val", "train s", "epochs"):
        table.add_column(column, justify="left" if column == "trial" else "right")
    for label, t in (("defaults", summary["defaults"]), ("best", summary["best"])):
        if t:
            table.add_row(f"{label} #{t['number']}", f"{t['value']:.4f}", f"{t['val_clean_accuracy']:.2%}",
                          f"{t['val_perturbed_accuracy']:.2%}", f"{t['train_seconds']:.1f}",
                          str(int(t["epochs_run"]) or "-"))
    console = Console()
    console.print(table)
    best, shipped = summary["best"], summary["defaults"]
    if best is None:
        console.print("no trial completed: nothing to write")
        return
    if shipped:
        changed = [f"{k} {shipped['params'][k]:.4g} -> {v:.4g}" if isinstance(v, float) else f"{k} "
                   f"{shipped['params'][k]} -> {v}" for k, v in best["params"].items() if v != shipped["params"][k]]
        console.print("best against the defaults: " + (", ".join(changed) or "the defaults are the best"))
    if "seeds" in best:
        s = best["seeds"]
        console.print(f"best retrained with seeds {s['seeds']}: objective {s['mean']:.4f} +- {s['std']:.4f} "
                      f"(min {s['min']:.4f}, max {s['max']:.4f}), {s['seconds']:.1f} s each")
    for point in summary.get("front", []):
        console.print(f"Pareto front: trial #{point['number']}: objective {point['value']:.4f} in "
                      f"{point['train_seconds']:.1f} s")
    if output:
        console.print(f"wrote {output}: digitpipe run --params {output}")
