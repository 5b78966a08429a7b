"""Test-time augmentation, measured: does averaging a net's class probabilities over a few shifted copies of each
digit, inside the ONNX graph (so every consumer of the file would get it), buy robust accuracy worth its cost?

Usage: python bench/tta.py [MNIST_DIR] [--model fastcnn] [--seed 42] [--digits 5000]
One process: the net trained once on the book protocol's training part, exported plain and wrapped, each file
scored by onnxruntime on the same perturbation suite (digitpipe.robustness, `--digits` held-out digits) and timed on
the clean held-out part (best of 3). The option would ship only with a gain of at least 0.2 points of robust accuracy
at no less than half the plain file's images per second (issue 16).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _common import best_of, data_parser, data_path
from torch import nn

from digitpipe.data import load_dataset, split_by_protocol
from digitpipe.export import export_onnx
from digitpipe.zoo import train_model
from digitpipe.robustness import build_suite, measure
from digitpipe.runtime import pick_device, use_cores
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.specs import SPECS

VARIANTS = {  # name -> the (down, right) pixel shifts whose copies are averaged
    "plain": [(0, 0)],
    "2 copies (centre, 1 px diagonal)": [(0, 0), (1, 1)],
    "3 copies (centre, 1 px left and right)": [(0, 0), (0, -1), (0, 1)],
    "5 copies (centre, 1 px each way)": [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)],
}


class ShiftAverage(nn.Module):
    """`net`'s softmax averaged over copies of the input rolled by `shifts`, in one batch through the net."""

    def __init__(self, net: nn.Module, shifts: list[tuple[int, int]]) -> None:
        super().__init__()
        self.net, self.shifts = net, shifts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        copies = torch.cat([torch.roll(x, shifts=shift, dims=(2, 3)) for shift in self.shifts])
        return self.net(copies).softmax(-1).reshape(len(self.shifts), -1, 10).mean(0)


def main() -> None:
    parser = data_parser()
    parser.add_argument("--model", default="fastcnn")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--digits", type=int, default=5000)
    args = parser.parse_args()
    cores, device = use_cores(), pick_device()
    split = split_by_protocol(load_dataset(data_path(args)), "book", data_path(args))
    suite = build_suite(split.test, seed=0, max_digits=args.digits)
    trained = train_model(args.model, SPECS[args.model], split, device, seed=args.seed)
    print(f"{args.model} seed {args.seed}, trained in {trained.train_seconds:.0f} s; suite of {len(suite.digits):,} "
          f"digits; timed on {len(split.test):,} clean digits, onnxruntime, {cores} threads")
    print(f"{'variant':<40} {'clean %':>8} {'robust %':>9} {'images/s':>9} {'speed':>6} {'robust gain':>12}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, shifts in VARIANTS.items():
            model = trained.model if len(shifts) == 1 else ShiftAverage(trained.model, shifts)
            scorer = OnnxScorer(export_onnx(model, Path(tmp) / f"{len(shifts)}.onnx"))
            result, _ = measure(scorer.predict, suite)
            rate = len(split.test) / best_of(lambda s=scorer: s.predict(split.test.images))
            base = base or (result.robust_accuracy, rate)
            print(f"{name:<40} {100 * result.clean_accuracy:>8.2f} {100 * result.robust_accuracy:>9.2f} "
                  f"{rate:>9,.0f} {rate / base[1]:>6.2f} {100 * (result.robust_accuracy - base[0]):>+12.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
