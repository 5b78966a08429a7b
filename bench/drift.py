"""The drift monitor's error rates and cost, one process: false drift on clean batches of held-out MNIST digits and
detection of drifted batches, for batch sizes 500, 2,000 and 10,000 (100 random batches each), with a LeNet trained
on the book split's training part; and the time the monitor adds to scoring 10,000 rows.

Usage: python bench/drift.py [MNIST_DIR] [--batches 100] [--epochs 2] [--protocol book|standard]
Clean batches come from the held-out part (digits the model never saw): with `--protocol standard` (a folder with
the t10k files, e.g. outputs/mnist-standard from bench/standard_mnist.py), the model trains on the 60,000-image
training set and the batches are drawn from MNIST's t10k test set; the book protocol holds out 25% instead.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import data_parser, data_path

from digitpipe.data import load_dataset, split_by_protocol
from digitpipe.export import export_onnx
from digitpipe.config import MonitoringConfig
from digitpipe.monitoring.drift import BatchProfile, build_reference, with_model
from digitpipe.zoo import train_model
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.specs import SPECS


def inverted(images, rng):
    return 255 - images


def half_size(images, rng):
    small = images.reshape(-1, 14, 2, 14, 2).mean((2, 4)).astype(np.uint8)  # 2x2 mean: half the size
    out = np.zeros_like(images)
    out[:, 7:21, 7:21] = small
    return out


def noisy(images, rng):
    return np.clip(images.astype(int) + rng.integers(0, 121, images.shape), 0, 255).astype(np.uint8)


DRIFTS = {"inverted": inverted, "half size": half_size, "noise 0-120": noisy}


def main() -> None:
    parser = data_parser()
    parser.add_argument("--batches", type=int, default=100, help="random batches per size and kind")
    parser.add_argument("--epochs", type=int, default=2, help="LeNet's training epochs (the monitored model)")
    parser.add_argument("--protocol", choices=("book", "standard"), default="book")
    args = parser.parse_args()
    folder = data_path(args)
    split = split_by_protocol(load_dataset(folder, part="train" if args.protocol == "standard" else None),
                              args.protocol, folder)
    print(f"{args.protocol} protocol: LeNet trained on {len(split.train):,} images, batches from {len(split.test):,} "
          "held-out digits")
    trained = train_model("lenet", dataclasses.replace(SPECS["lenet"], epochs=args.epochs), split)
    with tempfile.TemporaryDirectory() as tmp:
        scorer = OnnxScorer(export_onnx(trained.model, Path(tmp) / "lenet.onnx"))
        reference = with_model(build_reference(split.train.images),
                                    scorer.scores(split.test.images))
        thresholds = MonitoringConfig()
        rng = np.random.default_rng(0)
        test = split.test
        print(f"thresholds: warn PSI > {thresholds.warn_psi}, drift PSI > {thresholds.drift_psi}; "
              f"{args.batches} batches each")
        print(f"{'batch':>6} {'clean: drift %':>15} {'warn %':>7} " + " ".join(f"{k + ' %':>13}" for k in
                                                                           [*DRIFTS, "one class"]))
        for size in (500, 2000, 10_000):
            clean = [_verdict(scorer, reference, test.images[rng.choice(len(test), size, replace=False)], thresholds)
                     for _ in range(args.batches)]
            detected = []
            for change in DRIFTS.values():
                verdicts = [_verdict(scorer, reference, change(test.images[rng.choice(len(test), size, replace=False)],
                                                               rng), thresholds) for _ in range(args.batches)]
                detected.append(100 * np.mean([v == "drift" for v in verdicts]))
            one_class = [_verdict(scorer, reference, test.images[rng.choice(np.flatnonzero(test.labels == d), size)],
                                  thresholds) for d in rng.integers(0, 10, args.batches)]
            detected.append(100 * np.mean([v == "drift" for v in one_class]))
            print(f"{size:>6} {100 * np.mean([v == 'drift' for v in clean]):>15.1f} "
                  f"{100 * np.mean([v == 'warn' for v in clean]):>7.1f} "
                  + " ".join(f"{d:>13.1f}" for d in detected), flush=True)
        _cost(scorer, reference, test.images[:10_000])


def _verdict(scorer, reference, images, thresholds) -> str:
    profile = BatchProfile(reference)
    profile.add(images, scorer.scores(images))
    return profile.verdict(thresholds).kind.value


def _cost(scorer, reference, images) -> None:
    """Scoring alone vs scoring and profiling, best of 5, in 4,096-row chunks as `digitpipe score` does."""
    def score(monitor: bool) -> float:
        start, profile = time.perf_counter(), BatchProfile(reference)
        for i in range(0, len(images), 4096):
            scores = scorer.scores(images[i : i + 4096])
            if monitor:
                profile.add(images[i : i + 4096], scores)
        if monitor:
            profile.verdict(MonitoringConfig())
        return time.perf_counter() - start

    alone = min(score(False) for _ in range(5))
    watched = min(score(True) for _ in range(5))
    print(f"10,000 rows with LeNet: scoring {alone:.3f} s, scoring + monitor {watched:.3f} s, "
          f"ratio {watched / alone:.2f} (target <= 1.20)")


if __name__ == "__main__":
    main()
