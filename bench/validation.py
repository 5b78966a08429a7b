"""What great-expectations validation adds to a run on 60,000 images, in one process: load + split without
validation vs load + validate + split; cold (first call: imports great-expectations) and warm.

Usage: python bench/validation.py [MNIST_DIR]
"""

from __future__ import annotations

import time

from _common import mnist_path

from digitpipe.data import load_dataset, split_dataset
from digitpipe.validation import validate


def main() -> None:
    path = mnist_path(__import__("sys").argv)

    def without() -> float:
        start = time.perf_counter()
        split_dataset(load_dataset(path))
        return time.perf_counter() - start

    def with_validation() -> tuple[float, float]:
        start = time.perf_counter()
        data = load_dataset(path)
        mark = time.perf_counter()
        assert validate(data).success
        validated = time.perf_counter()
        split_dataset(data)
        return time.perf_counter() - start, validated - mark

    base = min(without() for _ in range(3))
    cold_total, cold_validate = with_validation()
    warm_total, warm_validate = min(with_validation() for _ in range(3))
    print(f"load + split, 60,000 images: {base:.2f} s")
    print(f"with validation, cold (imports great-expectations): {cold_total:.2f} s "
          f"(+{cold_total - base:.2f} s, ratio {cold_total / base:.2f}; the suite itself {cold_validate:.2f} s)")
    print(f"with validation, warm: {warm_total:.2f} s (+{warm_total - base:.2f} s, ratio {warm_total / base:.2f}; "
          f"the suite itself {warm_validate:.2f} s)")


if __name__ == "__main__":
    main()
