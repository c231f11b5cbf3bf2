"""A tiny bag-of-embeddings classifier with an embedding table and no calibration data.

Its ``int8-dynamic`` file once did not run: the converter quantized the embedding table
with a non-zero zero point, which the EMBEDDING_LOOKUP kernel rejects
(``embedding_lookup.cc ... zero_point == 0``), as it did on real transformers; the table is
now quantized symmetrically per row and dequantized at load.  Its ``int8`` cannot be built
(no ``calibration_data()``): a variant that fails alone.  Token ids arrive as floats and
are clamped into the table, so the board's random measuring inputs stay valid indices.
"""

from __future__ import annotations

import torch
from torch import nn

VOCABULARY = 64


class EmbeddingBag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        tokens = (codes.abs() * 10).long().clamp(0, VOCABULARY - 1)
        return self.head(self.embed(tokens).mean(dim=1))


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return EmbeddingBag().eval()


def example_input() -> tuple[torch.Tensor]:
    return (torch.linspace(0, 6, 8).reshape(1, 8),)
