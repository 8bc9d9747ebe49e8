"""Clear errors for bad model input, in one place: token ids, labels and attention masks.

Shape checks always run. Checks that read tensor *values* (ids inside the vocabulary, labels, the pattern of an
attention mask) need the values on the host: each is a device sync, and under ``torch.compile`` a graph break.
They run in eager mode only (`value_checks_enabled`), so ``torch.compile(model, fullgraph=True)`` traces the
training forward and backward of every family without a graph break or a sync. Check values where the data is
still on the host instead: ``train_accelerate.py`` checks every training and validation window against the model
before the first step (``memmix_train.data.check_windows_fit``). Inside a compiled graph these messages are not
raised: a loop of your own that compiles a model should check its data first, as that function does.

Only torch is imported: this file ships as Hugging Face remote code.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def value_checks_enabled() -> bool:
    """True in eager mode; False while ``torch.compile`` traces (no host syncs inside a compiled graph)."""
    return not torch.compiler.is_compiling()


def check_input_ids(input_ids: torch.Tensor, vocab_size: int, max_length: int, what: str = "input_ids") -> None:
    """Raise ``ValueError`` for empty input, a wrong shape, ids outside the vocabulary or too many tokens."""
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"{what} must have shape (batch, length), got shape {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(input_ids.shape)}); give at least one token")
    if input_ids.dtype.is_floating_point:
        raise ValueError(f"{what} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[1] > max_length:
        raise ValueError(
            f"{what} has length {input_ids.shape[1]}, but this model accepts at most {max_length} tokens"
        )
    if value_checks_enabled():
        check_token_range(input_ids, vocab_size, what)


def check_token_range(input_ids: torch.Tensor, vocab_size: int, what: str = "input_ids") -> None:
    """Raise ``ValueError`` naming the first id outside ``[0, vocab_size)``."""
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"{what} contains token id {bad}, outside the vocabulary [0, {vocab_size})")


def check_labels(labels: torch.Tensor, input_ids: torch.Tensor, vocab_size: int) -> None:
    """Labels must match the input's shape and hold vocabulary ids or -100."""
    if labels.shape != input_ids.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} differs from input_ids shape {tuple(input_ids.shape)}")
    if not value_checks_enabled():
        return
    valid = (labels == IGNORE_INDEX) | ((labels >= 0) & (labels < vocab_size))
    if not bool(valid.all()):
        bad = int(labels[~valid][0])
        raise ValueError(f"labels contain {bad}, neither -100 nor inside the vocabulary [0, {vocab_size})")


def check_attention_mask(attention_mask: torch.Tensor, input_ids: torch.Tensor) -> None:
    """The mask must be ``(B, T)`` like the input and each row one run of ones: left padding, right padding or
    both (``0 0 1 1 1 0``). A zero between two tokens would mean skipping a position, which a model with
    absolute positions cannot do, so it raises instead of being silently read as a token."""
    if attention_mask.shape != input_ids.shape[:2]:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} differs from the input's "
            f"{tuple(input_ids.shape[:2])}"
        )
    if not value_checks_enabled():
        return
    valid = attention_mask.bool()
    leading = (valid.long().cumsum(1) == 0).sum(1)
    trailing = (valid.flip(1).long().cumsum(1) == 0).sum(1)
    gaps = (leading + valid.sum(1) + trailing != valid.shape[1]) & valid.any(1)
    if bool(gaps.any()):
        row = int(gaps.nonzero()[0])
        raise ValueError(
            f"attention_mask row {row} has zeros between tokens ({attention_mask[row].tolist()}); only left or "
            "right padding is supported (each row: zeros, then its tokens, then zeros)"
        )
    empty = ~valid.any(1)
    if bool(empty.any()):
        row = int(empty.nonzero()[0])
        raise ValueError(f"attention_mask row {row} is all zeros: that row has no token to read")


__all__ = ["IGNORE_INDEX", "check_attention_mask", "check_input_ids", "check_labels", "check_token_range",
           "value_checks_enabled"]
