"""The model zoo without torch: names, hyperparameter specs (the book's configuration as defaults), and what
training returns. Importing this costs nothing, so the CLI, the config and a logreg-only run stay light."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression
    from torch import nn


@dataclass(frozen=True)
class LogRegSpec:
    """Multinomial logistic regression; the book's nnet::multinom decay 5e-3 is an L2 penalty, C = 1 / (2 * decay)."""

    decay: float = 5e-3
    max_iter: int = 100

    @property
    def C(self) -> float:  # noqa: N802 (scikit-learn's name)
        return 1.0 / (2.0 * self.decay)


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
    augment: bool = False  # shifted, rotated, rescaled, re-inked, noisy and blurred copies (train.Augmentation)
    stop_at_val_accuracy: float | None = None  # the book's rule: stop once validation accuracy reaches this
    patience: int | None = None  # stop after this many epochs without a better validation loss


SPECS: dict[str, LogRegSpec | NetSpec] = {
    "logreg": LogRegSpec(),
    # nnet's BFGS on sum-of-squares decay 1e-4, maxit 300, approximated by minibatch SGD with weight decay
    "mlp": NetSpec(epochs=30, batch_size=100, lr=0.1, momentum=0.9, weight_decay=1e-4),
    "dnn": NetSpec(epochs=30, batch_size=100, lr=0.01, momentum=0.9, weight_decay=0.0),
    "lenet": NetSpec(epochs=30, batch_size=100, lr=0.05, momentum=0.9, weight_decay=1e-5),
    "fastcnn": NetSpec(epochs=12, batch_size=128, lr=4e-3, weight_decay=5e-4, optimizer="adamw",
                       schedule="onecycle", label_smoothing=0.1, augment=True),
}
MODEL_NAMES = tuple(SPECS)


def spec_for(name: str, epochs: int | None = None, stop_at_accuracy: float | None = None,
             patience: int | None = None) -> LogRegSpec | NetSpec:
    """The zoo's spec for `name` with a run's overrides (epochs, early stopping) applied to nets."""
    spec = SPECS[name]
    if not isinstance(spec, NetSpec):
        return spec
    overrides = {"epochs": epochs, "stop_at_val_accuracy": stop_at_accuracy, "patience": patience}
    return dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one finished epoch."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


Callback = Callable[[EpochResult], None]


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
