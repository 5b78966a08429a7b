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
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adamw"
    schedule: str = "constant"  # "constant" or "onecycle" (per batch; lr is the peak)
    label_smoothing: float = 0.0
    augment: bool = False  # random small rotations, shifts and scaling, on the device
    stop_at_val_accuracy: float | None = None  # the book's rule: stop once validation accuracy reaches this
    patience: int | None = None  # stop after this many epochs without a better validation loss


class PixelNorm(nn.Module):
    """Maps raw pixels 0-255 to standardised values, so callers (and ONNX users) feed raw pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - MNIST_MEAN) / MNIST_STD


class MLP(nn.Module):
    """The book's single hidden layer: 784 -> 50 sigmoid units -> 10."""

    def __init__(self, hidden: int = 50) -> None:
        super().__init__()
        self.net = nn.Sequential(PixelNorm(), nn.Flatten(), nn.Linear(784, hidden), nn.Sigmoid(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DNN(nn.Module):
    """The book's deep net: 784-128-64-10 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(PixelNorm(), nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64),
                                 nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class FastCNN(nn.Module):
    """digitpipe's own CNN, sized for 2 CPU cores: three 3x3 conv-BatchNorm-ReLU blocks (16, 32, 64 channels),
    each followed by 2x2 max pooling, then a hidden layer of 256 ReLU units. ~2.1 M multiply-adds per image
    (LeNet: ~2.3 M). The hidden layer is the cheap capacity: without it the net underfits its augmented
    training data and stops near 99.35% (bench/README.md).

    Trained with augmentation, AdamW, OneCycle and label smoothing (see SPECS). The attribute names
    conv1, pool1, conv2 match LeNet's so the feature-map pictures work for both.
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


NETS: dict[str, type[nn.Module]] = {"mlp": MLP, "dnn": DNN, "lenet": LeNet, "fastcnn": FastCNN}
SPECS: dict[str, LogRegSpec | NetSpec] = {
    "logreg": LogRegSpec(),
    # nnet's BFGS on sum-of-squares decay 1e-4, maxit 300, approximated by minibatch SGD with weight decay
    "mlp": NetSpec(epochs=30, batch_size=100, lr=0.1, momentum=0.9, weight_decay=1e-4),
    "dnn": NetSpec(epochs=30, batch_size=100, lr=0.01, momentum=0.9, weight_decay=0.0),
    "lenet": NetSpec(epochs=30, batch_size=100, lr=0.05, momentum=0.9, weight_decay=1e-5),
    "fastcnn": NetSpec(epochs=7, batch_size=128, lr=4e-3, weight_decay=5e-4, optimizer="adamw",
                       schedule="onecycle", label_smoothing=0.1, augment=True),
}
MODEL_NAMES = tuple(SPECS)


def build_net(name: str) -> nn.Module:
    """A freshly initialised net by zoo name (seed torch first for reproducible weights)."""
    return NETS[name]()
