"""The pipeline's steps as plain functions (what the Prefect tasks and flow call, usable without Prefect):
check the data, train a zoo model, evaluate and export it, pick the run's candidate, summarise the run.

Heavy libraries are imported inside the step that needs them: a logreg-only run never loads torch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitpipe.config import PipelineConfig
from digitpipe.data import Dataset, Split
from digitpipe.errors import ValidationFailed
from digitpipe.evaluate import Evaluation, comparison_markdown, evaluate
from digitpipe.files import write_json, write_text
from digitpipe.zoo import SPECS, Callback, LogRegSpec, NetSpec, TrainedModel, spec_for

if TYPE_CHECKING:
    from digitpipe.promotion import Verdict
    from digitpipe.monitor import Reference
    from digitpipe.robustness import Robustness, Suite
    from digitpipe.tracking import Registry
    from digitpipe.validation import ValidationReport


def check_data(data: Dataset, min_rows: int, docs_dir: Path | None = None) -> ValidationReport:
    """Validate `data` (GX data docs into `docs_dir`); raise ValidationFailed with the readable report on failure."""
    from digitpipe.validation import validate

    report = validate(data, min_rows, docs_dir)
    if not report.success:
        raise ValidationFailed(f"{data.source}: {report.text()}")
    return report


def explore(data: Dataset, cache: Path) -> Path:
    """The book's exploration of `data`, written once per dataset digest under `cache` and reused after."""
    from digitpipe.eda import write_report

    folder = cache / data.digest[:16]
    if (folder / "report.html").is_file():  # report.html is written last: its presence means complete
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(dir=cache, prefix=f".{folder.name}-"))  # runs at once never share a half-made one
    write_report(data, fresh)
    try:
        fresh.rename(folder)
    except OSError:  # there already: another run's complete copy, or a crashed one's leftover (no report.html)
        if (folder / "report.html").is_file():
            shutil.rmtree(fresh)
        else:
            shutil.rmtree(folder)
            fresh.rename(folder)
    return folder


def trains_nets(models: tuple[str, ...]) -> bool:
    """Whether any of `models` is a torch net (a baseline-only run needs neither torch nor a device)."""
    return any(isinstance(SPECS[name], NetSpec) for name in models)


def device_for(models: tuple[str, ...]) -> str:
    """The device `models` train on in this process: a GPU if there is one and any is a net, else the CPU."""
    from digitpipe import runtime

    return runtime.pick_device() if trains_nets(models) else "cpu"


def model_spec(name: str, cfg: PipelineConfig) -> LogRegSpec | NetSpec:
    """The zoo's spec for `name` with this run's overrides (epochs, early stopping)."""
    return spec_for(name, cfg.epochs, cfg.stop_at_accuracy, cfg.patience)


def train_zoo_model(name: str, spec: LogRegSpec | NetSpec, split: Split, device: str = "cpu", seed: int = 42,
                    threads: int | None = None, callbacks: Sequence[Callback] = (), checkpoint: Path | None = None,
                    resume: bool = False) -> TrainedModel:
    """Zoo model `name` fitted on split.train: the baseline by scikit-learn; a net by the one training loop
    (digitpipe.train.fit) from `seed` with `threads` torch threads, saved to `checkpoint` every epoch and continued
    from it with `resume`."""
    start = time.perf_counter()
    if isinstance(spec, LogRegSpec):
        from digitpipe.baseline import fit_logreg

        return TrainedModel(name, fit_logreg(spec, split.train), time.perf_counter() - start,
                            stop_reason=f"lbfgs, at most {spec.max_iter} iterations")
    from digitpipe import runtime, train
    from digitpipe.models import build_net

    if checkpoint and not resume:
        checkpoint.unlink(missing_ok=True)
    threads = runtime.use_cores(threads)
    runtime.seed_everything(seed, deterministic=device == "cpu")  # per model: independent of the ones before
    net = build_net(name)
    history, reason = train.fit(net, spec, split.train, split.val, device, callbacks, checkpoint)
    if checkpoint:
        checkpoint.unlink(missing_ok=True)  # finished: the next run starts fresh
    return TrainedModel(name, net, time.perf_counter() - start, history, reason, threads)


def checkpoint_path(name: str, cfg: PipelineConfig, split: Split) -> Path:
    """One file per (model, hyperparameters, seed, data split): --resume only ever continues the same training."""
    spec = model_spec(name, cfg)
    identity = json.dumps([name, dataclasses.asdict(spec), cfg.seed, split.train.digest, split.val.digest])
    return cfg.out_dir / "checkpoints" / f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.pt"


def evaluate_on_test(trained: TrainedModel, test: Dataset, folder: Path) -> tuple[Evaluation, np.ndarray]:
    """Held-out metrics and the book's pictures, written to `folder`: confusion matrix (PNG + JSON), learning
    curves, the most confidently wrong digits and, for CNNs, feature maps of two test digits."""
    from digitpipe import plots

    folder.mkdir(parents=True, exist_ok=True)
    name, scores = trained.name, trained.scores(test.images)
    predicted = scores.argmax(1)
    result = evaluate(test.labels, predicted)
    write_json(folder / "confusion_matrix.json", {"rows_true_columns_predicted": result.confusion})
    write_json(folder / "evaluation.json", dataclasses.asdict(result))
    plots.confusion_matrix_png(result.confusion, folder / "confusion_matrix.png",
                               f"{name}: test accuracy {result.accuracy:.2%}")
    plots.wrong_digits_png(test.images, test.labels, scores, folder / "most_confident_errors.png", name)
    if trained.history:
        plots.learning_curves_png(trained.history, folder / "learning_curves.png", f"{name}: learning curves")
    if hasattr(trained.model, "conv1"):
        plots.feature_maps_png(trained.model, test.images[:2], folder / "feature_maps.png", f"{name}: feature maps")
    return result, predicted


def export_checked(trained: TrainedModel, test: Dataset, predicted: np.ndarray, folder: Path) -> Path:
    """Export to ONNX and require the same top-1 digit as the native model on every held-out image."""
    from digitpipe.export import export_onnx, parity_mismatches

    path = export_onnx(trained.model, folder / "model.onnx")
    mismatches = parity_mismatches(path, test.images, predicted)
    if mismatches:
        path.unlink()
        raise RuntimeError(f"{trained.name}: ONNX and native predictions differ on {mismatches} held-out images")
    return path


def check_robustness(onnx_path: Path, suite: Suite, folder: Path) -> Robustness:
    """The exported model on the perturbation suite: metrics, robustness.json and the flipped digits' picture."""
    from digitpipe import plots
    from digitpipe.robustness import COPIES, measure
    from digitpipe.scorer import OnnxScorer

    result, predicted = measure(OnnxScorer(onnx_path).predict, suite)
    write_json(folder / "robustness.json", {**suite.tags(), **result.metrics(), "clean_accuracy": result.clean_accuracy})
    plots.flips_png(suite.digits.images, suite.digits.labels, predicted[0], suite.images, predicted[1:],
                    [f"{family} {strength}" for family, strength in COPIES], folder / "flips.png",
                    f"{folder.name}: robust accuracy {result.robust_accuracy:.2%}")
    return result


def write_monitor_reference(onnx_path: Path, base: Reference, held_out: Dataset, folder: Path) -> Path:
    """The drift monitor's reference for this model (the training part's `base` plus the model's confidence on the
    held-out part), written as monitor_reference.json beside the model's report."""
    from digitpipe.monitor import REFERENCE_FILE, with_model
    from digitpipe.scorer import OnnxScorer

    return with_model(base, OnnxScorer(onnx_path).scores(held_out.images)).save(folder / REFERENCE_FILE)


def write_drift_report(drift: dict, source: str, folder: Path) -> Path:
    """A scored batch's drift check as report.html and histograms.png in `folder` (for the scoring flow's run)."""
    from digitpipe.monitor import report_html
    from digitpipe.plots import drift_png

    drift_png(drift, folder / "histograms.png")
    write_text(folder / "report.html", report_html(drift, source, "histograms.png"))
    return folder


def write_comparison(rows: list[dict], folder: Path) -> Path:
    """The run's models side by side: comparison.md and comparison.png in `folder`."""
    from digitpipe.plots import comparison_png

    write_text(folder / "comparison.md", comparison_markdown(rows))
    comparison_png(rows, folder / "comparison.png")
    return folder


def run_params(cfg: PipelineConfig, split: Split, device: str) -> dict[str, object]:
    """What a pipeline run was given, as MLflow parameters: data, seed, protocol, split sizes, per-digit test counts."""
    return {"data": cfg.data.resolve(), "data_digest": split.train.digest, "seed": cfg.seed, "protocol": cfg.protocol,
            "test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction, "feedback": cfg.feedback,
            "device": device, "models": ",".join(cfg.models), **{f"split_{part}": n for part, n in split.sizes().items()},
            **{f"split_test_count_{digit}": count for digit, count in enumerate(split.test.class_counts())}}


def best_of(results: list[dict]) -> tuple[dict, list[dict]]:
    """The run's candidate for the promotion gate (highest held-out accuracy) and the others."""
    best = max(results, key=lambda r: r["accuracy"])
    return best, [r for r in results if r is not best]


def trained_line(result: dict) -> str:
    """The stage line for one trained and registered model."""
    return (f"trained {result['name']}: {result['accuracy']:.2%} held-out accuracy "
            f"({result['robust_accuracy']:.2%} perturbed) in {result['train_seconds']:.1f} s, "
            f"registered v{result['model_version']}")


SUMMARY_KEYS = ("accuracy", "robust_accuracy", "run_id", "model_version", "onnx_path", "train_seconds")


def summarise(registry: Registry, out_dir: Path, results: list[dict], verdict: Verdict) -> dict:
    """The run's models, the verdict on its candidate, and the champion after it (which may be an earlier run's)."""
    champion = registry.champion()  # None only while no model has ever passed the gate
    return {"models": {r["name"]: {k: r[k] for k in SUMMARY_KEYS} for r in results},
            "verdict": {"version": verdict.version, "verdict": verdict.verdict, "reason": verdict.reason},
            "champion": champion and {
                "name": champion.model_name, "model_version": champion.version, "accuracy": champion.accuracy,
                "onnx_path": str(registry.local_onnx(champion, out_dir / "champion")), "promoted": verdict.promoted}}
