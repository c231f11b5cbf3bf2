"""A small CNN whose float outputs are all exactly zero: its head has zero weights and bias.

Every variant of it computes zeros too, on the host and on the board, so they "agree":
the fidelity figures must name the outputs as degenerate, never give them a cosine of 1.
"""

from __future__ import annotations

import torch
from torch import nn


class ZeroHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16, 8)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return ZeroHead().eval()


def example_input():
    return (torch.zeros(1, 1, 8, 8),)


def _images():
    generator = torch.Generator().manual_seed(1)
    for _ in range(16):
        yield (torch.rand(1, 1, 8, 8, generator=generator),)


def calibration_data():
    for image in _images():
        yield image, None


def eval_data():  # no labels: judged by cosine, like an encoder
    for image in _images():
        yield image, None
