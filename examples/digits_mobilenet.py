"""A MobileNetV2-style network (inverted residuals, depthwise convolutions) on digits at 32x32.

scikit-learn's 8x8 digits are upsampled to 32x32 so the network has real work
to do for latency figures.  Same model file protocol as ``digits_cnn.py``
(``build_model``, ``example_input``, ``calibration_data``, ``eval_data``,
``train_data``).  Weights live beside this file in ``digits_mobilenet.pt``; run
``python examples/digits_mobilenet.py`` to retrain them (about a minute on a CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional

WEIGHTS = Path(__file__).with_suffix(".pt")
SIZE = 32
CALIBRATION_SAMPLES = 128


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 project; a skip connection when shapes allow."""

    def __init__(self, inputs: int, outputs: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inputs * expand
        self.skip = stride == 1 and inputs == outputs
        self.block = nn.Sequential(
            nn.Conv2d(inputs, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, outputs, 1, bias=False), nn.BatchNorm2d(outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.skip else self.block(x)


class DigitsMobileNet(nn.Module):
    """Stem, seven inverted residual blocks, 1x1 head, pooled classifier: about 0.2M parameters."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32),
                                   nn.ReLU6()]
        channels = 32
        for outputs, stride in ((32, 1), (48, 2), (48, 1), (64, 2), (64, 1), (96, 2), (96, 1)):
            layers.append(InvertedResidual(channels, outputs, stride, expand=4))
            channels = outputs
        layers += [nn.Conv2d(channels, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    images = torch.from_numpy((digits.images / 16.0).astype(np.float32)[:, None])
    large = functional.interpolate(images, size=(SIZE, SIZE), mode="bilinear",
                                   align_corners=False).numpy()
    return train_test_split(large, digits.target, test_size=0.25, random_state=0,
                            stratify=digits.target)


def build_model() -> nn.Module:
    model = DigitsMobileNet()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return model.eval()


def example_input() -> tuple[torch.Tensor]:
    return (torch.zeros(1, 1, SIZE, SIZE),)


def _samples(images: np.ndarray, labels: np.ndarray):
    for image, label in zip(images, labels, strict=True):
        yield (torch.from_numpy(image[None]),), int(label)


def calibration_data():
    train_x, _, train_y, _ = _split()
    return _samples(train_x[:CALIBRATION_SAMPLES], train_y[:CALIBRATION_SAMPLES])


def train_data():
    train_x, _, train_y, _ = _split()
    return _samples(train_x, train_y)


def eval_data():
    _, eval_x, _, eval_y = _split()
    return _samples(eval_x, eval_y)


def train(epochs: int = 12, seed: int = 0) -> nn.Module:
    """Train from scratch on the training split with a fixed seed."""
    torch.manual_seed(seed)
    train_x, eval_x, train_y, eval_y = _split()
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y).long()
    model = DigitsMobileNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, epochs=epochs,
                                                   steps_per_epoch=(len(x) + 63) // 64)
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{epochs}")
    model.eval()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(eval_x)).argmax(1).numpy() == eval_y).mean()
    print(f"eval accuracy {accuracy:.4f} on {len(eval_y)} images")
    return model


if __name__ == "__main__":
    trained = train()
    torch.save(trained.state_dict(), WEIGHTS)
    print(f"wrote {WEIGHTS}")
