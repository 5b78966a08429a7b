"""Shared bench helpers: locate ../shared/mnist (skip cleanly when absent), the arguments of the one-model benches,
time a callable."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "mnist"


def mnist_path(argv: list[str]) -> Path:
    """MNIST folder from argv[1], else ../shared/mnist; exits 0 with a note when neither exists."""
    path = Path(argv[1]) if len(argv) > 1 else SHARED_MNIST
    if not path.exists():
        print(f"skipped: no MNIST data at {path} (pass a folder with train-images-idx3-ubyte.gz)")
        sys.exit(0)
    return path


def data_parser() -> argparse.ArgumentParser:
    """What every bench takes: an optional MNIST folder (default ../shared/mnist; see `data_path`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", help="MNIST folder (default ../shared/mnist)")
    return parser


def model_bench_parser() -> argparse.ArgumentParser:
    """The arguments the one-model benches share: an optional MNIST folder and `--model` (default lenet)."""
    parser = data_parser()
    parser.add_argument("--model", default="lenet")
    return parser


def model_bench_args(rounds: int, **int_options: int) -> argparse.Namespace:
    """The command line of a one-model bench: `model_bench_parser`'s arguments, `--rounds` (alternating rounds of
    the sides it compares) and one integer option per keyword (`images=20_000`: `--images`, default 20,000)."""
    parser = model_bench_parser()
    parser.add_argument("--rounds", type=int, default=rounds)
    for name, default in int_options.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args()


def data_path(args: argparse.Namespace) -> Path:
    """The MNIST folder of a `data_parser` command line (exits 0 with a note when there is none)."""
    return mnist_path([sys.argv[0]] + ([args.data] if args.data else []))


def timed(fn: Callable[..., object], *args: object) -> float:
    """Wall seconds of one call of fn(*args)."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest wall time of `repeats` calls, in seconds (the least disturbed by a noisy machine)."""
    return min(timed(fn) for _ in range(repeats))
