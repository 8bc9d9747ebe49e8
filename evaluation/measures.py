"""Per-token losses and byte counts turned into the report's numbers (cross-entropy, bits per byte, embedding
costs); no model is run here.

Sums are taken per window first, then pooled (never a mean of per-window ratios); formulas are in
evaluation/metrics.py and docs/MISSION.md "Measures". Bytes are exact raw bytes of the scored tokens
(`memmix_data.token_byte_lengths`), never characters.
"""

from __future__ import annotations

import torch

from evaluation import metrics
from evaluation.scoring import chunk_slices
from memmix_data import token_byte_lengths

# nominal bits per stored value of each embedding format (the ``n_p * b_p`` formula; the real size adds scales)
NOMINAL_BITS_PER_VALUE = {"fp32": 32, "bf16": 16, "fp16": 16, "e4m3": 8, "e5m2": 8, "int8": 8, "int4": 4}
FORMULA_BITS_PER_VALUE = (4, 8, 16, 32)


def first_scored_position(family: str) -> int:
    """Index of the first token whose prediction is scored: 1 for causal families, 0 for the autoencoder."""
    return 0 if family == "autoencoder" else 1


def scored_token_bytes(tokenizer, input_ids: torch.Tensor, start: int) -> torch.Tensor:
    """(N, T - start) byte count of each scored token (exact raw bytes, never characters)."""
    return token_byte_lengths(tokenizer)[input_ids[:, start:]]


def summarize_losses(losses: torch.Tensor, target_bytes: torch.Tensor) -> dict[str, float]:
    """Cross-entropy (nats/token) and bits per byte over every entry of `losses`, with the bytes of the
    same tokens; sums per window first, then pooled (never a mean of per-window ratios)."""
    if losses.shape != target_bytes.shape:
        raise ValueError(f"losses {tuple(losses.shape)} and target_bytes {tuple(target_bytes.shape)} differ")
    nll = losses.sum(dim=1).tolist()
    num_bytes = target_bytes.sum(dim=1).tolist()
    num_tokens = [losses.shape[1]] * losses.shape[0]
    return {
        "cross_entropy": metrics.cross_entropy_per_token(nll, num_tokens),
        "bits_per_byte": metrics.bits_per_byte(nll, num_bytes),
        "tokens": int(sum(num_tokens)),
        "bytes": int(sum(num_bytes)),
    }


def per_chunk_summaries(losses: torch.Tensor, target_bytes: torch.Tensor, chunk: int) -> list[dict[str, float]]:
    """`summarize_losses` over the predictions made by each chunk's decoder pass (see `chunk_slices`)."""
    return [summarize_losses(losses[:, part], target_bytes[:, part]) for part in chunk_slices(losses.shape[1], chunk)]


def embedding_costs(
    cross_entropy: float, bits_per_vector: float, n_values: int, bits_per_value: float, tokens_per_vector: int,
    data: dict,
) -> dict[str, float]:
    """Embedding bits per byte (real stored size and ``n_p * b_p``) and the total description length.

    `data` holds the scored ``tokens`` and ``bytes``, ``windows`` and ``vectors`` (embeddings stored for them).
    """
    bytes_per_token = data["bytes"] / data["tokens"]
    real = metrics.embedding_bits_per_byte_from_size(bits_per_vector, tokens_per_vector, bytes_per_token)
    formula = metrics.embedding_bits_per_byte(n_values, bits_per_value, tokens_per_vector, bytes_per_token)
    total = metrics.autoencoder_total_bits_per_byte(
        cross_entropy, data["tokens"], data["bytes"], bits_per_vector * data["vectors"] / data["windows"],
        data["windows"],
    )
    return {
        "bits_per_value": bits_per_value,
        "bits_per_vector": bits_per_vector,
        "embedding_bits_per_byte": real,
        "embedding_bits_per_byte_formula": formula,
        "normalized_loss": metrics.normalized_loss_from_size(
            cross_entropy, bits_per_vector, tokens_per_vector, bytes_per_token
        ),
        "normalized_loss_formula": metrics.normalized_loss(
            cross_entropy, n_values, bits_per_value, tokens_per_vector, bytes_per_token
        ),
        "total_bits_per_byte": total,
    }


__all__ = [
    "FORMULA_BITS_PER_VALUE",
    "NOMINAL_BITS_PER_VALUE",
    "embedding_costs",
    "first_scored_position",
    "per_chunk_summaries",
    "scored_token_bytes",
    "summarize_losses",
]
