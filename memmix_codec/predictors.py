"""Next-token distributions for the codec, and the one lockstep loop that both compression and decompression run.

A block's tokens are cut into ``R`` lanes (contiguous runs, lengths differing by at most one); the lanes are
rows of one batch and advance together, one token per step, so a model call serves ``R`` tokens. Each lane is
coded on its own (no lane reads another), which is what makes the batch safe: the decoder knows every lane's
distribution at a step before it decodes that step's symbols.

Two predictors, each driven only through `first` and `next`:

* `CausalPredictor` (any generating memmix causal LM: the causal mixer, a memory model in ``past`` or
  ``recurrent`` mode): the lane starts from the BOS token, then every token is one cached step,
  ``model(ids, cache=..., sliding_window=True)``. A causal mixer restarts on its newest ``n_ctx // 2`` tokens
  when its window is full; a memory model turns each full chunk into a memory and, past ``max_memories``,
  drops the oldest (the model's own generation path, ``generation_memmix.py``).
* `OraclePredictor` (memory model with ``memory_mode="oracle"``, the embedding-augmented mode): chunk ``c`` of
  a lane is decoded by the decoder reading the stored (quantized, dequantized) embedding of chunk ``c``, one
  cached decoder step per token. As in training, token 0 of chunk ``c + 1`` is predicted by the last position
  of chunk ``c``; the lane's very first token gets the uniform distribution over the codable ids.

`code_block` is the single loop: it takes the distributions, quantizes them (`coding.Quantizer`) and lets
a coder either encode the known symbols or decode them, then feeds the symbols back. Compression and
decompression execute exactly the same sequence of model calls on the same batch shapes, so (on one thread, in
float32 on the CPU) they compute bit-identical logits.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_memmix.memory_modes import join_memories

from .coding import Quantizer, model_bits


class CorruptStreamError(ValueError):
    """The stream cannot be decoded: corrupted, truncated, or made by another model or code path."""


def bos_id(model) -> int:
    config = model.config
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return 0


class CausalPredictor:
    """Cached incremental decoding of a generating memmix model, ``R`` lanes in one batch."""

    def __init__(self, model, lanes: int):
        self.model, self.lanes, self.cache = model, lanes, None
        self.bos = bos_id(model)

    def first(self) -> torch.Tensor:
        ids = torch.full((self.lanes, 1), self.bos, dtype=torch.long)
        out = self.model(ids, use_cache=True, logits_to_keep=1, sliding_window=True)
        self.cache = out.cache
        return out.logits[:, -1]

    def next(self, ids: torch.Tensor, position: int) -> torch.Tensor:
        out = self.model(ids[:, None], cache=self.cache, sliding_window=True)
        self.cache = out.cache
        return out.logits[:, -1]


class OraclePredictor:
    """The oracle memory model's decoder reading each chunk's stored embedding; ``memories (R, n, memory_dim)``
    are the dequantized stored embeddings of every lane's chunks (zeros where a lane has no such chunk)."""

    def __init__(self, model, memories: torch.Tensor):
        self.model = model
        self.chunk = model.config.n_ctx
        self.combine = model.config.combine
        self.slots = model.project_memories(memories)  # (R, n, w)
        self.lanes = memories.shape[0]
        self.visible = torch.ones(self.lanes, dtype=torch.long)
        self.state, self.current, self.read = None, None, None

    def first(self) -> torch.Tensor:
        return torch.zeros(self.lanes, self.model.config.vocab_size)  # uniform: nothing predicts a lane's start

    def next(self, ids: torch.Tensor, position: int) -> torch.Tensor:
        model = self.model
        if position % self.chunk == 0:  # a new chunk: restart the decoder on its embedding
            number = position // self.chunk
            self.current = self.slots[:, number : number + 1]  # (R, 1, w)
            empty = self.slots.new_zeros(self.lanes, 0, model.config.token_width)
            inputs, starts = join_memories(self.current, self.visible, empty, self.combine, False)
            self.read = model.bound_read(self.current, self.visible)
            _, self.state = model.decoder.start(inputs, starts, self.read)
        token_embeds = model.embed_tokens(ids[:, None])  # (R, 1, w')
        if self.combine == "token":
            inputs = token_embeds
        else:
            inputs = join_memories(self.current, self.visible, token_embeds, self.combine, False)[0]
        hidden = model.decoder.step(inputs, self.state, self.read)
        return model.lm_head(model.norm(hidden))[:, -1]


def lane_lengths(num_tokens: int, lanes: int) -> list[int]:
    """Even split of ``num_tokens`` into ``lanes`` contiguous runs (the first ``num_tokens % lanes`` one longer)."""
    base, extra = divmod(num_tokens, lanes)
    return [base + (1 if lane < extra else 0) for lane in range(lanes)]


def code_block(predictor, lengths: list[int], coder, allowed: torch.Tensor, pad_id: int,
               ids: list[int] | None = None, progress: bool | None = False) -> tuple[list[int], float]:
    """Run the lockstep loop over lanes of ``lengths``. With ``ids`` (compression) the coder encodes them; without
    (decompression) it decodes them. Returns the block's ids (lane after lane) and the model's summed -log2 p."""
    lanes, longest = len(lengths), max(lengths)
    length_tensor = torch.tensor(lengths)
    grid = torch.full((lanes, longest), pad_id, dtype=torch.long)  # (R, L), lane r's tokens in row r
    if ids is not None:
        offsets = np.cumsum([0, *lengths])
        for lane in range(lanes):
            grid[lane, : lengths[lane]] = torch.tensor(ids[offsets[lane] : offsets[lane + 1]], dtype=torch.long)
    bits, quantize = 0.0, Quantizer(allowed)
    logits = predictor.first()
    for step in tqdm(range(longest), desc="tokens/lane", unit="step", leave=False, disable=progress is False):
        active = (length_tensor > step).nonzero().squeeze(1)
        counts, probs = quantize(logits[active] if active.numel() < lanes else logits)
        symbols = coder.code(counts, None if ids is None else grid[active, step].numpy())
        if ids is None:
            if bool((~allowed[torch.as_tensor(symbols)]).any()):
                raise CorruptStreamError("decoded a token id that is never coded: the stream is corrupt")
            grid[active, step] = torch.as_tensor(symbols, dtype=torch.long)
        bits += model_bits(probs, symbols)
        if step + 1 < longest:
            logits = predictor.next(grid[:, step], step)
    out = [token for lane in range(lanes) for token in grid[lane, : lengths[lane]].tolist()]
    return out, bits


__all__ = ["CausalPredictor", "CorruptStreamError", "OraclePredictor", "bos_id", "code_block", "lane_lengths"]
