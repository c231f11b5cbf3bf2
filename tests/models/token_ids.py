"""A tiny text classifier whose input is token ids, as a transformer's is.

Any id outside ``[0, VOCABULARY)`` makes EMBEDDING_LOOKUP fail ("index out of
bounds"), so a board that measured it on random integers could not run it at all;
its real inputs are the ids ``example_input`` gives.
"""

from __future__ import annotations

import torch
from torch import nn

VOCABULARY = 50


class TokenClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(token_ids).mean(dim=1))


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return TokenClassifier().eval()


def example_input() -> tuple[torch.Tensor]:
    return (torch.arange(1, 13, dtype=torch.int32).reshape(1, 12) % VOCABULARY,)
