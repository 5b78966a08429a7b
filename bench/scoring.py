"""Scoring speed, one process: PyTorch eager vs onnxruntime fp32 vs onnxruntime int8 on 70,000 MNIST images,
and end-to-end `digitpipe score` rows per second on a 70,000-row Kaggle-format CSV.

Usage: python bench/scoring.py [MNIST_DIR] [--model lenet|logreg] [--epochs N] [--rounds 3]
Trains the model briefly on the book split (accuracy is not the point here), exports it, quantizes it. For each
precision, onnxruntime alone (70,000 images already in memory) and end-to-end scoring of the CSV (score_file, what
`digitpipe score` runs: parse, score, write) alternate for `--rounds` rounds; the best of each is compared, and the
ratio end-to-end / onnxruntime alone is printed (the issue's target: at least 0.8).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from _common import best_of, data_path, model_bench_args, timed

from digitpipe.data import load_dataset, split_dataset
from digitpipe.export import export_onnx, quantize_checked
from digitpipe.records.models import ModelIdentity
from digitpipe.records.specs import SPECS, NetSpec
from digitpipe.runtime import seed_everything, use_cores
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.batch_scoring import score_file
from digitpipe.zoo import train_model
from digitpipe.train import predict_scores


def main() -> None:
    args = model_bench_args(rounds=3, epochs=1)
    cores = use_cores()
    seed_everything(0)
    data = load_dataset(data_path(args))
    split = split_dataset(data)
    spec = SPECS[args.model]
    spec = dataclasses.replace(spec, epochs=args.epochs) if isinstance(spec, NetSpec) else spec
    model = train_model(args.model, spec, split).model
    images = np.concatenate([data.images, data.images[:10_000]])  # 70,000 images
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = export_onnx(model, tmp / "fp32.onnx")
        quant = None
        if args.model != "logreg":  # int8 is for the nets: the baseline's graph is one ai.onnx.ml op
            quant = quantize_checked(fp32, split.train.images[:1024], split.test, tmp / "int8.onnx")
        print(f"{args.model}, {cores} cores; {quant.reason() if quant else 'no int8 for logreg'}")
        rates = {"pytorch eager (batch 4096)": len(images) / best_of(lambda: predict_scores(model, images))}
        csv = tmp / "test.csv"
        pd.DataFrame(images.reshape(len(images), -1), columns=[f"pixel{i}" for i in range(784)]).to_csv(csv, index=False)
        ratios = {}
        for name, path in (("fp32", fp32), ("int8", quant and quant.path)):
            if not path:
                continue
            alone, end_to_end = [], []
            for _ in range(args.rounds):  # alternating, so that other load on the machine falls on both sides
                alone.append(timed(lambda p=path: OnnxScorer(p).scores(images)))
                end_to_end.append(timed(lambda p=path: score_file(OnnxScorer(p), csv, tmp / "out.csv", ModelIdentity(str(p)))))
            rates[f"onnxruntime {name}"] = len(images) / min(alone)
            rates[f"end-to-end CSV scoring, {name}"] = len(images) / min(end_to_end)
            ratios[name] = min(alone) / min(end_to_end)
    eager = rates["pytorch eager (batch 4096)"]
    print(f"{'path':<36} {'images/s':>10} {'vs eager':>9}")
    for name, rate in rates.items():
        print(f"{name:<36} {rate:>10,.0f} {rate / eager:>8.2f}x")
    for name, ratio in ratios.items():
        print(f"end-to-end / onnxruntime alone, {name}: {ratio:.3f} (best of {args.rounds} each)")


if __name__ == "__main__":
    main()
