"""Generation for memmix models: the cache object `MemmixCache`, the cached forward passes of the causal mixer
(`mixer_cached_hidden`) and of the memory model (`memory_cached_hidden`), and `MemmixGenerationMixin`, which
adapts transformers' ``generate`` (length limits checked before any work, the opt-in sliding window).

How the cache works
-------------------
A causal mixing layer reads earlier positions only through its mixing matrix, so each mixer layer keeps one
preallocated history ``(B, [h,] n_ctx, c)`` of the values it mixes; a new token costs ``O(t * d + d^2)`` per
layer. Transformer stacks keep transformers' ``DynamicCache``. Each stack owns that state and its incremental
path (``start`` / ``restart_rows`` / ``step`` in ``mixer_layers.py``); the cache holds the decoder's state
without knowing which stack made it, plus the token ids of the current window (to re-read it in sliding-window
mode, or to encode a finished chunk into a memory) and, for the memory model, the memories the current chunk
reads. Which memories those are is the memory mode's business (``memory_modes.py``), the same code that builds
the training forward's inputs.

Ragged batches (left padding)
-----------------------------
Mixers have absolute positions: row ``b`` must run at positions ``0 .. L_b - 1`` whatever its padding. The
prefill therefore shifts every row left by its padding (padding moves to the end of the row, where a causal
model never reads it) and every row then advances at its own position. Batched greedy decoding equals decoding
each prompt alone. Only left padding is accepted for generation (``tokenizer.padding_side = "left"``).

Length limits and ``sliding_window``
------------------------------------
A causal mixer holds at most ``n_ctx`` tokens, the memory model ``n_ctx * (max_memories + 1)``. ``generate``
raises ``ValueError`` before any forward pass when the prompt plus ``max_new_tokens`` exceeds that (with the
default length settings the generation is cut at the limit instead). ``generate(..., sliding_window=True)``
lifts the limit:

* causal mixer: when a row's window is full, the model restarts on the newest ``n_ctx // 2`` tokens of that
  row, re-read at positions ``0 ..`` (one full-window forward every ``n_ctx / 2`` tokens, so the cost per
  token stays bounded; the model never sees more than ``n_ctx`` tokens);
* memory model, ``memory_mode="past"``: past ``max_memories`` the oldest memory is dropped (the slots hold
  the newest ``max_memories`` chunk embeddings); ``"recurrent"`` and ``"none"`` (which reads no memories) have
  no memory limit at all.

The memory model with ``memory_mode="oracle"`` cannot generate: each chunk reads an embedding of itself,
which does not exist before its tokens do.
"""

from __future__ import annotations

import torch

from .input_checks import check_attention_mask, check_token_range, value_checks_enabled
from .memory_modes import join_memories


def sliding_keep(n_ctx: int) -> int:
    """Tokens kept when a full sliding window restarts."""
    return max(1, n_ctx // 2)


# ----- padding -----------------------------------------------------------------------------------------------


def leading_padding(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor | None:
    """Number of leading zeros of each mask row ``(B,)``, or ``None`` without a mask or without left padding.

    Trailing zeros (right padding) need no shift: a causal model never reads later positions.
    """
    if attention_mask is None:
        return None
    check_attention_mask(attention_mask, input_ids)
    pads = (attention_mask.long().cumsum(1) == 0).sum(1)
    if not value_checks_enabled():  # compiled: no host branch; shifting by zero positions changes nothing
        return pads
    return pads if bool(pads.any()) else None


def zero_padding_positions(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Hidden states ``(B, T, d)`` with every padding position (mask 0) set to zero.

    A padding position has no token of its own, so it gets no state: without this, the position just before
    a left-padded row's first token would hold a state computed after the whole row (its logits would
    depend on later tokens). Zero states give zero logits (a uniform prediction) there.
    """
    if attention_mask is None:
        return hidden
    return hidden * attention_mask[..., None].to(hidden.dtype)


def generation_padding(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    """Left padding of each row for generation ``(B,)``; raises for any other padding pattern."""
    pads = leading_padding(attention_mask, input_ids)
    if pads is None:
        pads = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
    if attention_mask is not None:
        columns = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        expected = columns[None, :] >= pads[:, None]
        if not bool((attention_mask.bool() == expected).all()):
            raise ValueError(
                "generation needs left padding (zeros only before the first token of each row); this "
                "attention_mask has zeros after tokens. Set tokenizer.padding_side = 'left'."
            )
    return pads


def shift_rows_left(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``out[b, i] = x[b, (i + shift[b]) % T]`` for ``x (B, T, ...)``: drops each row's first ``shift`` entries
    to the end."""
    length = x.shape[1]
    index = (torch.arange(length, device=x.device)[None, :] + shift[:, None]) % length
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


def shift_rows_right(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Inverse of `shift_rows_left`."""
    return shift_rows_left(x, (-shift) % x.shape[1])


# ----- the cache -----------------------------------------------------------------------------------------------


class MemmixCache:
    """Generation state of one batch. Every per-row tensor has the batch on dim 0, so beam search reordering
    (`reorder_cache`) and batch expansion (`batch_repeat_interleave`, `batch_select_indices`) apply to all.

    Attributes:
        decoder: the decoder stack's own incremental state (`MixerStackState` or `TransformerStackState`, made by
            the stack's ``start``); the cache never looks inside it.
        token_ids: ``(B, n_ctx)`` tokens of the current window (mixer) or chunk (memory model).
        token_counts: ``(B,)`` tokens held in ``token_ids``.
        memories / memory_counts: memory model: decoder-side memories ``(B, slots, w)`` and how many are set.
        last_hidden: memory model: decoder output (before the final norm) at each row's newest position.
        seen: columns of the caller's (padded) sequence consumed so far (`get_seq_length`).
    """

    is_compileable = False
    is_croppable = False
    ROW_FIELDS = ("token_ids", "token_counts", "memories", "memory_counts", "last_hidden")

    def __init__(self, token_capacity: int, batch_size: int, device: torch.device):
        self.decoder = None
        self.token_ids = torch.zeros(batch_size, token_capacity, dtype=torch.long, device=device)
        self.token_counts = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.memories: torch.Tensor | None = None
        self.memory_counts: torch.Tensor | None = None
        self.last_hidden: torch.Tensor | None = None
        self.seen = 0

    @property
    def positions(self) -> torch.Tensor:
        """``(B,)`` next decoder position of each row."""
        return self.decoder.positions

    @property
    def batch_size(self) -> int:
        return self.token_ids.shape[0]

    @property
    def is_linear(self) -> list[bool]:
        return [False]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def _index_rows(self, index: torch.Tensor) -> None:
        for name in self.ROW_FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[index.to(value.device)])
        self.decoder.index_rows(index)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: row ``i`` continues from row ``beam_idx[i]``."""
        self._index_rows(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._index_rows(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        for name in self.ROW_FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.repeat_interleave(repeats, dim=0))
        self.decoder.repeat_rows(repeats)


def write_tokens(cache: MemmixCache, input_ids: torch.Tensor) -> None:
    """Append ``input_ids (B, q)`` to each row's token buffer at its own count."""
    columns = cache.token_counts[:, None] + torch.arange(input_ids.shape[1], device=input_ids.device)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None]
    cache.token_ids[rows, columns] = input_ids
    cache.token_counts = cache.token_counts + input_ids.shape[1]


def check_cached_input(input_ids: torch.Tensor | None, vocab_size: int) -> None:
    if input_ids is None:
        raise ValueError("generation with a cache needs input_ids (inputs_embeds are not supported here)")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must have shape (batch, length >= 1), got {tuple(input_ids.shape)}")
    check_token_range(input_ids, vocab_size)


# ----- causal mixer --------------------------------------------------------------------------------------------


def window_prefill(model, ids: torch.Tensor, lengths: torch.Tensor, cache: MemmixCache) -> torch.Tensor:
    """Fill a fresh window from left-aligned ``ids (B, W)`` (row ``b`` valid up to ``lengths[b]``)."""
    cache.token_ids.zero_()
    cache.token_ids[:, : ids.shape[1]] = ids
    cache.token_counts = lengths.clone()
    hidden, cache.decoder = model.stack.start(model.embed_tokens(ids), lengths)
    return hidden


def keep_newest(ids: torch.Tensor, lengths: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
    """Left-aligned rows ``ids (B, T)`` of ``lengths``: rows longer than ``capacity`` keep their newest
    `sliding_keep` tokens. Returns ``(ids (B, W), new lengths, dropped per row)``."""
    dropped = torch.where(lengths > capacity, lengths - sliding_keep(capacity), torch.zeros_like(lengths))
    kept = lengths - dropped
    return shift_rows_left(ids, dropped)[:, : int(kept.max())], kept, dropped


def mixer_cached_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                        cache: MemmixCache | None, sliding_window: bool) -> tuple[torch.Tensor, MemmixCache]:
    """`MixerModel` with a cache: returns pre-norm hidden states of the given tokens and the updated cache.

    Without ``cache`` this is the prefill (``(B, T, d)`` in the caller's padded layout; positions of dropped
    or padding tokens hold meaningless values); with it, the next ``q`` tokens of every row (``(B, q, d)``).
    """
    capacity = model.config.n_ctx
    check_cached_input(input_ids, model.config.vocab_size)
    if cache is None:
        pads = generation_padding(attention_mask, input_ids)
        lengths = input_ids.shape[1] - pads
        if int(lengths.max()) > capacity and not sliding_window:
            raise ValueError(
                f"prompt of {int(lengths.max())} tokens exceeds n_ctx={capacity}; shorten it or pass "
                "sliding_window=True to generate"
            )
        ids, kept, dropped = keep_newest(shift_rows_left(input_ids, pads), lengths, capacity)
        cache = MemmixCache(capacity, input_ids.shape[0], input_ids.device)
        hidden = window_prefill(model, ids, kept, cache)
        hidden = torch.nn.functional.pad(hidden, (0, 0, 0, input_ids.shape[1] - hidden.shape[1]))
        cache.seen = input_ids.shape[1]
        return shift_rows_right(hidden, pads + dropped), cache
    new = input_ids.shape[1]
    cache.seen += new
    if sliding_window and bool((cache.positions + new > capacity).any()):
        return slide_window(model, input_ids, cache), cache
    write_tokens(cache, input_ids)
    return model.stack.step(model.embed_tokens(input_ids), cache.decoder), cache


def slide_window(model, input_ids: torch.Tensor, cache: MemmixCache) -> torch.Tensor:
    """Sliding-window restart: rows whose window overflows keep their newest tokens; all rows are re-read."""
    capacity, new = cache.token_ids.shape[1], input_ids.shape[1]
    counts = cache.token_counts
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None]
    ids = torch.cat([cache.token_ids, input_ids.new_zeros(input_ids.shape[0], new)], dim=1)
    ids[rows, counts[:, None] + torch.arange(new, device=ids.device)] = input_ids
    window, kept, _ = keep_newest(ids, counts + new, capacity)
    hidden = window_prefill(model, window, kept, cache)
    index = (kept[:, None] - new + torch.arange(new, device=ids.device))[..., None]
    return hidden.gather(1, index.expand(-1, -1, hidden.shape[-1]))


# ----- memory model --------------------------------------------------------------------------------------------
# The memory mode (``memory_modes.py``) decides which memories a chunk reads; `join_memories` builds the decoder
# input; the decoder stack runs its own incremental path. Nothing here depends on the mode or the stack type.


def memory_cached_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         cache: MemmixCache | None, sliding_window: bool) -> tuple[torch.Tensor, MemmixCache]:
    """`MemoryMixerForCausalLM` with a cache: hidden states (after the final norm) of each row's newest token.

    Prefill returns ``(B, 1, d)`` for the last prompt token; a step with ``q`` tokens returns ``(B, q, d)``.
    """
    model.memory_mode.check_can_generate()
    check_cached_input(input_ids, model.config.vocab_size)
    if cache is None:
        hidden, cache = memory_prefill(model, input_ids, attention_mask, sliding_window)
        return model.norm(hidden), cache
    outputs = []
    for column in range(input_ids.shape[1]):
        outputs.append(memory_step(model, input_ids[:, column : column + 1], cache, sliding_window))
    cache.seen += input_ids.shape[1]
    return model.norm(torch.cat(outputs, dim=1)), cache


def chunk_inputs(model, cache: MemmixCache, token_embeds: torch.Tensor,
                 rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input of the current chunk of ``rows`` (default all) from its memories and ``token_embeds``,
    and where its tokens start."""
    slots, visible = model.memory_mode.visible_slots(cache, rows)
    return join_memories(slots, visible, token_embeds, model.config.combine,
                         model.memory_mode.variable_positions)


def cache_read(model, cache: MemmixCache, rows: torch.Tensor | None = None):
    """The decoder's memory read (or ``None``) over the slots the current chunk of ``rows`` (default all) reads."""
    return model.bound_read(*model.memory_mode.visible_slots(cache, rows)) if model.memory_read is not None else None


def memory_prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   sliding_window: bool) -> tuple[torch.Tensor, MemmixCache]:
    """Encode each row's earlier chunks once (in parallel) and prefill the decoder with its current chunk."""
    config = model.config
    chunk = config.n_ctx
    pads = generation_padding(attention_mask, input_ids)
    lengths = input_ids.shape[1] - pads
    if int(lengths.max()) > config.max_sequence_length and not sliding_window:
        raise ValueError(
            f"prompt of {int(lengths.max())} tokens exceeds this memory model's {config.max_sequence_length} "
            f"(n_ctx={chunk} x (max_memories={config.max_memories} + 1)); pass sliding_window=True to generate"
        )
    ids = shift_rows_left(input_ids, pads)
    chunk_index = (lengths - 1) // chunk
    in_chunk = lengths - chunk_index * chunk
    cache = MemmixCache(chunk, input_ids.shape[0], input_ids.device)
    cache.memories, cache.memory_counts = model.memory_mode.prefill_memories(model, ids, chunk_index, sliding_window)
    # the current chunk of each row, left-aligned: (B, K)
    columns = chunk_index[:, None] * chunk + torch.arange(int(in_chunk.max()), device=ids.device)[None, :]
    current = ids.gather(1, columns.clamp(max=ids.shape[1] - 1))
    cache.token_ids[:, : current.shape[1]] = current
    cache.token_counts = in_chunk.clone()
    positions = torch.arange(current.shape[1], device=ids.device)
    token_embeds = model.memory_mode.token_embeddings(model, current, positions, cache.memories)
    inputs, starts = chunk_inputs(model, cache, token_embeds)
    ends = starts + in_chunk
    ragged = not (bool((starts == starts[0]).all()) and bool((in_chunk == in_chunk[0]).all()))
    if ragged and not model.decoder.restarts_rows_alone:
        raise ValueError(
            "ragged prompts (different lengths) are not supported by the memory model with "
            "decoder_type='transformer'; generate them one at a time or pad them to equal length"
        )
    hidden, cache.decoder = model.decoder.start(inputs, ends, cache_read(model, cache))
    cache.last_hidden = hidden.gather(1, (ends - 1)[:, None, None].expand(-1, 1, hidden.shape[-1]))[:, 0]
    cache.seen = input_ids.shape[1]
    return cache.last_hidden[:, None], cache


def start_new_chunk(model, cache: MemmixCache, rows: torch.Tensor, sliding_window: bool) -> None:
    """Rows whose chunk is full: turn it into a memory and restart their decoder on an empty chunk."""
    model.memory_mode.store_chunk(model, cache, rows, sliding_window)
    cache.token_counts[rows] = 0
    no_tokens = cache.memories.new_zeros(rows.numel(), 0, model.config.token_width)
    inputs, starts = chunk_inputs(model, cache, no_tokens, rows)
    model.decoder.restart_rows(cache.decoder, inputs, starts, rows, cache_read(model, cache, rows))


def memory_step(model, input_ids: torch.Tensor, cache: MemmixCache, sliding_window: bool) -> torch.Tensor:
    """One new token per row ``(B, 1)`` -> decoder output before the final norm ``(B, 1, d)``."""
    full = (cache.token_counts >= model.config.n_ctx).nonzero().squeeze(1)
    if full.numel():
        start_new_chunk(model, cache, full, sliding_window)
    positions = cache.token_counts[:, None]  # (B, 1): where the new token sits in its chunk
    write_tokens(cache, input_ids)
    token_embeds = model.memory_mode.token_embeddings(model, input_ids, positions, cache.memories)
    # leading memory positions are already in the decoder's state; sum/concat join the memory to each token
    inputs = token_embeds if model.config.combine == "token" else chunk_inputs(model, cache, token_embeds)[0]
    hidden = model.decoder.step(inputs, cache.decoder, cache_read(model, cache))
    cache.last_hidden = hidden[:, -1]
    return hidden


# ----- generate ------------------------------------------------------------------------------------------------


class MemmixGenerationMixin:
    """Put before ``GenerationMixin`` in a memmix causal LM's bases.

    * the model builds its own `MemmixCache` (transformers' default ``DynamicCache`` is switched off);
    * ``generate(..., sliding_window=True)`` opts into the sliding-window mode (module docstring); without it a
      request longer than ``config.max_sequence_length`` raises ``ValueError`` before any forward pass.
    """

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def generate(self, *args, sliding_window: bool = False, **kwargs):
        if hasattr(self, "memory_mode"):
            self.memory_mode.check_can_generate()
        if sliding_window:
            if kwargs.get("use_cache") is False:
                raise ValueError("sliding_window=True needs the generation cache; drop use_cache=False")
            kwargs["sliding_window"] = True
        self._memmix_sliding_window = sliding_window
        try:
            return super().generate(*args, **kwargs)
        finally:
            self._memmix_sliding_window = False

    def _validate_generated_length(self, generation_config, input_ids_length, has_default_max_length):
        limit = self.config.max_sequence_length
        if not getattr(self, "_memmix_sliding_window", False) and generation_config.max_length > limit:
            if input_ids_length >= limit:
                raise ValueError(
                    f"the prompt has {input_ids_length} tokens, but this model holds at most {limit}; nothing can "
                    "be generated. Shorten the prompt or pass sliding_window=True to generate"
                )
            if has_default_max_length and generation_config.max_new_tokens is None:
                generation_config.max_length = limit  # nothing asked for explicitly: stop at the limit
            else:
                raise ValueError(
                    f"prompt of {input_ids_length} tokens + {generation_config.max_length - input_ids_length} new "
                    f"tokens = {generation_config.max_length} exceeds this model's limit of {limit} tokens; set "
                    f"max_new_tokens <= {limit - input_ids_length} or pass sliding_window=True to generate"
                )
        return super()._validate_generated_length(generation_config, input_ids_length, has_default_max_length)


__all__ = ["MemmixCache", "MemmixGenerationMixin", "mixer_cached_hidden", "memory_cached_hidden", "leading_padding",
           "shift_rows_left", "shift_rows_right", "sliding_keep", "zero_padding_positions"]
