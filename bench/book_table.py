"""The book's table, reproduced: every zoo model at its default (book) configuration on the book's protocol
(stratified 75/25 of the 60,000-image MNIST training set, seed 42), one process, one table.

Usage: python bench/book_table.py [MNIST_DIR] [--models logreg,mlp,dnn,lenet,fastcnn] [--protocol book|standard]
Note: digitpipe holds 10% of the 75% out as a validation slice, so the models fit on 40,500 images (the book: 45,000).
`--protocol standard` fits on 54,000 of the 60,000 training images and tests on t10k: MNIST_DIR must hold the t10k
files too (`digitpipe data fetch`, or bench/standard_mnist.py where the MNIST mirrors are out of reach).
"""

from __future__ import annotations


import numpy as np
from _common import data_parser, data_path

from digitpipe.data import load_dataset, split_by_protocol
from digitpipe.records.specs import MODEL_NAMES, SPECS
from digitpipe.runtime import pick_device, seed_everything, use_cores
from digitpipe.zoo import train_model

BOOK = {"logreg": 89.4, "mlp": 91.4, "dnn": 97.0, "lenet": 98.9, "fastcnn": None}


def main() -> None:
    parser = data_parser()
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--protocol", choices=("book", "standard"), default="book")
    args = parser.parse_args()
    cores, device = use_cores(), pick_device()
    folder = data_path(args)
    split = split_by_protocol(load_dataset(folder), args.protocol, folder)
    print(f"{args.protocol} protocol: train {len(split.train)}, validation {len(split.val)}, test {len(split.test)}; "
          f"{device}, {cores} threads")
    print(f"{'model':<8} {'book %':>7} {'ours %':>7} {'train s':>8}  stopped")
    for name in args.models.split(","):
        seed_everything(42)
        trained = train_model(name, SPECS[name], split, device, seed=42)
        accuracy = 100 * np.mean(trained.scores(split.test.images).argmax(1) == split.test.labels)
        book = f"{BOOK[name]:.1f}" if BOOK[name] else "-"
        print(f"{name:<8} {book:>7} {accuracy:>7.2f} {trained.train_seconds:>8.1f}  {trained.stop_reason}", flush=True)


if __name__ == "__main__":
    main()
