"""The shipped default against a study's best on MNIST's t10k (standard protocol), K training seeds each, in one run.

t10k only reports: the study chose on the book split's validation part. Prints each side's t10k accuracy (mean, spread)
and training seconds, their ratio, and the issue's rule: propose the tuned values as the default only if they beat
it by more than the seeds' spread, or are at least 25% faster within 0.05 points.

Usage: python bench/tuned_vs_default.py PARAMS.yaml [STANDARD_DIR] [--model fastcnn] [--seeds 3]
STANDARD_DIR holds the 60,000 training images and t10k (default outputs/mnist-standard: bench/standard_mnist.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from _common import ROOT

from digitpipe import hyperparams, zoo
from digitpipe.records.specs import spec_for
from digitpipe.data import load_dataset
from digitpipe.data.split import split_by_protocol
from digitpipe.runtime import pick_device


def side(name: str, spec, split, seeds: list[int], device: str) -> tuple[list[float], list[float]]:
    """t10k accuracy and training seconds of `spec` for each seed, one line each as it goes."""
    accuracies, seconds = [], []
    for seed in seeds:
        trained = zoo.train_model(name, spec, split, device, seed)
        accuracies.append(float(np.mean(trained.scores(split.test.images).argmax(1) == split.test.labels)))
        seconds.append(trained.train_seconds)
        print(f"  seed {seed}: t10k {accuracies[-1]:.4f}, {seconds[-1]:.1f} s, {len(trained.history)} epochs",
              flush=True)
    return accuracies, seconds


def verdict(default: list[float], tuned: list[float], default_s: list[float], tuned_s: list[float]) -> str:
    """The issue's rule, in words."""
    gain = statistics.mean(tuned) - statistics.mean(default)
    spread = max(statistics.stdev(default), statistics.stdev(tuned)) if len(default) > 1 else 0.0
    faster = 1 - statistics.mean(tuned_s) / statistics.mean(default_s)
    if gain > spread:
        return f"propose: +{100 * gain:.2f} points, more than the seeds' spread ({100 * spread:.2f})"
    if faster >= 0.25 and gain >= -0.0005:
        return f"propose: {100 * faster:.0f}% faster within 0.05 points ({100 * gain:+.2f})"
    return (f"keep the default: {100 * gain:+.2f} points (spread {100 * spread:.2f}), "
            f"{100 * faster:.0f}% faster")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("params", type=Path)
    parser.add_argument("data", nargs="?", type=Path, default=ROOT / "outputs" / "mnist-standard")
    parser.add_argument("--model", default="fastcnn")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if not (args.data / "t10k-images-idx3-ubyte.gz").exists():
        print(f"skipped: no t10k at {args.data} (python bench/standard_mnist.py writes it)")
        sys.exit(0)
    tuned = hyperparams.read_params(args.params)
    split = split_by_protocol(load_dataset(args.data), "standard", args.data)
    seeds = [42 + i for i in range(args.seeds)]
    device = pick_device()
    results = {}
    for label, overrides in (("default", {}), ("tuned", tuned.values.get(args.model, {}))):
        print(f"{args.model} {label} {overrides or ''}", flush=True)
        results[label] = side(args.model, spec_for(args.model, overrides=overrides), split, seeds, device)
    for label, (acc, secs) in results.items():
        print(f"{label}: t10k {statistics.mean(acc):.4f} +- {statistics.stdev(acc) if len(acc) > 1 else 0:.4f} "
              f"(min {min(acc):.4f}, max {max(acc):.4f}), training {statistics.mean(secs):.1f} s")
    (acc_d, s_d), (acc_t, s_t) = results["default"], results["tuned"]
    print(f"tuned/default training seconds: {statistics.mean(s_t) / statistics.mean(s_d):.2f}x")
    print(verdict(acc_d, acc_t, s_d, s_t))


if __name__ == "__main__":
    main()
