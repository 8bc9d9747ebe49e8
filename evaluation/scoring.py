"""Run memmix models over token windows and return per-token losses in nats, for exact report numbers.

Every function takes ``input_ids (N, T)`` on the CPU, runs the model in batches (no gradient, a tqdm
bar over batches) and returns CPU float64 tensors, so the report can sum nats and bytes over exactly
the tokens it scores. Cross-entropies are computed here from the logits (float32 log-softmax), not
taken from the model's ``loss``; the tests compare them with the model's own ``loss_sum``.

Which tokens are scored:

- causal LM and memory model: ``losses[:, p]`` is the loss of predicting token ``p + 1`` from position
  ``p`` (shape ``(N, T - 1)``); the first token of each window has no prediction.
- autoencoder: ``losses[:, t]`` is the loss of reconstructing token ``t`` (shape ``(N, T)``).

Memory models, "memories removed" (`memory_token_losses_without_memories`): every chunk is decoded as
the model decodes a sequence's first chunk, with nothing in its memory slots —

- ``past``: each chunk is fed alone (a one-chunk sequence: all memory slots are the zero padding the
  model is trained with for chunk 1); its last position still predicts the next chunk's first token;
- ``recurrent``: each chunk fed alone, so it reads the learned start memory, as chunk 1 does;
- ``oracle``: chunk 1 also reads an embedding (of itself), so there is no trained "empty" input: the
  chunk's memory slot is filled with zeros (the padding value past mode uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling_memmix.quantization import QuantizedEmbedding


def _batches(input_ids: torch.Tensor, batch_size: int, desc: str, progress: bool) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with tqdm(total=input_ids.shape[0], desc=desc, unit="window", disable=not progress, leave=False) as bar:
        for start in range(0, input_ids.shape[0], batch_size):
            batch = input_ids[start : start + batch_size]
            yield batch
            bar.update(batch.shape[0])


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def next_token_losses(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) ids -> (B, T - 1) nats: ``logits[:, p]`` scored against ``ids[:, p + 1]``."""
    shifted = logits[:, :-1].float()
    targets = input_ids[:, 1:].to(shifted.device)
    return F.cross_entropy(shifted.transpose(1, 2), targets, reduction="none")


def position_losses(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) ids -> (B, T) nats: ``logits[:, t]`` scored against ``ids[:, t]`` (no shift)."""
    return F.cross_entropy(logits.float().transpose(1, 2), input_ids.to(logits.device), reduction="none")


@torch.no_grad()
def _run_batched(
    input_ids: torch.Tensor,
    batch_losses: Callable[[torch.Tensor], torch.Tensor],
    model: torch.nn.Module,
    batch_size: int,
    desc: str,
    progress: bool,
) -> torch.Tensor:
    device = _model_device(model)
    pieces = [
        batch_losses(batch.to(device)).double().cpu() for batch in _batches(input_ids, batch_size, desc, progress)
    ]
    return torch.cat(pieces)


def causal_token_losses(
    model: torch.nn.Module, input_ids: torch.Tensor, batch_size: int = 8, progress: bool = False,
    desc: str = "causal LM",
) -> torch.Tensor:
    """Next-token losses (N, T - 1) of a causal model (`MixerForCausalLM`, `MemoryMixerForCausalLM`, or any
    module whose ``model(input_ids=...)`` returns ``.logits`` of shape (B, T, V))."""
    return _run_batched(
        input_ids, lambda ids: next_token_losses(model(input_ids=ids).logits, ids), model, batch_size, desc, progress
    )


# ---------------------------------------------------------------------------------------------
# Autoencoder
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def autoencoder_scores(
    model: torch.nn.Module, input_ids: torch.Tensor, embedding_format: str | None = None, batch_size: int = 8,
    progress: bool = False,
) -> dict[str, torch.Tensor | float]:
    """Reconstruction of every window from its embedding, stored in `embedding_format` (None = float as is).

    Returns ``losses`` (N, T) nats, ``predicted`` (N, T) argmax ids, and ``bits_per_window``: the real
    stored size of one window's embedding in that format (codes + scales, `QuantizedEmbedding.num_bits`;
    ``32 * embedding_dim`` for None).
    """
    device = _model_device(model)
    losses, predicted, bits = [], [], []
    desc = f"autoencoder ({embedding_format or 'float'})"
    for batch in _batches(input_ids, batch_size, desc, progress):
        batch = batch.to(device)
        embedding = model.encode(batch, embedding_format=embedding_format or "fp32")
        if not isinstance(embedding, QuantizedEmbedding):
            raise TypeError(
                f"encode(embedding_format=...) must return a QuantizedEmbedding, got {type(embedding).__name__}"
            )
        bits.append(embedding.bits_per_vector)
        logits = model.decode(embedding)
        losses.append(position_losses(logits, batch).double().cpu())
        predicted.append(logits.argmax(dim=-1).cpu())
    if len(set(bits)) != 1:
        raise RuntimeError(f"embedding size differs between batches: {sorted(set(bits))} bits per window")
    return {"losses": torch.cat(losses), "predicted": torch.cat(predicted), "bits_per_window": float(bits[0])}


# ---------------------------------------------------------------------------------------------
# Memory model
# ---------------------------------------------------------------------------------------------


def _check_whole_chunks(model: torch.nn.Module, input_ids: torch.Tensor) -> None:
    chunk = model.config.n_ctx
    if input_ids.shape[1] % chunk:
        raise ValueError(f"windows of {input_ids.shape[1]} tokens are not a whole number of {chunk}-token chunks")


def memory_token_losses_without_memories(
    model: torch.nn.Module, input_ids: torch.Tensor, batch_size: int = 8, progress: bool = False
) -> torch.Tensor:
    """Next-token losses (N, T - 1) of a memory model with its memories removed (see the module docstring)."""
    _check_whole_chunks(model, input_ids)
    return _run_batched(
        input_ids, lambda ids: next_token_losses(model(input_ids=ids, without_memories=True).logits, ids), model,
        batch_size, "memory model (memories removed)", progress,
    )


def chunk_slices(num_predictions: int, chunk: int) -> list[slice]:
    """Prediction positions made by each chunk's decoder pass: chunk c predicts from positions
    ``c * chunk .. (c + 1) * chunk - 1`` (the last chunk has one prediction fewer: nothing follows it)."""
    return [slice(start, min(start + chunk, num_predictions)) for start in range(0, num_predictions, chunk)]


def memory_token_losses_with_format(
    model: torch.nn.Module, input_ids: torch.Tensor, embedding_format: str | None, batch_size: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """Next-token losses of a memory model whose memories are stored in `embedding_format` (None = float)."""
    stored = embedding_format or "fp32"
    return _run_batched(
        input_ids,
        lambda ids: next_token_losses(model(input_ids=ids, embedding_format=stored).logits, ids),
        model, batch_size, f"memory model ({embedding_format})", progress,
    )


@torch.no_grad()
def memory_bits_per_chunk(model: torch.nn.Module, input_ids: torch.Tensor, embedding_format: str) -> float:
    """Real stored size in bits of one chunk's memory in `embedding_format` (codes + scales)."""
    chunk = model.config.n_ctx
    first_chunk = input_ids[:1, :chunk].to(_model_device(model)).unsqueeze(1)  # (1, 1, C)
    return float(model.quantized_memories(first_chunk, embedding_format).bits_per_vector)


def copy_task_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """Windows whose second half repeats the first: ``[a, a]`` with ``a`` the first ``T // 2`` tokens."""
    half = input_ids.shape[1] // 2
    if half < 2:
        raise ValueError(f"the copy task needs windows of at least 4 tokens, got {input_ids.shape[1]}")
    first = input_ids[:, :half]
    return torch.cat([first, first], dim=1)


def repeated_chunk_ids(input_ids: torch.Tensor, chunk: int, source: int, target: int) -> torch.Tensor:
    """Windows whose chunk ``target`` is overwritten by a copy of chunk ``source < target`` (the recall task; the
    copy task's ``[a, a]`` repeats every chunk of the first half at once)."""
    num_chunks = input_ids.shape[1] // chunk
    if input_ids.shape[1] % chunk or not 0 <= source < target < num_chunks:
        raise ValueError(f"chunk {target} cannot repeat chunk {source}: windows of {input_ids.shape[1]} tokens hold "
                         f"{num_chunks} whole chunks of {chunk}, and the source must come first")
    repeated = input_ids.clone()
    repeated[:, target * chunk : (target + 1) * chunk] = input_ids[:, source * chunk : (source + 1) * chunk]
    return repeated


def random_token_ids(num_windows: int, window: int, num_ids: int, seed: int = 0) -> torch.Tensor:
    """Uniformly random token ids in ``[0, num_ids)``, shape (num_windows, window), from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_ids, (num_windows, window), generator=generator)
