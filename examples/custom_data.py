"""Your own model and tensors: a small VGG-like chain trained for a few seconds on digits held
as plain tensors, converted from a tensor of images and simulated on a DataLoader.

    python examples/custom_data.py
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bsnn


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 digits scaled to [0, 1] and standardised: the inputs the model and the SNN see."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    return (x - x.mean()) / x.std(), torch.tensor(d.target)


def model() -> nn.Module:
    """conv-ReLU-pool blocks and linear layers: the chain bsnn converts."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 15) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[i]), y[i]).backward()
            opt.step()


def main() -> None:
    torch.manual_seed(0)
    x, y = digits()
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    net = model()
    train(net, x_train, y_train)
    snn = bsnn.convert(net, x_train, norm=256, device="cpu")  # calibration: a tensor of images
    test = DataLoader(TensorDataset(x_test, y_test), batch_size=100)
    result = bsnn.simulate(snn, test, time=32, device="cpu")
    print(f"ann_accuracy={result.ann_accuracy:.4f} images={result.images}")
    for t in (4, 8, 16, 32):
        print(f"accuracy_t{t}={result.accuracy_per_step[t - 1]:.4f}")
    print(f"final_accuracy={result.final_accuracy:.4f}")


if __name__ == "__main__":
    main()
