"""Training micro-batches as a deterministic function of the micro-step, so resuming needs only the step count.

`WindowBatches` deals the packed windows (`memmix_data.PackedWindows`) of one epoch in a permutation seeded by
(seed, epoch); `collate_windows` turns chosen rows into a batch with one ``PackedWindows.__getitem__`` call (ids, labels
with -100 on padding, byte counts).

With ``random_offsets`` each dealt window is moved forward by a random number of tokens (seeded by (seed,
micro-step)) along the packed token stream, so training sees up to ``window`` times more distinct windows of the
same text; the autoencoder memorizes the fixed windows of a small corpus within a few epochs otherwise.
"""

from __future__ import annotations

import torch

from memmix_data import PackedWindows


def collate_windows(windows: PackedWindows, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The windows at ``rows`` as one batch: ``input_ids`` and ``labels`` (B, window), ``num_bytes`` (B,)."""
    return windows[rows]


class WindowBatches:
    """Micro-batches of one process: epoch ``e`` visits windows in a permutation seeded by (seed, e);
    global micro-step ``k`` takes ``batch_size * processes`` of them and this process its own slice.

    One process with batch ``2B`` sees exactly the windows two processes with batch ``B`` see together.
    """

    def __init__(self, windows: PackedWindows, batch_size: int, rank: int, world: int, seed: int,
                 random_offsets: bool = False):
        self.windows, self.batch_size, self.rank, self.world, self.seed = windows, batch_size, rank, world, seed
        self.global_batch = batch_size * world
        self.per_epoch = len(windows) // self.global_batch
        self._epoch, self._order = -1, None
        self.random_offsets = random_offsets
        if random_offsets and bool((windows.num_tokens < windows.window).any()):
            raise ValueError("train.random_offsets needs full packed windows (no padded last window) to shift along")

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.windows), generator=generator)
        return self._order

    def batch(self, micro_step: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(micro_step, self.per_epoch)
        start = index * self.global_batch + self.rank * self.batch_size
        rows = self._permutation(epoch)[start : start + self.batch_size]
        if self.random_offsets:
            return self._shifted(micro_step, rows)
        return collate_windows(self.windows, rows)

    def _shifted(self, micro_step: int, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Windows ``rows`` moved forward along the token stream by offsets drawn for the whole global batch (so
        any number of processes sees the same windows); the last window cannot move. ``labels`` are the ids (every
        training window is full); byte counts are not computed (training does not use them)."""
        window = self.windows.window
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + micro_step + 1)
        offsets = torch.randint(0, window, (self.global_batch,), generator=generator)
        offsets = offsets[self.rank * self.batch_size : self.rank * self.batch_size + len(rows)]
        starts = torch.clamp(rows * window + offsets, max=(len(self.windows) - 1) * window)
        input_ids = self.windows.input_ids.reshape(-1)[starts[:, None] + torch.arange(window)]
        return {"input_ids": input_ids, "labels": input_ids.clone()}
