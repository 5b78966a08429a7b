"""The zoo's torch nets (their hyperparameters live in digitpipe.zoo).

Every net takes raw pixel values 0-255 shaped N x 1 x 28 x 28 and normalises inside, so the
exported ONNX graph has the same contract as the training code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from digitpipe.records.specs import SPECS, NetSpec

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of pixel/255 over the MNIST training set


class PixelNorm(nn.Module):
    """Maps raw pixels 0-255 to standardised values, so callers (and ONNX users) feed raw pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - MNIST_MEAN) / MNIST_STD


class DenseNet(nn.Module):
    """Fully connected layers of `widths` (784 first, 10 last) with `activation` between them: the book's
    single hidden layer (784-50-10, sigmoid) and its deep net (784-128-64-10, ReLU)."""

    def __init__(self, widths: tuple[int, ...], activation: type[nn.Module]) -> None:
        super().__init__()
        layers: list[nn.Module] = [PixelNorm(), nn.Flatten()]
        for n_in, n_out in zip(widths, widths[1:]):
            layers += [nn.Linear(n_in, n_out), activation()]
        self.net = nn.Sequential(*layers[:-1])  # no activation after the last layer: it gives scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet(nn.Module):
    """The book's LeNet: conv 20@5x5, ReLU, maxpool 2; conv 50@5x5, ReLU, maxpool 2; fc 500 ReLU; fc 10 (`width`
    and `hidden` change the 20, the 50 in proportion, and the 500)."""

    def __init__(self, width: int = 20, hidden: int = 500) -> None:
        super().__init__()
        c2 = round(width * 2.5)
        self.norm = PixelNorm()
        self.conv1, self.pool1 = nn.Conv2d(1, width, 5), nn.MaxPool2d(2)
        self.conv2, self.pool2 = nn.Conv2d(width, c2, 5), nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(c2 * 4 * 4, hidden), nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(self.norm(x))))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class FastCNN(nn.Module):
    """digitpipe's own CNN, sized for 2 CPU cores: three 3x3 conv-BatchNorm-ReLU blocks (16, 32, 64 channels),
    each followed by 2x2 max pooling, then a hidden layer of 256 ReLU units. ~2.1 M multiply-adds per image
    (LeNet: ~2.3 M). The hidden layer is the cheap capacity: without it the net underfits its augmented
    training data and stops near 99.35% (bench/README.md).

    Trained with augmentation, AdamW, OneCycle and label smoothing (see digitpipe.records.specs.SPECS). The
    attribute names conv1, pool1, conv2 match LeNet's so the feature-map pictures work for both.
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), hidden: int = 256) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.norm = PixelNorm()
        self.conv1, self.pool1 = _conv_bn_relu(1, c1), nn.MaxPool2d(2)  # 14 x 14
        self.conv2, self.pool2 = _conv_bn_relu(c1, c2), nn.MaxPool2d(2)  # 7 x 7
        self.conv3, self.pool3 = _conv_bn_relu(c2, c3), nn.MaxPool2d(2)  # 3 x 3
        self.head = nn.Sequential(nn.Linear(c3 * 3 * 3, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(self.norm(x)))
        x = self.pool3(self.conv3(self.pool2(self.conv2(x))))
        return self.head(x.flatten(1))


NETS: dict[str, Callable[[NetSpec], nn.Module]] = {  # sized by the spec's width and hidden units
    "mlp": lambda spec: DenseNet((784, spec.hidden, 10), nn.Sigmoid),
    "dnn": lambda spec: DenseNet((784, spec.hidden, max(1, spec.hidden // 2), 10), nn.ReLU),
    "lenet": lambda spec: LeNet(spec.width, spec.hidden),
    "fastcnn": lambda spec: FastCNN((spec.width, 2 * spec.width, 4 * spec.width), spec.hidden),
}


def build_net(name: str, spec: NetSpec | None = None) -> nn.Module:
    """A freshly initialised net by zoo name, sized by `spec` (default: the zoo's); seed torch first for
    reproducible weights."""
    return NETS[name](spec or SPECS[name])
