"""Entropy coding for the codec: model logits -> integer frequencies -> constriction's range coder.

Logits are turned into integer counts (`Quantizer`): softmax in float32 over the codable ids, ``floor(p *
(2**24 - n)) + 1`` for each of the ``n`` codable ids (so every one stays codable, however unlikely) and 0 for ids
that never occur (specials). All of it is the same float32 arithmetic on one thread, so the same logits give
the same counts on both sides. The counts go to ``constriction.stream.model.Categorical(perfect=False)``, which
maps them to its own 24-bit fixed point by a deterministic rule, the same for encoder and decoder.
One range coder serves a whole block: at each step the symbols of all active lanes are coded in lane
order, which the decoder can follow because it knows all their distributions at that step.
"""

from __future__ import annotations

import math

import constriction
import numpy as np
import torch

PRECISION_BITS = 24
TOTAL = 1 << PRECISION_BITS
_FAMILY = constriction.stream.model.Categorical(perfect=False)


class Quantizer:
    """Turns ``(k, V)`` logits into integer counts for the codable ids ``allowed (V,)``.

    ``counts = floor(p * (2**24 - n)) + 1`` on allowed ids, 0 elsewhere, with ``p`` the float32 softmax over the
    allowed ids. The counts are whole numbers below ``2**24``, so float32 holds them exactly (that is the dtype
    constriction takes); they sum to ``2**24`` up to a few units of float rounding, and constriction rescales
    them to its own 24-bit fixed point by a deterministic rule."""

    def __init__(self, allowed: torch.Tensor):
        self.bias = torch.zeros(allowed.shape[0]).masked_fill(~allowed, -math.inf)
        self.floor_one = allowed.float()
        self.scale = float(TOTAL - int(allowed.sum()))

    def __call__(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Counts ``(k, V)`` float32 (whole numbers) and the probabilities they quantize ``(k, V)``."""
        probs = torch.softmax(logits.float() + self.bias, dim=-1)
        return torch.floor(probs * self.scale) + self.floor_one, probs


def model_bits(probs: torch.Tensor, symbols: np.ndarray) -> float:
    """Summed ``-log2 p`` of ``symbols`` under ``probs (k, V)`` (the model's own prediction, before quantization)."""
    chosen = probs[torch.arange(probs.shape[0]), torch.as_tensor(symbols, dtype=torch.long)]
    return float(-torch.log2(chosen.double()).sum())


def _probabilities(counts: torch.Tensor) -> np.ndarray:
    return counts.numpy()


class BlockEncoder:
    """Range-encodes the symbols of one block, step by step."""

    def __init__(self):
        self.coder = constriction.stream.queue.RangeEncoder()

    def code(self, counts: torch.Tensor, symbols: np.ndarray) -> np.ndarray:
        self.coder.encode(symbols.astype(np.int32), _FAMILY, _probabilities(counts))
        return symbols

    def finish(self) -> np.ndarray:
        """The compressed words (uint32)."""
        return self.coder.get_compressed()


class BlockDecoder:
    """Range-decodes the symbols of one block from its compressed words, step by step."""

    def __init__(self, words: np.ndarray):
        self.coder = constriction.stream.queue.RangeDecoder(words)

    def code(self, counts: torch.Tensor, symbols: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.coder.decode(_FAMILY, _probabilities(counts)), dtype=np.int64)


__all__ = ["BlockDecoder", "BlockEncoder", "PRECISION_BITS", "TOTAL", "Quantizer", "model_bits"]
