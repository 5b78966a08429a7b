"""Drift: is a scoring batch still like the digits its model was trained on? (numpy only: `score` stays light.)

A Reference, built at registration from the training part's images and the model's outputs on the held-out part,
holds per feature the bins of that distribution (deciles) and their shares; a batch is profiled into the same bins
while it is scored, and each feature's population stability index (PSI) against the reference gives the verdict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitpipe.errors import DataError
from digitpipe.files import write_json
from digitpipe.monitoring.features import image_features
from digitpipe.records.drift import DriftKind, DriftVerdict, FeatureDrift

if TYPE_CHECKING:
    from digitpipe.config import MonitoringConfig
    from digitpipe.data import Dataset

SPEC = "digitpipe-monitor-v1"
REFERENCE_FILE = "monitor_reference.json"  # beside each model's report; logged as report/monitor_reference.json
CLASS_EDGES = [digit + 0.5 for digit in range(9)]  # one bin per digit
CONFIDENCE_EDGES = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]  # top-1 probability: most are near 1


@dataclass(frozen=True)
class Reference:
    """The training distribution a model's batches are compared with: per feature, inner bin edges and shares."""

    edges: dict[str, list[float]]
    shares: dict[str, list[float]]
    rows: dict[str, int]  # images each feature's shares were counted on (training or held-out part)
    spec: str = SPEC
    # Per image feature, the 1st and 99th percentile on the training part: the ranges of the great-expectations
    # suite derived from the reference (digitpipe.validation.reference_expectations). Empty in older references.
    bounds: dict[str, list[float]] = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        """The reference as JSON at `path` (written atomically)."""
        return write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> Reference:
        """A reference written by `save`; a DataError for anything else."""
        try:
            reference = cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError):
            reference = None
        if reference is None or reference.spec != SPEC or set(reference.edges) != set(reference.shares):
            raise DataError(path, f"not a {SPEC} monitor reference (monitor_reference.json)")
        return reference


def registered_reference(path: Path | None) -> Reference | None:
    """A reference that came with a registered model, or None where there is none or it is unreadable: the drift
    check is a signal, and a missing one must not stop the scoring."""
    try:
        return Reference.load(path) if path else None
    except DataError:
        return None


def build_reference(train_images: np.ndarray) -> Reference:
    """What every model of a training part is compared with: its images' features (decile bins). Each model adds
    what its own outputs look like on held-out digits (with_model)."""
    features = image_features(train_images)
    edges = {name: _edges(values) for name, values in features.items()}
    return Reference(edges, {name: _shares(features[name], edges[name]).tolist() for name in edges},
                     dict.fromkeys(edges, len(train_images)),
                     bounds={name: np.quantile(values, [0.01, 0.99]).tolist() for name, values in features.items()})


def _edges(values: np.ndarray) -> list[float]:
    """Inner bin edges at the deciles; a value that many images share (every MNIST digit is 20 pixels tall, most
    are never blank) gets a bin of its own, so a batch that moves below it is seen too."""
    deciles = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)))
    shared = [value - 1e-6 for value in deciles if np.mean(values == value) > 0.05]
    return np.unique(np.concatenate([deciles, shared])).tolist()


def with_model(reference: Reference, held_out_scores: np.ndarray) -> Reference:
    """`reference` plus one model's outputs on the held-out part: the class shares it predicts (for a good model,
    the training data's class shares) and its confidence (top-1 probability)."""
    edges = {"predicted_class": CLASS_EDGES, "confidence": CONFIDENCE_EDGES}
    values = {"predicted_class": held_out_scores.argmax(1), "confidence": _top1(held_out_scores)}
    return Reference({**reference.edges, **edges},
                     {**reference.shares, **{name: _shares(values[name], edges[name]).tolist() for name in edges}},
                     {**reference.rows, **dict.fromkeys(edges, len(held_out_scores))}, reference.spec, reference.bounds)


def _top1(scores: np.ndarray) -> np.ndarray:
    from digitpipe.onnx_scorer import probabilities

    return probabilities(scores).max(1)


def _counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def _shares(values: np.ndarray, edges: list[float]) -> np.ndarray:
    counts = _counts(values, edges)
    return counts / max(counts.sum(), 1)


@dataclass
class BatchProfile:
    """The features of a batch, counted into the reference's bins chunk by chunk while it is scored."""

    reference: Reference
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0

    def add(self, images: np.ndarray, scores: np.ndarray) -> None:
        """Count one chunk: its images and the model's scores for them."""
        values = {**image_features(images), "predicted_class": scores.argmax(1), "confidence": _top1(scores)}
        for name, edges in self.reference.edges.items():
            self.counts[name] = self.counts.get(name, 0) + _counts(values[name], edges)
        self.rows += len(images)

    def verdict(self, thresholds: MonitoringConfig) -> DriftVerdict:
        """ok, warn or drift (or too_few_rows), with every feature's PSI and drift threshold and the ones that moved.

        Two samples of one distribution still differ by chance, by about (bins - 1) x (1/rows + 1/reference rows)
        in PSI: each feature's thresholds sit twice that noise above the configured ones, so small batches do not
        raise false alarms and large ones are judged by the configured values."""
        distances, warn, drift = {}, {}, {}
        for name, edges in self.reference.edges.items():
            distances[name] = psi(self.reference.shares[name], self.counts.get(name, 0))
            noise = 2 * len(edges) * (1 / max(self.rows, 1) + 1 / self.reference.rows[name])
            warn[name], drift[name] = thresholds.warn_psi + noise, thresholds.drift_psi + noise
        moved = sorted((n for n in distances if distances[n] > warn[n]), key=lambda n: -distances[n])
        if self.rows < thresholds.min_rows:
            kind, moved = DriftKind.TOO_FEW_ROWS, []
        elif any(distances[n] > drift[n] for n in moved):
            kind = DriftKind.DRIFT
        else:
            kind = DriftKind.WARN if moved else DriftKind.OK
        features = {n: FeatureDrift(round(distances[n], 4), round(drift[n], 4), self.reference.edges[n],
                                    self.reference.shares[n], _rounded_shares(self.counts.get(n, 0),
                                                                              self.reference.edges[n]))
                    for n in distances}
        return DriftVerdict(kind, self.rows, tuple(moved), self.reference.spec, features)


def _rounded_shares(counts: np.ndarray | int, edges: list[float]) -> list[float]:
    counts = np.zeros(len(edges) + 1) + counts
    return np.round(counts / max(counts.sum(), 1), 5).tolist()


def report_html(drift: DriftVerdict, source: str, picture: str) -> str:
    """A drift report page: the verdict, each feature's PSI against its threshold, and the histograms picture."""
    import html

    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{f.distance:.3f}</td><td>{f.threshold:.3f}</td>"
                   f"<td>{'moved' if name in drift.moved else ''}</td></tr>" for name, f in drift.features.items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>digitpipe drift report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 10px;text-align:left}"
            f"img{{max-width:100%}}</style></head><body><h1>Drift: {html.escape(drift.kind.value)}</h1>"
            f"<p>{drift.rows:,} rows of {html.escape(source)} against the training data of "
            f"{html.escape(str(drift.reference or '?'))} ({html.escape(drift.spec)})</p>"
            f"<table><tr><th>feature</th><th>PSI</th><th>drift above</th><th></th></tr>{rows}</table>"
            f"<h2>Reference vs batch</h2><img src='{html.escape(picture)}' alt='histograms'></body></html>\n")


def psi(reference_shares: list[float], batch_counts: np.ndarray | int) -> float:
    """Population stability index of a batch's bin counts against the reference's shares (half a count added to
    every bin, so an empty bin is finite)."""
    expected = np.asarray(reference_shares, float)
    counts = np.zeros_like(expected) + batch_counts
    observed = (counts + 0.5) / (counts.sum() + 0.5 * len(counts))
    expected = np.clip(expected, 0.5 / max(counts.sum(), 1), None)
    expected = expected / expected.sum()
    return float(np.sum((observed - expected) * np.log(observed / expected)))


def write_reference(onnx_path: Path, base: Reference, held_out: Dataset, folder: Path) -> Path:
    """The drift monitor's reference for this model (the training part's `base` plus the model's confidence on the
    held-out part), written as monitor_reference.json beside the model's report."""
    from digitpipe.onnx_scorer import OnnxScorer

    return with_model(base, OnnxScorer(onnx_path).scores(held_out.images)).save(folder / REFERENCE_FILE)


def write_drift_report(drift: DriftVerdict, source: str, folder: Path) -> Path:
    """A scored batch's drift check as report.html and histograms.png in `folder` (for the scoring flow's run)."""
    from digitpipe.files import write_text
    from digitpipe.plots import drift_png

    drift_png(drift, folder / "histograms.png")
    write_text(folder / "report.html", report_html(drift, source, "histograms.png"))
    return folder
