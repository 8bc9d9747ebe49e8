"""Exact validation loss and bits per byte of a model over packed windows, on any number of processes.

Bits per byte = summed cross-entropy in nats / (ln 2 x bytes of the scored tokens). The causal families cannot
score the first token of a window (nothing predicts it), so its bytes are not counted; the autoencoder scores
every token. For the autoencoder the result also holds ``val_token_accuracy``: the fraction of scored tokens its
argmax regenerates exactly (Hamming accuracy).
"""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator

from memmix_data import PackedWindows

from .batches import collate_windows


def scored_bytes(batch: dict[str, torch.Tensor], byte_lengths: torch.Tensor, causal: bool) -> torch.Tensor:
    """Bytes of the tokens the loss scores, per window: all of them, minus the first token for causal models."""
    if not causal:
        return batch["num_bytes"]
    return batch["num_bytes"] - byte_lengths[batch["input_ids"][:, 0]]


@torch.no_grad()
def evaluate(model, windows: PackedWindows, accelerator: Accelerator, batch_size: int, causal: bool,
             byte_lengths: torch.Tensor, max_batches: int | None = None) -> dict[str, float]:
    """Validation loss (nats per scored token) and exact bits per byte over the validation windows.

    Windows are dealt round-robin to processes; every process runs the same number of batches (the short
    ones repeat window 0 with weight 0) so sharded models never wait on a missing collective.
    """
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    total = len(windows) if max_batches is None else min(len(windows), max_batches * batch_size * world)
    per_process = math.ceil(total / world)
    mine = torch.arange(rank, total, world)
    weights = torch.cat([torch.ones(len(mine)), torch.zeros(per_process - len(mine))])
    mine = torch.cat([mine, torch.zeros(per_process - len(mine), dtype=torch.long)])
    sums = torch.zeros(4, dtype=torch.float64)  # nats, scored bytes, scored tokens, tokens regenerated exactly
    for start in range(0, per_process, batch_size):
        rows, weight = mine[start : start + batch_size], weights[start : start + batch_size]
        batch = collate_windows(windows, rows)
        output = model(input_ids=batch["input_ids"].to(accelerator.device), labels=batch["labels"].to(accelerator.device))
        nats = output.token_losses.double().sum(dim=1).cpu()
        labels = batch["labels"][:, 1:] if causal else batch["labels"]
        exact = torch.zeros(len(rows)) if causal else (output.logits.argmax(-1).cpu() == labels).sum(dim=1)
        sums += torch.stack([(nats * weight).sum(), (scored_bytes(batch, byte_lengths, causal) * weight).sum(),
                             ((labels != -100).sum(dim=1) * weight).sum(), (exact * weight).sum()])
    sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    model.train()
    nats, num_bytes, tokens, exact = sums.tolist()
    result = {"val_loss": nats / tokens, "val_bits_per_byte": nats / (math.log(2) * num_bytes),
              "val_bytes": int(num_bytes), "val_tokens": int(tokens)}
    if not causal:
        result["val_token_accuracy"] = exact / tokens
    return result
