"""Clean vs perturbed accuracy for every zoo model, one process, one table: the perturbation suite of the
promotion gate (digitpipe.robustness) built from the whole held-out part.

Usage: python bench/robustness.py [MNIST_DIR] [--models logreg,mlp,dnn,lenet,fastcnn] [--epochs N] [--seeds 42]
       [--protocol book|standard] [--digits N] [--val-fraction 0.1] [--augment degrees=12,shift_px=3,...]
The book protocol (stratified 75/25 of the 60,000-image training set) by default; `--protocol standard` tests on
t10k (MNIST_DIR must hold the t10k files). Several --seeds give the mean and spread per model. --augment
changes the training augmentation of the nets that use it (digitpipe.zoo.Augmentation fields), for tuning.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _common import data_parser, data_path

from digitpipe.data import load_dataset, split_by_protocol
from digitpipe.export import export_onnx
from digitpipe.zoo import train_model
from digitpipe.robustness import FAMILIES, build_suite, measure
from digitpipe.runtime import pick_device, use_cores
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.specs import MODEL_NAMES, SPECS, NetSpec, spec_for


def main() -> None:
    parser = data_parser()
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--epochs", type=int, help="override every net's epochs (a quick look)")
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds (the split stays seed 42)")
    parser.add_argument("--protocol", choices=("book", "standard"), default="book")
    parser.add_argument("--digits", type=int, default=100_000, help="held-out digits in the suite (default: all)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of the training part kept for the validation curves (the CLI's --val-fraction)")
    parser.add_argument("--augment", default="", help="Augmentation fields to change, e.g. degrees=12,pen_share=0.5")
    args = parser.parse_args()
    augmentation = {f"augmentation.{k}": float(v) for k, v in (item.split("=") for item in args.augment.split(",")
                                                               if args.augment)}
    cores, device = use_cores(), pick_device()
    folder = data_path(args)
    split = split_by_protocol(load_dataset(folder), args.protocol, folder, val_fraction=args.val_fraction)
    suite = build_suite(split.test, seed=0, max_digits=args.digits)
    print(f"{args.protocol} protocol, fit on {len(split.train):,} images ({len(split.val):,} for validation), "
          f"{len(suite.digits):,} held-out digits x {len(suite.images)} perturbed copies "
          f"({suite.spec}, digest {suite.digest[:16]}); {device}, {cores} threads")
    print(f"{'model':<8} {'seed':>4} {'clean %':>8} {'robust %':>9} {'gap':>6} {'invariant %':>12} "
          + " ".join(f"{f[:6]:>6}" for f in FAMILIES) + f" {'train s':>8}")
    for name in args.models.split(","):
        rows = [_one(name, args.epochs, augmentation, int(seed), split, suite, device) for seed in args.seeds.split(",")]
        for seed, (result, seconds) in zip(args.seeds.split(","), rows):
            strong = " ".join(f"{100 * result.accuracies[f'{f}_2']:>6.2f}" for f in FAMILIES)
            print(f"{name:<8} {seed:>4} {100 * result.clean_accuracy:>8.2f} {100 * result.robust_accuracy:>9.2f} "
                  f"{100 * (result.clean_accuracy - result.robust_accuracy):>6.2f} "
                  f"{100 * result.invariance_rate:>12.2f} {strong} {seconds:>8.1f}", flush=True)
        if len(rows) > 1:
            clean = np.array([100 * r.clean_accuracy for r, _ in rows])
            robust = np.array([100 * r.robust_accuracy for r, _ in rows])
            print(f"{name:<8} mean {clean.mean():>8.2f} {robust.mean():>9.2f} {clean.mean() - robust.mean():>6.2f}   "
                  f"spread (min-max) clean {clean.min():.2f}-{clean.max():.2f}, robust {robust.min():.2f}-"
                  f"{robust.max():.2f}", flush=True)


def _one(name: str, epochs: int | None, augmentation: dict, seed: int, split, suite, device: str):
    spec = spec_for(name, epochs, overrides=augmentation if isinstance(SPECS[name], NetSpec) else None)
    trained = train_model(name, spec, split, device, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(trained.model, Path(tmp) / "model.onnx")
        result, _ = measure(OnnxScorer(path).predict, suite)
    return result, trained.train_seconds


if __name__ == "__main__":
    main()
