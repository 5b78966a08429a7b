"""Training one zoo model (its spec: digitpipe.records.specs): the baseline by scikit-learn, a net by the one loop
in digitpipe.train, continued from its checkpoint. Importing this costs nothing (torch and scikit-learn are imported
by the model that needs them), so the CLI and a logreg-only run stay light."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitpipe.records.specs import LogRegSpec, NetSpec, trains_nets
from digitpipe.records.training import Callback, EpochResult

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression
    from torch import nn

    from digitpipe.data import Split


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


def device_for(models: Sequence[str]) -> str:
    """The device `models` train on in this process: a GPU if there is one and any is a net, else the CPU."""
    from digitpipe.runtime import pick_device

    return pick_device() if trains_nets(models) else "cpu"


def train_model(name: str, spec: LogRegSpec | NetSpec, split: Split, device: str = "cpu", seed: int = 42,
                threads: int | None = None, callbacks: Sequence[Callback] = (),
                checkpoint: Path | None = None) -> TrainedModel:
    """Zoo model `name` fitted on split.train: the baseline by scikit-learn; a net by the one training loop
    (digitpipe.train.fit) from `seed` with `threads` torch threads, saved to `checkpoint` every epoch and continued
    from it where it exists (an interrupted identical training: see checkpoint_path). The checkpoint outlives the
    training: its owner removes it once the model is kept (digitpipe.model_run)."""
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
    return TrainedModel(name, net, time.perf_counter() - start, history, reason, threads)


def checkpoint_path(folder: Path, name: str, spec: LogRegSpec | NetSpec, seed: int, split: Split) -> Path:
    """One file per (model, hyperparameters, seed, data split) in `folder`: --resume only ever continues the same
    training."""
    identity = json.dumps([name, dataclasses.asdict(spec), seed, split.train.digest, split.val.digest])
    return folder / f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.pt"
