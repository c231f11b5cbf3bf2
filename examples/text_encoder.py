"""A small BERT-style sentence encoder: token ids and an attention mask in, one unit-length
sentence embedding out (mean of the last hidden states over the real tokens).

Built with ``transformers`` (``BertModel``: embeddings, 4 attention layers with layer norm
and GELU), randomly initialised with a fixed seed: what matters to ``edge`` is the shape of
the work and of the inputs, not what the weights learnt.  The sentences are real English,
the help texts Python ships (``pydoc_data``), cut into words and hashed into the
vocabulary; ``eval_data()`` has no labels, so variants are judged by the cosine
similarity of their embeddings with the float model's.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pydoc_data.topics import topics

import torch
from torch import nn
from transformers import BertConfig, BertModel

VOCABULARY = 8192
SEQUENCE = 32
PADDING, START = 0, 1
CALIBRATION_SAMPLES = 128
EVAL_SAMPLES = 256


class SentenceEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = BertConfig(vocab_size=VOCABULARY, hidden_size=128, num_hidden_layers=4,
                            num_attention_heads=4, intermediate_size=512,
                            max_position_embeddings=SEQUENCE, attn_implementation="eager")
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, token_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The additive mask is built here: the library's boolean padding mask becomes a
        # GATHER_ND on booleans (op version 5), which tflite-runtime 2.14 cannot load.
        mask = attention_mask.to(torch.float32)
        additive = ((1.0 - mask) * torch.finfo(torch.float32).min)[:, None, None, :]
        hidden = self.bert(input_ids=token_ids, attention_mask=additive).last_hidden_state
        weights = mask.unsqueeze(-1)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return SentenceEncoder().eval()


def tokens(sentence: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (a start token, then one id per word, hashed) and the mask, padded."""
    words = re.findall(r"[a-z]+", sentence.lower())[:SEQUENCE - 1]
    ids = [START] + [2 + zlib.crc32(word.encode()) % (VOCABULARY - 2) for word in words]
    mask = [1] * len(ids) + [0] * (SEQUENCE - len(ids))
    ids += [PADDING] * (SEQUENCE - len(ids))
    return torch.tensor([ids], dtype=torch.int64), torch.tensor([mask], dtype=torch.int64)


def _sentences() -> Iterator[str]:
    for name in sorted(topics):
        for sentence in re.split(r"(?<=[.!?])\s+", topics[name]):
            if len(re.findall(r"[a-z]+", sentence.lower())) >= 4:
                yield " ".join(sentence.split())


def example_input() -> tuple[torch.Tensor, torch.Tensor]:
    return tokens("The quick brown fox jumps over the lazy dog.")


def calibration_data() -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], None]]:
    for count, sentence in enumerate(_sentences()):
        if count == CALIBRATION_SAMPLES:
            return
        yield tokens(sentence), None


def eval_data() -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], None]]:
    for count, sentence in enumerate(_sentences()):
        if count >= CALIBRATION_SAMPLES + EVAL_SAMPLES:
            return
        if count >= CALIBRATION_SAMPLES:  # sentences the calibration did not see
            yield tokens(sentence), None
