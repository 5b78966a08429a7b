"""The one training loop for every torch net, plus the scikit-learn baseline's fit.

The loop keeps the whole dataset as tensors on the device, batches by permutation, and only syncs
with the host once per epoch; callbacks receive per-epoch metrics (the flow plugs MLflow in there).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import nn

from digitpipe.data import Dataset, Split
from digitpipe.models import LogRegSpec, NetSpec, build_net

EVAL_BATCH = 4096


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
    model: nn.Module | LogisticRegression
    train_seconds: float
    history: list[EpochResult] = field(default_factory=list)

    @property
    def is_net(self) -> bool:
        return isinstance(self.model, nn.Module)


def train_model(name: str, spec: LogRegSpec | NetSpec, split: Split, device: torch.device,
                callbacks: Sequence[Callback] = ()) -> TrainedModel:
    """Fit zoo model `name` on split.train (nets watch split.val every epoch)."""
    start = time.perf_counter()
    if isinstance(spec, LogRegSpec):
        return TrainedModel(name, fit_logreg(spec, split.train), time.perf_counter() - start)
    net = build_net(name)
    history = fit(net, spec, split.train, split.val, device, callbacks)
    return TrainedModel(name, net, time.perf_counter() - start, history)


def fit_logreg(spec: LogRegSpec, train: Dataset) -> LogisticRegression:
    """Multinomial logistic regression on pixels/255, then folded to take raw pixels like every other model."""
    clf = LogisticRegression(C=spec.C, max_iter=spec.max_iter)
    with warnings.catch_warnings():  # the book's maxit=100 stops before lbfgs's tolerance; that is the baseline
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(train.flat() / 255.0, train.labels)
    clf.coef_ /= 255.0  # w . (x/255) == (w/255) . x: same model, raw-pixel input
    return clf


def fit(model: nn.Module, spec: NetSpec, train: Dataset, val: Dataset, device: torch.device,
        callbacks: Sequence[Callback] = ()) -> list[EpochResult]:
    """Train `model` for spec.epochs with SGD + momentum; returns the per-epoch history."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    x, y = as_tensors(train, device)
    history: list[EpochResult] = []
    for epoch in range(1, spec.epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc = _train_epoch(model, optimizer, x, y, spec.batch_size)
        val_loss, val_acc = evaluate_loss(model, val, device)
        result = EpochResult(epoch, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - start)
        history.append(result)
        for callback in callbacks:
            callback(result)
    return history


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int) -> tuple[float, float]:
    model.train()
    order = torch.randperm(len(x), device=x.device)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        xb, yb = _as_input(x[idx]), y[idx]
        with _autocast(x.device):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(idx)  # stays on the device: no per-batch host sync
        correct += (logits.argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def evaluate_loss(model: nn.Module, data: Dataset, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on labelled `data`."""
    logits = torch.from_numpy(predict_scores(model, data.images, device))
    labels = torch.from_numpy(data.labels)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def predict_scores(model: nn.Module | LogisticRegression, images: np.ndarray, device: torch.device | None = None) -> np.ndarray:
    """Class scores N x 10 (logits for nets, probabilities for the baseline) for uint8 images."""
    if isinstance(model, LogisticRegression):
        return model.predict_proba(images.reshape(len(images), -1).astype(np.float32))
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), EVAL_BATCH):
            xb = torch.from_numpy(images[start : start + EVAL_BATCH]).to(device)
            with _autocast(device):
                out.append(model(_as_input(xb.unsqueeze(1))).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 10), np.float32)


def as_tensors(data: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, N x 1 x 28 x 28) and labels resident on `device`; converted to float per batch."""
    x = torch.from_numpy(data.images).unsqueeze(1).to(device)
    return x, torch.from_numpy(data.labels).to(device)


def _as_input(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


def _autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context on the CPU (fp32 there is faster and deterministic)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
