"""Overhead of digitpipe's training loop against a minimal plain PyTorch loop: same model, data, batches, one process.

Usage: python bench/train_overhead.py [MNIST_DIR] [--model lenet] [--images 20000] [--rounds 3]
Both sides train one epoch from the same initial weights; rounds alternate to spread machine noise; the best of
each side is compared. Target: ratio at most 1.05. A third side, the plain loop in the default NCHW layout, shows
what digitpipe's channels_last (NHWC) layout gains on its own.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from _common import data_path, model_bench_args, timed

from digitpipe.data import load_dataset, split_dataset
from digitpipe.models import build_net
from digitpipe.records.specs import SPECS
from digitpipe.runtime import seed_everything, use_cores
from digitpipe.train import fit


def plain_epoch(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, spec) -> None:
    """The textbook loop: shuffle, slice, forward, backward, step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    model.train()
    order = torch.randperm(len(images))
    for start in range(0, len(images), spec.batch_size):
        idx = order[start : start + spec.batch_size]
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    args = model_bench_args(rounds=3, images=20_000)
    cores = use_cores()
    split = split_dataset(load_dataset(data_path(args)))
    train, val = split.train.subset(torch.arange(args.images).numpy()), split.val.subset(torch.arange(500).numpy())
    spec = dataclasses.replace(SPECS[args.model], epochs=1)
    seed_everything(0)
    initial = build_net(args.model)
    nchw = torch.from_numpy(train.images).float().unsqueeze(1)
    nhwc = nchw.contiguous(memory_format=torch.channels_last)  # digitpipe's layout: the main ratio is the loop's cost
    labels = torch.from_numpy(train.labels)
    ours, plain, plain_nchw = [], [], []
    for _ in range(args.rounds):
        ours.append(timed(fit, copy.deepcopy(initial), spec, train, val, torch.device("cpu")))  # + its validation
        plain.append(timed(plain_epoch, copy.deepcopy(initial).to(memory_format=torch.channels_last), nhwc, labels, spec))
        plain_nchw.append(timed(plain_epoch, copy.deepcopy(initial), nchw, labels, spec))
    print(f"{args.model}, {args.images} images, 1 epoch, {cores} threads, best of {args.rounds}")
    print(f"digitpipe fit: {min(ours):.2f} s   plain loop: {min(plain):.2f} s   ratio {min(ours) / min(plain):.3f}")
    print(f"plain loop in NCHW: {min(plain_nchw):.2f} s   channels_last speed-up {min(plain_nchw) / min(plain):.2f}x")


if __name__ == "__main__":
    main()
