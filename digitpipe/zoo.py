"""The model zoo without torch: names, hyperparameter specs (the book's configuration as defaults), training one
zoo model (the baseline by scikit-learn, a net by the one loop in digitpipe.train), and what training returns.
Importing this costs nothing (torch and scikit-learn are imported by the model that needs them), so the CLI, the
config and a logreg-only run stay light."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression
    from torch import nn

    from digitpipe.data import Split
    from digitpipe.robustness import Robustness


@dataclass(frozen=True)
class LogRegSpec:
    """Multinomial logistic regression; the book's nnet::multinom decay 5e-3 is an L2 penalty, C = 1 / (2 * decay)."""

    decay: float = 5e-3
    max_iter: int = 100

    @property
    def C(self) -> float:  # noqa: N802 (scikit-learn's name)
        return 1.0 / (2.0 * self.decay)


@dataclass(frozen=True)
class Augmentation:
    """How far training copies of a digit may stray (digitpipe.train.augment): the geometric limits, and for each
    pen-and-sensor change the share of a batch that gets it and its largest strength. The defaults cover the
    strength-2 perturbations of digitpipe.robustness: on the book split they cut fastcnn's robust-accuracy gap from
    2.49 to ~0.3 points at the same clean accuracy; the whole-pixel pen changes are most of the last step, since a
    1-pixel erosion was the perturbation fastcnn failed most (bench/README.md)."""

    degrees: float = 12.0
    shift_px: float = 3.0
    scale: float = 0.15
    pen_share: float = 0.8  # thicker or thinner strokes, up to one pixel
    pen_full_share: float = 0.5  # of those, the share changed by the whole pixel (the rest by a random fraction)
    noise_share: float = 0.5
    noise_sigma: float = 16.0  # on 0-255 pixels
    blur_share: float = 0.5
    blur_sigma: float = 1.0


@dataclass(frozen=True)
class NetSpec:
    """Hyperparameters of one torch net, trained by digitpipe.train.fit."""

    epochs: int = 30
    batch_size: int = 100
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-5
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adamw"
    schedule: str = "constant"  # "constant" or "onecycle" (per batch; lr is the peak)
    label_smoothing: float = 0.0
    augment: bool = False  # train on shifted, rotated, rescaled, re-inked, noisy and blurred copies
    augmentation: Augmentation = Augmentation()  # how far those copies stray
    hidden: int = 50  # units of the first hidden dense layer (the deep net halves it for its second)
    width: int | None = None  # channels of the first convolution, the later ones in proportion (None: no convs)
    stop_at_val_accuracy: float | None = None  # the book's rule: stop once validation accuracy reaches this
    patience: int | None = None  # stop after this many epochs without a better validation loss


SPECS: dict[str, LogRegSpec | NetSpec] = {
    "logreg": LogRegSpec(),
    # nnet's BFGS on sum-of-squares decay 1e-4, maxit 300, approximated by minibatch SGD with weight decay
    "mlp": NetSpec(epochs=30, batch_size=100, lr=0.1, momentum=0.9, weight_decay=1e-4, hidden=50),
    "dnn": NetSpec(epochs=30, batch_size=100, lr=0.01, momentum=0.9, weight_decay=0.0, hidden=128),
    "lenet": NetSpec(epochs=30, batch_size=100, lr=0.05, momentum=0.9, weight_decay=1e-5, hidden=500, width=20),
    "fastcnn": NetSpec(epochs=12, batch_size=128, lr=4e-3, weight_decay=5e-4, optimizer="adamw",
                       schedule="onecycle", label_smoothing=0.1, augment=True, hidden=256, width=16),
}
MODEL_NAMES = tuple(SPECS)


@dataclass(frozen=True)
class Range:
    """A searched number between `low` and `high` (inclusive), on a log scale where `log`, whole where `integer`."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Choice:
    """A searched value out of `options`."""

    options: tuple


# What `digitpipe tune` searches for each model (digitpipe.studies); epochs stay the spec's (a study's budget), and
# the other fields keep their values. Field names as in --set: "augmentation.degrees" is a field of a field.
SPACES: dict[str, dict[str, Range | Choice]] = {
    "logreg": {"decay": Range(1e-5, 1e-1, log=True), "max_iter": Range(50, 400, integer=True)},
    "mlp": {"lr": Range(0.01, 0.5, log=True), "weight_decay": Range(1e-6, 1e-2, log=True),
            "hidden": Range(16, 256, log=True, integer=True), "batch_size": Choice((50, 100, 200))},
    "dnn": {"lr": Range(1e-3, 0.1, log=True), "momentum": Range(0.5, 0.99), "weight_decay": Range(0.0, 1e-3), "hidden": Range(32, 512, log=True, integer=True),
            "batch_size": Choice((50, 100, 200))},
    "lenet": {"lr": Range(1e-3, 0.1, log=True), "weight_decay": Range(1e-6, 1e-3, log=True),
              "hidden": Range(100, 800, log=True, integer=True), "width": Range(8, 32, integer=True)},
    "fastcnn": {"lr": Range(1e-3, 1e-2, log=True), "weight_decay": Range(1e-5, 5e-3, log=True),
                "label_smoothing": Range(0.0, 0.2), "batch_size": Choice((64, 128, 256)),
                "width": Range(8, 32, integer=True), "hidden": Range(64, 512, log=True, integer=True),
                "augmentation.degrees": Range(0.0, 20.0), "augmentation.shift_px": Range(0.0, 4.0),
                "augmentation.pen_share": Range(0.0, 1.0), "augmentation.noise_share": Range(0.0, 1.0),
                "augmentation.blur_share": Range(0.0, 1.0)},
}


def spec_for(name: str, epochs: int | None = None, stop_at_accuracy: float | None = None,
             patience: int | None = None, overrides: dict[str, object] | None = None) -> LogRegSpec | NetSpec:
    """The zoo's spec for `name` with a run's shorthands (epochs, early stopping: every net) applied, then its
    own overrides ({"lr": 3e-3, "augmentation.degrees": 8}, checked by digitpipe.hyperparams), which win."""
    spec = SPECS[name]
    if isinstance(spec, NetSpec):
        shorthands = {"epochs": epochs, "stop_at_val_accuracy": stop_at_accuracy, "patience": patience}
        spec = dataclasses.replace(spec, **{k: v for k, v in shorthands.items() if v is not None})
    return with_values(spec, overrides or {})


def with_values(spec, values: dict[str, object]):
    """`spec` with `values` by field name; a dotted name sets a field of a field."""
    nested: dict[str, dict[str, object]] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
    plain = {k: v for k, v in values.items() if "." not in k}
    plain |= {head: with_values(getattr(spec, head), inner) for head, inner in nested.items()}
    return dataclasses.replace(spec, **plain)


def flat_fields(spec) -> dict[str, tuple[object, object]]:
    """Every field of `spec` by name, a field of a field by a dotted name (--set names): its value and its type."""
    hints = typing.get_type_hints(type(spec))
    out: dict[str, tuple[object, object]] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if dataclasses.is_dataclass(value):
            out |= {f"{f.name}.{k}": v for k, v in flat_fields(value).items()}
        else:
            out[f.name] = (value, hints[f.name])
    return out


def flat_values(spec) -> dict[str, object]:
    """Every field's value by its --set name (MLflow params)."""
    return {name: value for name, (value, _) in flat_fields(spec).items()}


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one finished epoch."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


# Called after every epoch; a callback that returns a reason stops the training there (a pruned trial).
Callback = Callable[[EpochResult], "str | None"]


@dataclass
class TrainedModel:
    """A fitted model (torch net or scikit-learn estimator) with its history and wall time."""

    name: str
    model: nn.Module | LogisticRegression | Any
    train_seconds: float
    history: list[EpochResult] = field(default_factory=list)
    stop_reason: str = "converged or reached max_iter"
    threads: int = 0  # torch threads a net trained with (0: not a torch net)

    @property
    def is_net(self) -> bool:
        return not hasattr(self.model, "predict_proba")  # scikit-learn estimators have it, torch nets do not

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Class scores N x 10 (logits for nets, probabilities for the baseline) for uint8 images."""
        if not self.is_net:
            return self.model.predict_proba(images.reshape(len(images), -1).astype(np.float32))
        from digitpipe.train import predict_scores

        return predict_scores(self.model, images)


@dataclass(frozen=True)
class ModelResult:
    """One trained, evaluated, exported and registered model of a run: what the gate, the summary and the
    comparison table read."""

    name: str
    accuracy: float  # on the held-out part
    macro_f1: float
    run_id: str
    model_version: str
    onnx_path: str
    onnx_kb: float
    train_seconds: float
    stop_reason: str
    predicted: np.ndarray  # the ONNX model's digit for each held-out image
    robustness: Robustness | None  # on the perturbation suite (None: not measured)
    parity: str = "passed"  # the ONNX file gave the native model's digit on every held-out image (else no result)

    @property
    def robust_accuracy(self) -> float | None:
        return self.robustness and self.robustness.robust_accuracy

    def line(self) -> str:
        """The stage line for this model."""
        return (f"trained {self.name}: {self.accuracy:.2%} held-out accuracy ({self.robust_accuracy:.2%} perturbed) "
                f"in {self.train_seconds:.1f} s, registered v{self.model_version}")

    def summary(self) -> dict[str, object]:
        """This model in a run's JSON summary."""
        return {"accuracy": self.accuracy, "robust_accuracy": self.robust_accuracy, "run_id": self.run_id,
                "model_version": self.model_version, "onnx_path": self.onnx_path,
                "train_seconds": self.train_seconds}


def trains_nets(models: Sequence[str]) -> bool:
    """Whether any of `models` is a torch net (a baseline-only run needs neither torch nor a device)."""
    return any(isinstance(SPECS[name], NetSpec) for name in models)


def device_for(models: Sequence[str]) -> str:
    """The device `models` train on in this process: a GPU if there is one and any is a net, else the CPU."""
    from digitpipe.runtime import pick_device

    return pick_device() if trains_nets(models) else "cpu"


def train_model(name: str, spec: LogRegSpec | NetSpec, split: Split, device: str = "cpu", seed: int = 42,
                threads: int | None = None, callbacks: Sequence[Callback] = (),
                checkpoint: Path | None = None) -> TrainedModel:
    """Zoo model `name` fitted on split.train: the baseline by scikit-learn; a net by the one training loop
    (digitpipe.train.fit) from `seed` with `threads` torch threads, saved to `checkpoint` every epoch and continued
    from it where it exists (an interrupted identical training: see checkpoint_path)."""
    start = time.perf_counter()
    if isinstance(spec, LogRegSpec):
        from digitpipe.baseline import fit_logreg

        return TrainedModel(name, fit_logreg(spec, split.train), time.perf_counter() - start,
                            stop_reason=f"lbfgs, at most {spec.max_iter} iterations")
    from digitpipe import runtime, train
    from digitpipe.models import build_net

    threads = runtime.use_cores(threads)
    runtime.seed_everything(seed, deterministic=device == "cpu")  # per model: independent of the ones before
    net = build_net(name, spec)
    history, reason = train.fit(net, spec, split.train, split.val, device, callbacks, checkpoint)
    if checkpoint:
        checkpoint.unlink(missing_ok=True)  # finished: the next run starts fresh
    return TrainedModel(name, net, time.perf_counter() - start, history, reason, threads)


def checkpoint_path(folder: Path, name: str, spec: LogRegSpec | NetSpec, seed: int, split: Split) -> Path:
    """One file per (model, hyperparameters, seed, data split) in `folder`: --resume only ever continues the same
    training."""
    identity = json.dumps([name, dataclasses.asdict(spec), seed, split.train.digest, split.val.digest])
    return folder / f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.pt"
