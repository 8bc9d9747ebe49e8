"""Training micro-batches as a deterministic function of the micro-step, so resuming needs only the step count.

`WindowBatches` deals the packed windows (`memmix_data.PackedWindows`) of one epoch in a permutation seeded by
(seed, epoch); `collate_windows` turns chosen rows into a batch with one ``PackedWindows.__getitem__`` call (ids, labels
with -100 on padding, byte counts).

With ``random_offsets`` each dealt window is moved forward by a random number of tokens (seeded by (seed,
micro-step)) along the packed token stream, so training sees up to ``window`` times more distinct windows of the
same text; the autoencoder memorizes the fixed windows of a small corpus within a few epochs otherwise.

With ``repeat_chunks=p`` (memory family, recall training) a fraction ``p`` of the windows has one chunk, drawn from
the second onward, overwritten by a copy of an earlier chunk (seeded by (seed, micro-step)): natural text almost never
repeats a whole chunk, so without it nothing asks the decoder to read a memory token by token. ``repeat_source``
says which earlier chunk: ``"any"`` (uniform), ``"first"`` (always chunk 0, so the memory to read is always in
slot 0) or ``"previous"`` (the chunk just before); the last two test whether finding the memory is what is hard.
"""

from __future__ import annotations

import torch

from memmix_data import PackedWindows
from memmix_train.config import REPEAT_SOURCES


def collate_windows(windows: PackedWindows, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The windows at ``rows`` as one batch: ``input_ids`` and ``labels`` (B, window), ``num_bytes`` (B,)."""
    return windows[rows]


class WindowBatches:
    """Micro-batches of one process: epoch ``e`` visits windows in a permutation seeded by (seed, e);
    global micro-step ``k`` takes ``batch_size * processes`` of them and this process its own slice.

    One process with batch ``2B`` sees exactly the windows two processes with batch ``B`` see together.
    """

    def __init__(self, windows: PackedWindows, batch_size: int, rank: int, world: int, seed: int,
                 random_offsets: bool = False, repeat_chunks: float = 0.0, chunk: int | None = None,
                 repeat_source: str = "any"):
        self.windows, self.batch_size, self.rank, self.world, self.seed = windows, batch_size, rank, world, seed
        self.global_batch = batch_size * world
        self.per_epoch = len(windows) // self.global_batch
        self._epoch, self._order = -1, None
        self.random_offsets = random_offsets
        if random_offsets and bool((windows.num_tokens < windows.window).any()):
            raise ValueError("train.random_offsets needs full packed windows (no padded last window) to shift along")
        self.repeat_chunks, self.chunk, self.repeat_source = repeat_chunks, chunk, repeat_source
        if repeat_source not in REPEAT_SOURCES:
            raise ValueError(f"train.repeat_source={repeat_source!r}; choose one of {list(REPEAT_SOURCES)}")
        if repeat_chunks > 0 and (chunk is None or windows.window % chunk or windows.window // chunk < 2):
            raise ValueError(f"train.repeat_chunks={repeat_chunks} needs windows of at least 2 whole chunks; got "
                             f"window {windows.window}, chunk {chunk}")
        if repeat_chunks > 0 and bool((windows.num_tokens < windows.window).any()):  # a copy would move padding
            raise ValueError("train.repeat_chunks needs full packed windows (no padded last window)")

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.windows), generator=generator)
        return self._order

    def batch(self, micro_step: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(micro_step, self.per_epoch)
        start = index * self.global_batch + self.rank * self.batch_size
        rows = self._permutation(epoch)[start : start + self.batch_size]
        batch = self._shifted(micro_step, rows) if self.random_offsets else collate_windows(self.windows, rows)
        if self.repeat_chunks > 0:
            batch = self._with_repeated_chunks(micro_step, batch)
        return batch

    def _rank_slice(self, values: torch.Tensor, rows: int) -> torch.Tensor:
        """This process's part of values drawn for the whole global batch."""
        return values[self.rank * self.batch_size : self.rank * self.batch_size + rows]

    def _with_repeated_chunks(self, micro_step: int, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` with, in a ``repeat_chunks`` fraction of its windows, chunk ``c >= 1`` replaced by a copy of
        chunk ``c' < c`` (drawn for the whole global batch, like the offsets; ``c'`` as ``repeat_source`` says);
        labels follow the ids."""
        rows, chunks = batch["input_ids"].shape[0], self.windows.window // self.chunk
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + micro_step + 7_919)
        chosen = torch.rand(self.global_batch, generator=generator) < self.repeat_chunks
        targets = torch.randint(1, chunks, (self.global_batch,), generator=generator)
        sources = (torch.rand(self.global_batch, generator=generator) * targets).long()  # uniform in [0, target)
        if self.repeat_source == "first":
            sources = torch.zeros_like(targets)
        elif self.repeat_source == "previous":
            sources = targets - 1
        chosen, targets, sources = (self._rank_slice(v, rows)[:, None] for v in (chosen, targets, sources))
        # each position reads itself, or, inside a chosen window's target chunk, the same place in the source chunk
        positions = torch.arange(self.windows.window)[None, :]
        rewritten = chosen & (positions // self.chunk == targets)
        index = torch.where(rewritten, positions - (targets - sources) * self.chunk, positions)
        return {**batch, "input_ids": batch["input_ids"].gather(1, index), "labels": batch["labels"].gather(1, index)}

    def _shifted(self, micro_step: int, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Windows ``rows`` moved forward along the token stream by offsets drawn for the whole global batch (so
        any number of processes sees the same windows); the last window cannot move. ``labels`` are the ids (every
        training window is full); byte counts are not computed (training does not use them)."""
        window = self.windows.window
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + micro_step + 1)
        offsets = torch.randint(0, window, (self.global_batch,), generator=generator)
        offsets = self._rank_slice(offsets, len(rows))
        starts = torch.clamp(rows * window + offsets, max=(len(self.windows) - 1) * window)
        input_ids = self.windows.input_ids.reshape(-1)[starts[:, None] + torch.arange(window)]
        return {"input_ids": input_ids, "labels": input_ids.clone()}
