"""The model zoo: typed specs whose defaults are the book's configuration, and the nets themselves.

Every net takes raw pixel values 0-255 shaped N x 1 x 28 x 28 and normalises inside, so the
exported ONNX graph has the same contract as the training code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of pixel/255 over the MNIST training set


@dataclass(frozen=True)
class LogRegSpec:
    """Multinomial logistic regression; the book's nnet::multinom decay 5e-3 is an L2 penalty, C = 1 / (2 * decay)."""

    decay: float = 5e-3
    max_iter: int = 100

    @property
    def C(self) -> float:  # noqa: N802 (scikit-learn's name)
        return 1.0 / (2.0 * self.decay)


@dataclass(frozen=True)
class NetSpec:
    """Hyperparameters of one torch net, trained by digitpipe.train.fit."""

    epochs: int = 30
    batch_size: int = 100
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-5


class PixelNorm(nn.Module):
    """Maps raw pixels 0-255 to standardised values, so callers (and ONNX users) feed raw pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - MNIST_MEAN) / MNIST_STD


class LeNet(nn.Module):
    """The book's LeNet: conv 20@5x5, ReLU, maxpool 2; conv 50@5x5, ReLU, maxpool 2; fc 500 ReLU; fc 10."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = PixelNorm()
        self.conv1, self.pool1 = nn.Conv2d(1, 20, 5), nn.MaxPool2d(2)
        self.conv2, self.pool2 = nn.Conv2d(20, 50, 5), nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(50 * 4 * 4, 500), nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(self.norm(x))))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


NETS: dict[str, type[nn.Module]] = {"lenet": LeNet}
SPECS: dict[str, LogRegSpec | NetSpec] = {
    "logreg": LogRegSpec(),
    "lenet": NetSpec(epochs=30, batch_size=100, lr=0.05, momentum=0.9, weight_decay=1e-5),
}
MODEL_NAMES = tuple(SPECS)


def build_net(name: str) -> nn.Module:
    """A freshly initialised net by zoo name (seed torch first for reproducible weights)."""
    return NETS[name]()
