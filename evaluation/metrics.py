"""Model-independent evaluation measures for memmix (plain Python + numpy, no `evaluate` needed).

Every formula follows the "Measures" section of docs/MISSION.md. Notation:

- ``CE``   cross-entropy in nats per token (mean negative log-likelihood),
- ``L_t``  number of tokens and ``L_b`` number of UTF-8 bytes of the *same* text,
  so ``bytes_per_token = L_b / L_t``; bytes are always counted with ``text.encode("utf-8")``,
  never as characters ("東京" is 2 characters but 6 bytes),
- ``n_p``  number of values in an embedding, ``b_p`` bits stored per value, ``n_ctx`` tokens per window.

Functions take summed negative log-likelihoods (nats) and counts rather than means wherever that
avoids averaging mistakes: the mean of per-sequence bits per byte is *not* the corpus bits per byte.

Example (a model that gives every byte probability 1/2 scores exactly 1 bit per byte)::

    >>> import math
    >>> bits_per_byte([10 * math.log(2)], [10])
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LN2 = math.log(2.0)

FloatOrSequence = float | Sequence[float] | np.ndarray
IntOrSequence = int | Sequence[int] | np.ndarray


def _as_1d_array(values: FloatOrSequence, name: str) -> np.ndarray:
    """Turn a scalar or a sequence into a 1-D float64 array, rejecting empty, NaN and infinite input."""
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1:
        raise ValueError(f"{name} must be a number or a 1-D sequence, got an array of shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty; need at least one value")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains a non-finite value: {array[~np.isfinite(array)][0]}")
    return array


def _as_count_array(values: IntOrSequence, name: str, minimum: int) -> np.ndarray:
    """Turn counts into a 1-D float64 array after checking each is a whole number >= `minimum`."""
    array = _as_1d_array(values, name)
    not_whole = array != np.round(array)
    if np.any(not_whole):
        raise ValueError(f"{name} must hold whole numbers (counts), got {array[not_whole][0]:g}")
    too_small = array < minimum
    if np.any(too_small):
        raise ValueError(f"{name} must be >= {minimum} for every sequence, got {array[too_small][0]:g}")
    return array


def _check_same_length(first: np.ndarray, first_name: str, second: np.ndarray, second_name: str) -> None:
    if first.shape != second.shape:
        raise ValueError(
            f"{first_name} has {first.size} values but {second_name} has {second.size}; "
            "give one value per sequence for both"
        )


def _check_positive(value: float, name: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _check_non_negative(value: float, name: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def bits_per_byte(nll_nats: FloatOrSequence, num_bytes: IntOrSequence) -> float:
    """Bits per UTF-8 byte: ``bpb = sum(nll) / (ln 2 * sum(bytes))``.

    Equivalent to MISSION's ``bpb = (L_t / L_b) * CE / ln 2`` because ``CE * L_t = sum(nll)``.

    Args:
        nll_nats: negative log-likelihood in nats summed over each sequence's predicted tokens
            (a number, or one number per sequence). Must be >= 0.
        num_bytes: UTF-8 byte count of the text those tokens cover (``len(text.encode("utf-8"))``),
            one count per sequence, each > 0.
    """
    nll = _as_1d_array(nll_nats, "nll_nats")
    if np.any(nll < 0):
        raise ValueError(f"nll_nats must be >= 0 (a negative log-likelihood), got {nll[nll < 0][0]}")
    byte_counts = _as_count_array(num_bytes, "num_bytes", minimum=1)
    _check_same_length(nll, "nll_nats", byte_counts, "num_bytes")
    return float(nll.sum() / (LN2 * byte_counts.sum()))


def cross_entropy_per_token(nll_sum: FloatOrSequence, num_tokens: IntOrSequence) -> float:
    """Mean cross-entropy in nats per token: ``CE = sum(nll) / sum(tokens)``.

    Args:
        nll_sum: summed negative log-likelihood in nats (a number, or one per sequence), >= 0.
        num_tokens: number of predicted tokens behind each sum, each > 0.
    """
    nll = _as_1d_array(nll_sum, "nll_sum")
    if np.any(nll < 0):
        raise ValueError(f"nll_sum must be >= 0 (a negative log-likelihood), got {nll[nll < 0][0]}")
    token_counts = _as_count_array(num_tokens, "num_tokens", minimum=1)
    _check_same_length(nll, "nll_sum", token_counts, "num_tokens")
    return float(nll.sum() / token_counts.sum())


def bytes_per_token(num_bytes: IntOrSequence, num_tokens: IntOrSequence) -> float:
    """Average UTF-8 bytes per token of the same text: ``L_b / L_t = sum(bytes) / sum(tokens)``."""
    byte_counts = _as_count_array(num_bytes, "num_bytes", minimum=1)
    token_counts = _as_count_array(num_tokens, "num_tokens", minimum=1)
    _check_same_length(byte_counts, "num_bytes", token_counts, "num_tokens")
    return float(byte_counts.sum() / token_counts.sum())


def embedding_bits_per_byte_from_size(embedding_bits: float, n_ctx: int, bytes_per_token: float) -> float:
    """Cost of one embedding per window in bits per byte: ``bpb_emb = embedding_bits / (n_ctx * L_b/L_t)``.

    Use this with the real stored size of an embedding in bits (e.g. 8 * bytes of a quantized tensor,
    scales included), when that is not simply ``n_values * bits_per_value``.

    Args:
        embedding_bits: bits needed to store one window's embedding, >= 0.
        n_ctx: tokens per window that the embedding stands for, > 0.
        bytes_per_token: ``L_b / L_t`` of the evaluated text, > 0.
    """
    _check_non_negative(embedding_bits, "embedding_bits")
    _check_positive(n_ctx, "n_ctx")
    _check_positive(bytes_per_token, "bytes_per_token")
    return embedding_bits / (n_ctx * bytes_per_token)


def embedding_bits_per_byte(
    n_values: int, bits_per_value: float, n_ctx: int, bytes_per_token: float
) -> float:
    """Embedding cost in bits per byte: ``bpb_emb = n_p * b_p / (n_ctx * L_b/L_t)``.

    Args:
        n_values: ``n_p``, number of values in one window's embedding, > 0.
        bits_per_value: ``b_p``, bits stored per value (32 for fp32, 8 for fp8/int8, 4 for 4-bit), > 0.
        n_ctx: tokens per window, > 0.
        bytes_per_token: ``L_b / L_t`` of the evaluated text, > 0.
    """
    _check_positive(n_values, "n_values")
    _check_positive(bits_per_value, "bits_per_value")
    return embedding_bits_per_byte_from_size(n_values * bits_per_value, n_ctx, bytes_per_token)


def loss_offset(bpb_emb: float, bytes_per_token: float) -> float:
    """Embedding cost in nats per token: ``L_o = bpb_emb * ln 2 / (L_t / L_b)``.

    Bits per byte times ln 2 gives nats per byte; times bytes per token gives nats per token.
    """
    _check_non_negative(bpb_emb, "bpb_emb")
    _check_positive(bytes_per_token, "bytes_per_token")
    return bpb_emb * LN2 * bytes_per_token


def normalized_loss(
    cross_entropy: float, n_values: int, bits_per_value: float, n_ctx: int, bytes_per_token: float
) -> float:
    """Normalized loss in nats per token: ``CE + L_o`` with ``L_o`` from ``n_p * b_p`` (see `loss_offset`)."""
    _check_non_negative(cross_entropy, "cross_entropy")
    bpb_emb = embedding_bits_per_byte(n_values, bits_per_value, n_ctx, bytes_per_token)
    return cross_entropy + loss_offset(bpb_emb, bytes_per_token)


def normalized_loss_from_size(
    cross_entropy: float, embedding_bits: float, n_ctx: int, bytes_per_token: float
) -> float:
    """Normalized loss ``CE + L_o`` where the embedding's stored size is given directly in bits."""
    _check_non_negative(cross_entropy, "cross_entropy")
    bpb_emb = embedding_bits_per_byte_from_size(embedding_bits, n_ctx, bytes_per_token)
    return cross_entropy + loss_offset(bpb_emb, bytes_per_token)


def information_retained(cross_entropy: float, vocab_size: int) -> float:
    """Information retained by an embedding: ``I_e = 1 - CE / ln|V|``.

    1 means the text is regenerated with certainty, 0 means no better than uniform guessing over the
    vocabulary; a model worse than uniform gives a negative value (reported as is, not clipped).
    """
    _check_non_negative(cross_entropy, "cross_entropy")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 (ln|V| is 0 otherwise), got {vocab_size}")
    return 1.0 - cross_entropy / math.log(vocab_size)


def hamming_accuracy(predicted_ids, target_ids, ignore_index: int = -100) -> float:
    """Fraction of positions where the predicted token equals the target: ``mean(pred == target)``.

    Positions whose target is `ignore_index` (padding, like the labels of a causal LM) are left out.
    Accepts lists, numpy arrays or CPU torch tensors of any matching shape.
    """
    predicted = np.asarray(predicted_ids)
    target = np.asarray(target_ids)
    if predicted.shape != target.shape:
        raise ValueError(f"predicted_ids has shape {predicted.shape} but target_ids has shape {target.shape}")
    counted = target != ignore_index
    num_counted = int(counted.sum())
    if num_counted == 0:
        raise ValueError(
            f"no positions to score: every target is ignore_index={ignore_index} (or input is empty)"
        )
    return float((predicted[counted] == target[counted]).sum() / num_counted)


def autoencoder_total_bits_per_byte(
    residual_ce: float,
    num_tokens: int,
    num_bytes: int,
    embedding_bits_per_window: float,
    num_windows: int,
) -> float:
    """Total description length of an autoencoder in bits per byte: residual bpb plus embedding bpb.

    ``total = (residual_ce * num_tokens / ln 2 + embedding_bits_per_window * num_windows) / num_bytes``

    Args:
        residual_ce: decoder cross-entropy given the embedding, nats per token (mean over `num_tokens`).
        num_tokens: tokens scored, ``L_t``.
        num_bytes: UTF-8 bytes of the same text, ``L_b``.
        embedding_bits_per_window: stored size of one window's embedding in bits (``n_p * b_p``).
        num_windows: number of windows (embeddings) that cover the text.
    """
    _check_non_negative(residual_ce, "residual_ce")
    _check_positive(num_tokens, "num_tokens")
    _check_positive(num_bytes, "num_bytes")
    _check_non_negative(embedding_bits_per_window, "embedding_bits_per_window")
    _check_positive(num_windows, "num_windows")
    residual_bits = residual_ce * num_tokens / LN2
    embedding_bits = embedding_bits_per_window * num_windows
    return (residual_bits + embedding_bits) / num_bytes
