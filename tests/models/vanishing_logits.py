"""A seeded random-weight CNN whose float logits are about 1e-9, as deep random networks give.

Its fp32 file is right; its full-integer int8 file computes only zeros (the head's outputs
are far below one quantization step of anything before it), on the host and on the board
alike, so the board's outputs "match" the host's.  Nothing may call that a match.
"""

from __future__ import annotations

import torch
from torch import nn


class Vanishing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16, 8)
        with torch.no_grad():  # what many layers of random weights do to a signal
            self.head.weight.mul_(1e-9)
            self.head.bias.mul_(1e-9)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return Vanishing().eval()


def example_input():
    return (torch.zeros(1, 1, 8, 8),)


def _images():
    generator = torch.Generator().manual_seed(1)
    for _ in range(16):
        yield (torch.rand(1, 1, 8, 8, generator=generator),)


def calibration_data():
    for image in _images():
        yield image, None


def eval_data():  # no labels: judged by cosine
    for image in _images():
        yield image, None
