"""A label-free model with two inputs (float features, int64 token ids) and two outputs."""

from __future__ import annotations

import torch
from torch import nn


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.mix = nn.Linear(8 + 6, 16)
        self.head_a = nn.Linear(16, 4)
        self.head_b = nn.Linear(16, 2)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor):
        pooled = self.embed(tokens).mean(dim=1)
        hidden = torch.relu(self.mix(torch.cat([pooled, features], dim=1)))
        return self.head_a(hidden), self.head_b(hidden)


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return TwoHeads().eval()


def example_input():
    return torch.zeros(1, 6), torch.zeros(1, 5, dtype=torch.int64)


def eval_data():
    generator = torch.Generator().manual_seed(1)
    for _ in range(32):
        yield (torch.randn(1, 6, generator=generator),
               torch.randint(0, 50, (1, 5), generator=generator)), None
