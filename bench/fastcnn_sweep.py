"""Which fastcnn design reaches 99.5%? Trains variants (widths, epochs, label smoothing) on the book protocol's
split with the library's own loop and prints held-out accuracy and seconds per epoch, one line each.

Meant for the lent GPU machine (called by bench/gpu_check.sh); on 2 CPU cores one variant takes minutes.
Usage: python bench/fastcnn_sweep.py DATA_DIR
"""

import dataclasses
import sys

import numpy as np
import torch

from digitpipe.data import load_dataset, split_dataset
from digitpipe.models import SPECS, FastCNN
from digitpipe.runtime import pick_device, seed_everything
from digitpipe.train import fit, predict_scores

VARIANTS = [  # (widths, epochs, label smoothing)
    ((16, 32, 64), 7, 0.1), ((16, 32, 64), 9, 0.1), ((16, 32, 64), 12, 0.1), ((16, 32, 64), 9, 0.0),
    ((24, 48, 96), 7, 0.1), ((24, 48, 96), 9, 0.1), ((32, 64, 128), 9, 0.1), ((32, 64, 128), 15, 0.1),
]


def main(data: str) -> None:
    device = pick_device()
    deterministic = device.type == "cpu"
    split = split_dataset(load_dataset(data))
    for widths, epochs, smoothing in VARIANTS:
        for seed in (42, 7):
            seed_everything(seed, deterministic)
            net = FastCNN(widths)
            spec = dataclasses.replace(SPECS["fastcnn"], epochs=epochs, label_smoothing=smoothing)
            history, _ = fit(net, spec, split.train, split.val, device)
            acc = np.mean(predict_scores(net, split.test.images, device).argmax(1) == split.test.labels)
            per_epoch = sum(h.seconds for h in history) / len(history)
            print(f"widths {widths} epochs {epochs:2d} smoothing {smoothing} seed {seed:2d}: "
                  f"held-out {acc:.4f}, {per_epoch:.2f} s/epoch", flush=True)


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main(sys.argv[1])
