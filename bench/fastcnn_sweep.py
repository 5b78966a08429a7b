"""Which fastcnn design is best? Trains variants (conv widths, hidden units, epochs) on the book protocol's
split with the library's own loop and prints held-out accuracy and seconds per epoch, one line each.

Meant for the lent GPU machine (called by bench/gpu_check.sh); on 2 CPU cores one variant takes minutes.
Usage: python bench/fastcnn_sweep.py DATA_DIR
"""

import dataclasses
import sys

import numpy as np
import torch

from digitpipe.data import load_dataset, split_dataset
from digitpipe.models import FastCNN
from digitpipe.records.specs import SPECS
from digitpipe.runtime import pick_device, seed_everything
from digitpipe.train import fit, predict_scores

VARIANTS = [  # (conv widths, hidden units, epochs): around the shipped design, (16, 32, 64), 256, 7
    ((16, 32, 64), 256, 7), ((16, 32, 64), 256, 10), ((16, 32, 64), 512, 7), ((16, 32, 128), 256, 7),
    ((24, 48, 96), 256, 7), ((32, 64, 128), 256, 7),
]


def main(data: str) -> None:
    device = pick_device()
    deterministic = device == "cpu"
    split = split_dataset(load_dataset(data))
    for widths, hidden, epochs in VARIANTS:
        for seed in (42, 7):
            seed_everything(seed, deterministic)
            net = FastCNN(widths, hidden)
            spec = dataclasses.replace(SPECS["fastcnn"], epochs=epochs)
            history, _ = fit(net, spec, split.train, split.val, device)
            acc = np.mean(predict_scores(net, split.test.images, device).argmax(1) == split.test.labels)
            per_epoch = sum(h.seconds for h in history) / len(history)
            print(f"widths {widths} hidden {hidden} epochs {epochs:2d} seed {seed:2d}: "
                  f"held-out {acc:.4f}, {per_epoch:.2f} s/epoch", flush=True)


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main(sys.argv[1])
