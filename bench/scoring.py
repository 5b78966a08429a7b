"""Scoring speed, one process: PyTorch eager vs onnxruntime fp32 vs onnxruntime int8 on 70,000 MNIST images,
and end-to-end `digitpipe score` rows per second on a 70,000-row Kaggle-format CSV.

Usage: python bench/scoring.py [MNIST_DIR] [--model lenet|logreg] [--epochs N]
Trains the model briefly on the book split (accuracy is not the point here), exports it, quantizes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from _common import best_of, mnist_path

from digitpipe.data import load_dataset, split_dataset
from digitpipe.export import export_onnx, quantize_checked
from digitpipe.zoo import SPECS, NetSpec
from digitpipe.runtime import seed_everything, use_cores
from digitpipe.scorer import OnnxScorer
from digitpipe.scoring import score_file
from digitpipe.pipeline import train_zoo_model
from digitpipe.train import predict_scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?")
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    cores = use_cores()
    seed_everything(0)
    data = load_dataset(mnist_path([__file__] + ([args.data] if args.data else [])))
    split = split_dataset(data)
    spec = SPECS[args.model]
    spec = dataclasses.replace(spec, epochs=args.epochs) if isinstance(spec, NetSpec) else spec
    model = train_zoo_model(args.model, spec, split).model
    images = np.concatenate([data.images, data.images[:10_000]])  # 70,000 images
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = export_onnx(model, tmp / "fp32.onnx")
        quant = None
        if args.model != "logreg":  # int8 is for the nets: the baseline's graph is one ai.onnx.ml op
            quant = quantize_checked(fp32, split.train.images[:1024], split.test, tmp / "int8.onnx")
        print(f"{args.model}, {cores} cores; {quant.reason() if quant else 'no int8 for logreg'}")
        rates = {"pytorch eager (batch 4096)": len(images) / best_of(lambda: predict_scores(model, images))}
        rates["onnxruntime fp32"] = len(images) / best_of(lambda: OnnxScorer(fp32).scores(images))
        if quant and quant.path:
            rates["onnxruntime int8"] = len(images) / best_of(lambda: OnnxScorer(quant.path).scores(images))
        csv = tmp / "test.csv"
        pd.DataFrame(images.reshape(len(images), -1), columns=[f"pixel{i}" for i in range(784)]).to_csv(csv, index=False)
        for name, path in (("fp32", fp32), ("int8", quant and quant.path)):
            if path:
                seconds = best_of(lambda p=path: score_file(OnnxScorer(p), csv, tmp / "out.csv", {}), repeats=2)
                rates[f"end-to-end CSV scoring, {name}"] = len(images) / seconds
    eager = rates["pytorch eager (batch 4096)"]
    print(f"{'path':<36} {'images/s':>10} {'vs eager':>9}")
    for name, rate in rates.items():
        print(f"{name:<36} {rate:>10,.0f} {rate / eager:>8.2f}x")


if __name__ == "__main__":
    main()
