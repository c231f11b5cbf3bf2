"""A small CNN on scikit-learn's handwritten digits (real 8x8 images shipped with the package).

The model file protocol ``edge`` reads:

- ``build_model()``: the ``nn.Module`` with its trained weights,
- ``example_input()``: a tuple of tensors the model accepts,
- ``calibration_data()`` / ``eval_data()`` / ``train_data()``: iterables of
  ``(inputs, label)``; ``train_data()`` feeds the recipes that fine-tune (prune, distill).

Weights live beside this file in ``digits_cnn.pt`` (about 150 KB); run
``python examples/digits_cnn.py`` to retrain them (a few seconds on a CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

WEIGHTS = Path(__file__).with_suffix(".pt")
CALIBRATION_SAMPLES = 128


class DigitsCNN(nn.Module):
    """Two convolutions and a 512->64->10 classifier: about 38k parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return train_test_split(images, digits.target, test_size=0.25, random_state=0,
                            stratify=digits.target)


def build_model() -> nn.Module:
    model = DigitsCNN()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return model.eval()


def example_input() -> tuple[torch.Tensor]:
    return (torch.zeros(1, 1, 8, 8),)


def calibration_data():
    train_x, _, train_y, _ = _split()
    images, labels = train_x[:CALIBRATION_SAMPLES], train_y[:CALIBRATION_SAMPLES]
    for image, label in zip(images, labels, strict=True):
        yield (torch.from_numpy(image[None]),), int(label)


def train_data():
    train_x, _, train_y, _ = _split()
    for image, label in zip(train_x, train_y, strict=True):
        yield (torch.from_numpy(image[None]),), int(label)


def eval_data():
    _, eval_x, _, eval_y = _split()
    for image, label in zip(eval_x, eval_y, strict=True):
        yield (torch.from_numpy(image[None]),), int(label)


def train(epochs: int = 30, seed: int = 0) -> nn.Module:
    """Train from scratch on the training split with a fixed seed."""
    torch.manual_seed(seed)
    train_x, eval_x, train_y, eval_y = _split()
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y).long()
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(eval_x)).argmax(1).numpy() == eval_y).mean()
    print(f"eval accuracy {accuracy:.4f} on {len(eval_y)} images")
    return model


if __name__ == "__main__":
    trained = train()
    torch.save(trained.state_dict(), WEIGHTS)
    print(f"wrote {WEIGHTS}")
