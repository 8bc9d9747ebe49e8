"""Bits per byte of a set of documents, each scored on its own from its first token, as evaluation harnesses do.

The report's default packed-window mode (evaluation/scoring.py) joins all documents into one token stream,
cuts it into fixed windows and never scores a window's first token. This module scores every token of every
document instead, the way EleutherAI's lm-evaluation-harness scores ``loglikelihood_rolling`` requests (its
wikitext / pile bits-per-byte tasks), so the numbers are comparable with theirs:

- each document is tokenized alone (no special tokens added; a literal ``<|endoftext|>`` inside the text is
  plain text, as in training) and the end-of-text token (``memmix_data.END_OF_TEXT``; the tokenizer's BOS,
  else its EOS, the harness's ``prefix_token_id``) is put in front of it, so the first token is scored too,
  given a document boundary: training shows every document right after an end-of-text token. The prefix is
  context only; no end-of-text token is scored after the document.
- the model reads at most ``max_length`` tokens at a time (``config.max_sequence_length``: ``n_ctx`` for
  `MixerForCausalLM`, ``n_ctx * (max_memories + 1)`` for `MemoryMixerForCausalLM`). The first window holds the
  prefix and the first ``max_length - 1`` tokens and scores ``min(max_length, n)`` tokens; every later window
  scores the next ``stride`` tokens (fewer at the end) and is filled up to ``max_length`` tokens with the
  tokens just before them, re-read as context. ``stride = max_length`` (the default) is exactly the harness's
  rolling windows (``get_rolling_token_windows(..., context_len=1)`` + ``make_disjoint_window``); a smaller
  stride gives every scored token at least ``max_length - stride`` tokens of context for
  ``max_length / stride`` times the compute (the "sliding window" perplexity of the transformers docs).
- bits per byte = total nats / ln 2 / total UTF-8 bytes of the documents' text.

Windows of the same length are batched (no padding, so any causal model gives exact numbers); logits are
scored in float32 (log-softmax) and summed in float64. Run it from the report
(``python -m evaluation.report --scoring documents``) or directly::

    from evaluation.document_scoring import score_documents
    scores = score_documents(model, tokenizer, ["first document", "second document"])
    print(scores.bits_per_byte, scores.num_tokens, scores.num_bytes)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling_memmix.families import FAMILIES

CAUSAL_MODEL_TYPES = tuple(family.model_type for family in FAMILIES.values() if family.causal)


@dataclass(frozen=True)
class Window:
    """One model call for one document: input ``x[start:end]`` of the prefixed document ``x`` (the prefix
    token, then the document's tokens); the last ``num_scored`` positions are scored, position ``p``
    against ``x[p + 1]``."""

    document: int
    start: int
    end: int
    num_scored: int


@dataclass
class DocumentScores:
    """Per-document and total negative log-likelihoods (nats) of every token, and bits per byte."""

    nll: list[float]  # nats per document
    num_tokens: list[int]  # scored tokens per document (all of its tokens)
    num_bytes: list[int]  # UTF-8 bytes per document
    token_losses: list[torch.Tensor]  # (n_i,) float64 nats of each token of document i
    max_length: int
    stride: int
    prefix_token_id: int
    num_windows: int

    @property
    def total_nll(self) -> float:
        return math.fsum(self.nll)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)

    @property
    def total_bytes(self) -> int:
        return sum(self.num_bytes)

    @property
    def bits_per_byte(self) -> float:
        return self.total_nll / (math.log(2) * self.total_bytes)

    @property
    def cross_entropy(self) -> float:
        """Nats per token."""
        return self.total_nll / self.total_tokens

    def summary(self) -> dict:
        """JSON-ready totals, with the window settings."""
        return {
            "cross_entropy": self.cross_entropy,
            "bits_per_byte": self.bits_per_byte,
            "tokens": self.total_tokens,
            "bytes": self.total_bytes,
            "documents": len(self.nll),
            "windows": self.num_windows,
            "max_length": self.max_length,
            "stride": self.stride,
            "prefix_token_id": self.prefix_token_id,
            "first_token": "scored, given the end-of-text prefix token (as lm-evaluation-harness)",
        }


def causal_max_length(model: torch.nn.Module) -> int:
    """Longest input a memmix causal model reads at once (``config.max_sequence_length``); ValueError for
    models that are not causal LMs (the family registry, `modeling_memmix.families`, says which are)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    family = next((family for family in FAMILIES.values() if family.model_type == model_type), None)
    if family is not None and not family.causal:
        raise ValueError(
            "Document scoring needs a causal LM (MixerForCausalLM or MemoryMixerForCausalLM); a MixerAutoencoder "
            "reconstructs a window from an embedding of that same window, so it gives no next-token likelihoods. "
            "Use the default --scoring windows for autoencoders."
        )
    if family is not None and family.name == "memory" and getattr(config, "memory_mode", None) == "oracle":
        raise ValueError(
            "Document scoring needs a causal LM; a memory model with memory_mode='oracle' reads an embedding of "
            "the chunk it predicts, so its likelihoods are not causal. Use the default --scoring windows, which "
            "charges the embedding's stored size (normalized loss)."
        )
    if family is None or getattr(config, "max_sequence_length", None) is None:
        raise ValueError(
            f"Cannot tell the longest input of model_type {model_type!r}; pass max_length (a memmix causal model "
            f"has config.max_sequence_length; supported: {list(CAUSAL_MODEL_TYPES)})"
        )
    return int(config.max_sequence_length)


def rolling_windows(
    num_tokens: int, max_length: int, stride: int | None = None, document: int = 0
) -> list[Window]:
    """The windows that score all `num_tokens` tokens of one document (see the module docstring).

    Coordinates are those of the prefixed document (``num_tokens + 1`` ids, the prefix at 0), so token ``i``
    of the document is ``x[i + 1]``, predicted from position ``i``.
    """
    stride = max_length if stride is None else stride
    if max_length < 1:
        raise ValueError(f"max_length must be a positive number of tokens, got {max_length}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be between 1 and max_length={max_length}, got {stride}")
    if num_tokens < 1:
        raise ValueError(f"document {document} has no tokens to score")
    first = min(max_length, num_tokens)
    windows = [Window(document, 0, first, first)]
    scored = first
    while scored < num_tokens:
        new = min(stride, num_tokens - scored)
        # inputs x[end - max_length : end] predict up to x[end], i.e. tokens scored .. end - 1
        end = scored + new
        windows.append(Window(document, end - max_length, end, new))
        scored = end
    return windows


def prefix_token_id(tokenizer) -> int:
    """The token put before each document: BOS, else EOS (lm-evaluation-harness's rule); memmix: END_OF_TEXT."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("The tokenizer has neither a bos_token nor an eos_token to put before each document")


def tokenize_documents(tokenizer, documents: Sequence[str]) -> list[list[int]]:
    """Token ids of each document alone, no special tokens added (a literal special token stays text)."""
    encoded = tokenizer(list(documents), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    for index, (text, ids) in enumerate(zip(documents, encoded)):
        if not ids:
            raise ValueError(
                f"document {index} ({text[:40]!r}) gives no tokens; documents must be non-empty text"
            )
    return encoded


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def score_token_ids(
    model: torch.nn.Module,
    documents_ids: Sequence[Sequence[int]],
    prefix_id: int,
    max_length: int,
    stride: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> tuple[list[torch.Tensor], int]:
    """Nats of every token of every (already tokenized) document, and the number of model calls' windows.

    ``model(input_ids=ids).logits`` must be ``(B, T, V)`` with ``logits[:, p]`` predicting token ``p + 1``.
    Returns one float64 tensor of ``len(ids)`` losses per document, in document order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prefixed = [torch.tensor([prefix_id, *ids], dtype=torch.long) for ids in documents_ids]
    windows = [
        w
        for index, ids in enumerate(documents_ids)
        for w in rolling_windows(len(ids), max_length, stride, index)
    ]
    by_length: dict[int, list[Window]] = defaultdict(list)
    for window in windows:
        by_length[window.end - window.start].append(window)
    pieces: dict[int, list[tuple[int, torch.Tensor]]] = defaultdict(list)  # document -> (end, losses)
    device = _model_device(model)
    with tqdm(total=len(windows), desc="documents", unit="window", disable=not progress, leave=False) as bar:
        for length in sorted(by_length, reverse=True):
            group = by_length[length]
            for first in range(0, len(group), batch_size):
                batch = group[first : first + batch_size]
                inputs = torch.stack([prefixed[w.document][w.start : w.end] for w in batch])  # (B, T)
                targets = torch.stack(
                    [prefixed[w.document][w.start + 1 : w.end + 1] for w in batch]
                )  # (B, T)
                logits = model(input_ids=inputs.to(device)).logits  # (B, T, V)
                losses = F.cross_entropy(
                    logits.float().transpose(1, 2), targets.to(logits.device), reduction="none"
                )
                losses = losses.double().cpu()
                for row, window in enumerate(batch):
                    pieces[window.document].append((window.end, losses[row, length - window.num_scored :]))
                bar.update(len(batch))
    token_losses = []
    for index, ids in enumerate(documents_ids):
        ordered = torch.cat([losses for _, losses in sorted(pieces[index], key=lambda piece: piece[0])])
        if ordered.numel() != len(ids):
            raise RuntimeError(f"document {index}: {ordered.numel()} losses for {len(ids)} tokens")
        token_losses.append(ordered)
    return token_losses, len(windows)


def score_documents(
    model: torch.nn.Module,
    tokenizer,
    documents: Sequence[str],
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> DocumentScores:
    """Score every token of every document (see the module docstring); bits per byte over their UTF-8 bytes.

    `max_length` defaults to the model's (`causal_max_length`), which also refuses models that are not
    causal LMs; `stride` defaults to `max_length` (lm-evaluation-harness's rolling windows).
    """
    if len(documents) == 0:
        raise ValueError("No documents to score")
    if max_length is None:
        max_length = causal_max_length(model)
    stride = max_length if stride is None else stride
    prefix = prefix_token_id(tokenizer)
    documents_ids = tokenize_documents(tokenizer, documents)
    token_losses, num_windows = score_token_ids(
        model, documents_ids, prefix, max_length, stride, batch_size, progress
    )
    return DocumentScores(
        nll=[math.fsum(losses.tolist()) for losses in token_losses],
        num_tokens=[len(ids) for ids in documents_ids],
        num_bytes=[len(text.encode("utf-8")) for text in documents],
        token_losses=token_losses,
        max_length=max_length,
        stride=stride,
        prefix_token_id=prefix,
        num_windows=num_windows,
    )
