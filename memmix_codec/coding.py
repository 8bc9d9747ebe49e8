"""Entropy coding for the codec: model logits -> integer frequencies -> constriction's range coder.

Logits are turned into integer counts that sum to exactly ``2**24`` (`quantize_logits`): softmax in float32,
``floor(p * (2**24 - n)) + 1`` for each of the ``n`` allowed ids (so every allowed id stays codable, however
unlikely), 0 for ids that never occur (specials), and the remainder added to the most likely id. All of it is
the same float32 and integer arithmetic, on one thread, so the same logits give the same counts on both sides.
The counts go to ``constriction.stream.model.Categorical(perfect=False)`` as exact dyadic floats (count /
2**24); constriction maps them to its own 24-bit fixed point by a deterministic rule, the same for encoder and
decoder. One range coder serves a whole block: at each step the symbols of all active lanes are coded in lane
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


def quantize_logits(logits: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k, V)`` float logits -> ``(k, V)`` int64 counts summing to ``TOTAL`` per row (0 outside ``allowed``),
    and the float32 probabilities they quantize (zero logits give the uniform distribution)."""
    probs = torch.softmax(logits.float().masked_fill(~allowed, -math.inf), dim=-1)
    n_allowed = int(allowed.sum())
    # float32 products round, so the floors may sum to a little more than TOTAL - n; the remainder (then
    # negative, a few counts) comes off the most likely id, which always holds far more than that
    counts = torch.floor(probs * float(TOTAL - n_allowed)).long() + allowed.long()
    remainder = TOTAL - counts.sum(dim=-1)
    counts[torch.arange(counts.shape[0]), probs.argmax(dim=-1)] += remainder
    return counts, probs


def model_bits(probs: torch.Tensor, symbols: np.ndarray) -> float:
    """Summed ``-log2 p`` of ``symbols`` under ``probs (k, V)`` (the model's own prediction, before quantization)."""
    chosen = probs[torch.arange(probs.shape[0]), torch.as_tensor(symbols, dtype=torch.long)]
    return float(-torch.log2(chosen.double()).sum())


def _probabilities(counts: torch.Tensor) -> np.ndarray:
    return (counts.double() / TOTAL).numpy()


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


__all__ = ["BlockDecoder", "BlockEncoder", "PRECISION_BITS", "TOTAL", "model_bits", "quantize_logits"]
