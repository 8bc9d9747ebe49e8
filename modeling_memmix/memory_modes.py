"""The memory modes of `MemoryMixerForCausalLM`, each in one class that serves both the training forward (all
chunks at once) and generation (one chunk at a time, through the cache), and `join_memories`, the one place
where memories and token vectors become a decoder input.

A mode answers three questions:

* training, `sequence_hidden`: the final hidden states ``(B, T, d)`` of a whole sequence;
* generation prefill, `prefill_memories`: the memories each row's current chunk reads, from its earlier chunks;
* generation, `store_chunk`: the memory a full chunk leaves for the next one; and `visible_slots`: the memory
  slots a row's chunk reads now;
* both, `token_embeddings`: a chunk's token vectors (the seed's recurrent style puts the memory in the last
  token's slot).

Decoder input of chunk ``c`` (0-based), ``combine="token"``:

* ``past`` / ``fixed``:    ``[m_0 ... m_{c-1}, pad ... pad, tokens of chunk c]`` (``max_memories`` slots)
* ``past`` / ``variable``: ``[m_0 ... m_{c-1}, tokens of chunk c]``
* ``oracle``:              ``[e_c, tokens of chunk c]`` where ``e_c`` embeds chunk ``c`` itself
* ``recurrent``:           ``[r_c, tokens of chunk c]`` where ``r_c`` is the decoder's own last state of chunk
  ``c-1``, projected (a learned start vector for chunk 0), trained through time;
  ``recurrent_style="seed"``: ``[r_c, tokens 0 .. C-2 of chunk c, r_c]`` where ``r_c`` is that last state itself
  (zeros for chunk 0), as the seed's ``RecurrentMemoryMixer`` does;
* ``none``:                the ``past`` layout with every slot empty (zeros), as for a chunk with nothing before
  it: the no-memory baseline with the memory decoder's exact positions and parameters.

With ``combine="concat"`` / ``"sum"`` the (single, newest) memory is appended to / added to every token vector.
"Without memories" (evaluation's control) means what a chunk with nothing before it reads: ``past`` decodes each
chunk as a first chunk, ``recurrent`` gives every chunk the start vector, ``oracle`` a zero embedding (``none``
always reads nothing).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def join_memories(slots: torch.Tensor, visible: torch.Tensor, token_embeds: torch.Tensor, combine: str,
                  variable: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs from memory slots ``(N, S, w)`` (slots past ``visible[n]`` hold zeros) and token vectors
    ``(N, L, w')``. Returns the inputs ``(N, P + L, d)`` and where each row's tokens start ``(N,)``.

    ``combine="token"``: slots are leading positions; with ``variable`` the tokens follow the ``visible`` slots
    directly and the positions after them hold zeros. ``"sum"`` / ``"concat"``: the newest slot is added to /
    appended to every token vector (no leading positions).
    """
    rows = token_embeds.shape[0]
    if combine != "token":
        single = slots[:, -1:].expand(-1, token_embeds.shape[1], -1)  # (N, L, w): one memory per chunk
        joined = token_embeds + single if combine == "sum" else torch.cat([token_embeds, single], dim=-1)
        return joined, torch.zeros(rows, dtype=torch.long, device=token_embeds.device)
    joined = torch.cat([slots, token_embeds], dim=1)
    count = slots.shape[1]
    if not variable:
        return joined, torch.full((rows,), count, dtype=torch.long, device=token_embeds.device)
    total = joined.shape[1]
    position = torch.arange(total, device=joined.device)[None, :]
    # position p of row n reads: slot p if p < visible[n]; token p - visible[n] after that; zeros past the tokens
    source = torch.where(position < visible[:, None], position, position - visible[:, None] + count)
    past_the_end = source >= total
    gathered = joined.gather(1, source.clamp(max=total - 1)[..., None].expand(-1, -1, joined.shape[-1]))
    return gathered * ~past_the_end[..., None], visible.clone()


def decode_chunks(model, inputs: torch.Tensor, starts: torch.Tensor, batch: int, read=None) -> torch.Tensor:
    """Decoder inputs of ``N = batch * n`` chunks ``(N, L, d)``, tokens starting at ``starts (N,)`` -> final
    hidden states at the token positions, in sequence order ``(batch, n * n_ctx, d)``. ``read``: the decoder's
    memory read (`MemoryMixerForCausalLM.bound_read`), if any."""
    chunk = model.config.n_ctx
    hidden = model.decoder(inputs, read=read)
    index = starts[:, None] + torch.arange(chunk, device=inputs.device)  # (N, C)
    tokens = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
    return model.norm(tokens.reshape(batch, -1, hidden.shape[-1]))


def whole_chunks(input_ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """(B, T) -> (B, n, chunk) with ``n = ceil(T / chunk)``; a partial last chunk is padded at the end (causal
    decoders never read that padding)."""
    batch, length = input_ids.shape
    num_chunks = math.ceil(length / chunk)
    return F.pad(input_ids, (0, num_chunks * chunk - length)).view(batch, num_chunks, chunk)


class MemoryMode:
    """Base: the pieces every mode shares. ``config`` is the model's `MemoryMixerConfig`."""

    can_generate = True
    variable_positions = False

    def __init__(self, config):
        self.config = config

    def chunk_inputs(self, model, chunks: torch.Tensor, slots: torch.Tensor,
                     visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunks ``(B, n, C)`` with their memory slots ``(B, n, S, w)`` and visible counts ``(n,)`` -> decoder
        inputs ``(B * n, L, d)`` and where each one's tokens start ``(B * n,)``."""
        token_embeds = model.embed_tokens(chunks.flatten(0, 1))  # (B*n, C, w')
        return join_memories(slots.flatten(0, 1), visible.repeat(chunks.shape[0]), token_embeds,
                             self.config.combine, self.variable_positions)

    def decode_with_slots(self, model, chunks: torch.Tensor, slots: torch.Tensor,
                          visible: torch.Tensor) -> torch.Tensor:
        """As `chunk_inputs`, then all chunks in one decoder call -> final hidden states ``(B, n * C, d)``."""
        inputs, starts = self.chunk_inputs(model, chunks, slots, visible)
        read = model.bound_read(slots.flatten(0, 1), visible.repeat(chunks.shape[0]))
        return decode_chunks(model, inputs, starts, chunks.shape[0], read)

    def check_can_generate(self) -> None:
        """Raise ``ValueError`` for a mode that cannot generate."""

    def token_embeddings(self, model, ids: torch.Tensor, positions: torch.Tensor,
                         memory: torch.Tensor) -> torch.Tensor:
        """Token vectors ``(B, q, w')`` of tokens ``ids (B, q)`` at ``positions`` (``(q,)`` or ``(B, q)``) of their
        chunk, which reads the memory slots ``memory (B, S, w)``. Plain token embeddings; see
        `RecurrentMemories`."""
        return model.embed_tokens(ids)

    def visible_slots(self, cache, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory slots ``(n, S, w)`` the current chunk of ``rows`` (default all) reads, and how many of them
        are in use ``(n,)``."""
        raise NotImplementedError


class PastMemories(MemoryMode):
    """``memory_mode="past"``: chunk ``c`` reads the encoder's embeddings of chunks ``0 .. c-1``."""

    def __init__(self, config):
        super().__init__(config)
        self.variable_positions = config.memory_positions == "variable"

    # ----- training ---------------------------------------------------------------------------------------------

    def sequence_hidden(self, model, input_ids: torch.Tensor, lengths: torch.Tensor | None,
                        embedding_format: str | None, without_memories: bool) -> torch.Tensor:
        chunks, slots, visible = self.chunk_memories(model, input_ids, embedding_format, without_memories)
        return self.decode_with_slots(model, chunks, slots, visible)

    def chunk_memories(self, model, input_ids: torch.Tensor, embedding_format: str | None = None,
                       without_memories: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chunks ``(B, n, C)``, the memory slots each reads ``(B, n, S, w)`` and how many are in use ``(n,)``."""
        chunks = whole_chunks(input_ids, self.config.n_ctx)
        memories = self.earlier_memories(model, chunks[:, :-1], embedding_format)
        chunk_index = torch.arange(chunks.shape[1], device=input_ids.device)
        visible = torch.zeros_like(chunk_index) if without_memories else chunk_index
        return chunks, self.chunk_slots(memories, visible), visible

    def earlier_memories(self, model, chunks: torch.Tensor, embedding_format: str | None) -> torch.Tensor:
        """(B, n, C) chunks -> the decoder-side memories they leave ``(B, n, w)``, in one encoder call."""
        return model.project_memories(model.encode_chunks(chunks, embedding_format))

    def decoder_inputs(self, model, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder inputs of every chunk ``(B, n, S + C, d)`` and where each chunk's tokens sit ``(n, C)``
        (to inspect the layout; training runs the same path)."""
        chunks, slots, visible = self.chunk_memories(model, input_ids)
        inputs, starts = self.chunk_inputs(model, chunks, slots, visible)
        batch, num_chunks = chunks.shape[:2]
        positions = starts[:num_chunks, None] + torch.arange(self.config.n_ctx, device=input_ids.device)
        return inputs.view(batch, num_chunks, *inputs.shape[1:]), positions

    def chunk_slots(self, memories: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(B, n_mem, w) memories -> (B, n, S, w) slots: slot ``j`` of chunk ``c`` holds ``m_j`` if
        ``j < visible[c]``, zeros otherwise (``S = max_memories``)."""
        batch, width = memories.shape[0], memories.shape[-1]
        count = self.config.max_memories
        padded = torch.cat([memories, memories.new_zeros(batch, count - memories.shape[1], width)], dim=1)
        in_use = torch.arange(count, device=memories.device)[None, :] < visible[:, None]  # (n, S)
        return padded.unsqueeze(1) * in_use[None, :, :, None]

    # ----- generation -------------------------------------------------------------------------------------------

    def prefill_memories(self, model, ids: torch.Tensor, chunk_index: torch.Tensor,
                         sliding_window: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode every needed earlier chunk of every row in one encoder call. ``ids (B, T)`` left-aligned,
        ``chunk_index (B,)`` the current chunk of each row. Returns memories ``(B, max_memories, w)`` (oldest
        first) and how many are set ``(B,)``."""
        chunk, count = self.config.n_ctx, self.config.max_memories
        most = int(chunk_index.max())
        if most > count and not sliding_window:
            raise ValueError(
                f"prompt needs {most} memories, more than max_memories={count}; shorten it or pass "
                "sliding_window=True to generate (the oldest memories are then dropped)"
            )
        first = (chunk_index - count).clamp(min=0)
        chunk_numbers = torch.arange(most, device=ids.device)[None, :]  # (1, n)
        needed = (chunk_numbers >= first[:, None]) & (chunk_numbers < chunk_index[:, None])  # (B, n)
        chunks = ids[:, : most * chunk].reshape(ids.shape[0], most, chunk)[needed]  # (N, C)
        memories = ids.new_zeros(ids.shape[0], count, self.config.memory_width, dtype=model.embed_tokens.weight.dtype)
        if chunks.shape[0]:
            encoded = model.project_memories(model.encode_chunks(chunks.unsqueeze(0)))[0]  # (N, w)
            row, number = needed.nonzero(as_tuple=True)
            memories[row, number - first[row]] = encoded.to(memories.dtype)
        return memories, chunk_index - first

    def store_chunk(self, model, cache, rows: torch.Tensor, sliding_window: bool) -> None:
        """The full chunk of ``rows`` becomes their newest memory (past ``max_memories`` the oldest is dropped,
        with ``sliding_window``)."""
        count = self.config.max_memories
        counts = cache.memory_counts[rows]
        if bool((counts >= count).any()) and not sliding_window:
            raise ValueError(
                f"generation needs more than max_memories={count} memories; lower max_new_tokens or "
                "pass sliding_window=True to generate (the oldest memory is then dropped)"
            )
        encoded = model.project_memories(model.encode_chunks(cache.token_ids[rows].unsqueeze(0)))[0]
        memories = cache.memories[rows]
        full = counts >= count
        memories = torch.where(full[:, None, None], memories.roll(-1, dims=1), memories)
        counts = counts - full.long()
        memories[torch.arange(rows.numel(), device=rows.device), counts] = encoded.to(memories.dtype)
        cache.memories[rows] = memories
        cache.memory_counts[rows] = counts + 1

    def visible_slots(self, cache, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        memories = cache.memories if rows is None else cache.memories[rows]
        counts = cache.memory_counts if rows is None else cache.memory_counts[rows]
        in_use = torch.arange(memories.shape[1], device=memories.device)[None, :] < counts[:, None]
        return memories * in_use[..., None], counts.clone()


class OracleMemories(MemoryMode):
    """``memory_mode="oracle"``: each chunk reads the embedding of itself (the embedding-augmented causal LM
    whose storage cost the normalized loss charges). It cannot generate."""

    can_generate = False

    def check_can_generate(self) -> None:
        raise ValueError(
            "memory_mode='oracle' cannot generate: each chunk reads an embedding of itself, which does not exist "
            "before its tokens are generated; use memory_mode='past' or 'recurrent'"
        )

    def sequence_hidden(self, model, input_ids: torch.Tensor, lengths: torch.Tensor | None,
                        embedding_format: str | None, without_memories: bool) -> torch.Tensor:
        """``lengths (B,)``: real lengths of left-aligned rows (default all of ``input_ids``). The last, partial
        chunk of a row is embedded as it is (its real tokens only), so a padded row reads what it reads alone."""
        chunk = self.config.n_ctx
        chunks = whole_chunks(input_ids, chunk)
        batch, num_chunks = chunks.shape[:2]
        if without_memories:
            memories = chunks.new_zeros(batch, num_chunks, self.config.memory_width,
                                        dtype=model.embed_tokens.weight.dtype)
        else:
            memories = model.project_memories(self.own_embeddings(model, chunks, lengths, input_ids.shape[1],
                                                                  embedding_format))
        visible = torch.ones(num_chunks, dtype=torch.long, device=input_ids.device)
        return self.decode_with_slots(model, chunks, memories.unsqueeze(2), visible)

    def own_embeddings(self, model, chunks: torch.Tensor, lengths: torch.Tensor | None, length: int,
                       embedding_format: str | None) -> torch.Tensor:
        """(B, n, C) chunks -> (B, n, memory_dim) embeddings of each chunk's real tokens."""
        chunk = self.config.n_ctx
        if lengths is None:  # every row is the whole input: only a partial last chunk needs its own call (no sync)
            real = length - (chunks.shape[1] - 1) * chunk
            if real == chunk:
                return model.encode_chunks(chunks, embedding_format)
            last = model.encode_chunks(chunks[:, -1:, :real], embedding_format)
            return torch.cat([model.encode_chunks(chunks[:, :-1], embedding_format), last], dim=1)
        memories = model.encode_chunks(chunks, embedding_format)
        last_chunk = (lengths - 1) // chunk
        in_last = lengths - last_chunk * chunk
        for real in in_last[in_last < chunk].unique().tolist():  # rows ending inside a chunk: its real tokens
            rows = (in_last == real).nonzero().squeeze(1)
            ends = chunks[rows, last_chunk[rows], :real]  # (n, real)
            memories = memories.index_put((rows, last_chunk[rows]),
                                          model.encode_chunks(ends[:, None], embedding_format)[:, 0])
        return memories


class RecurrentMemories(MemoryMode):
    """``memory_mode="recurrent"`` (RMT-style baseline): the decoder's own last state of chunk ``c-1`` is the
    memory of chunk ``c``. Sequential by definition.

    ``recurrent_style="projected"``: the memory is ``recurrent_proj`` of that state, and chunk 0 reads a learned
    start vector. ``"seed"``, the seed's ``RecurrentMemoryMixer``: the state itself, zeros for chunk 0, read in the
    leading slot *and* written over the vector of the chunk's last token (position ``n_ctx - 1``), so the last
    position's state, the next memory, has read the memory twice and that token is only ever a target. (The
    seed's loss skips predicting each chunk's first token from the previous chunk; memmix scores every next
    token, that one from the memory slot, so bits per byte count every token.)
    """

    def __init__(self, config):
        super().__init__(config)
        self.seed_style = config.recurrent_style == "seed"

    def start_memory(self, model, batch: int) -> torch.Tensor:
        """The memory chunk 0 reads ``(B, 1, w)`` (an expanded view: copy it before writing into it)."""
        if self.seed_style:
            return model.embed_tokens.weight.new_zeros(1, 1, self.config.memory_width).expand(batch, -1, -1)
        return model.initial_memory.expand(batch, 1, -1)

    def next_memory(self, model, last_hidden: torch.Tensor) -> torch.Tensor:
        """The memory a chunk leaves from the decoder's state at its last position ``(..., d)``."""
        return last_hidden if self.seed_style else model.recurrent_proj(last_hidden)

    def token_embeddings(self, model, ids: torch.Tensor, positions: torch.Tensor,
                         memory: torch.Tensor) -> torch.Tensor:
        embeds = model.embed_tokens(ids)
        if not self.seed_style:
            return embeds
        last = (positions == self.config.n_ctx - 1)[..., None]  # (q, 1) or (B, q, 1): the last token's slot
        return torch.where(last, memory[:, -1:].to(embeds.dtype), embeds)

    def decode_in_order(self, model, ids: torch.Tensor, num_chunks: int, without_memories: bool = False):
        """Decode chunks ``0 .. num_chunks-1`` of ``ids (B, T)`` in order; yields, per chunk, the decoder's
        hidden states at its tokens (before the final norm) and the memory it leaves for the next chunk."""
        chunk = self.config.n_ctx
        memory = self.start_memory(model, ids.shape[0])
        visible = torch.ones(ids.shape[0], dtype=torch.long, device=ids.device)
        for number in range(num_chunks):
            chunk_ids = ids[:, number * chunk : (number + 1) * chunk]
            positions = torch.arange(chunk_ids.shape[1], device=ids.device)
            token_embeds = self.token_embeddings(model, chunk_ids, positions, memory)
            inputs, _ = join_memories(memory, visible, token_embeds, self.config.combine, False)
            hidden = model.decoder(inputs, read=model.bound_read(memory, visible))
            following = self.next_memory(model, hidden[:, -1:])
            yield hidden[:, self.config.num_memory_slots :], following  # every row's tokens start there
            if not without_memories:
                memory = following

    def sequence_hidden(self, model, input_ids: torch.Tensor, lengths: torch.Tensor | None,
                        embedding_format: str | None, without_memories: bool) -> torch.Tensor:
        num_chunks = math.ceil(input_ids.shape[1] / self.config.n_ctx)
        outputs = [hidden for hidden, _ in self.decode_in_order(model, input_ids, num_chunks, without_memories)]
        return model.norm(torch.cat(outputs, dim=1))

    def prefill_memories(self, model, ids: torch.Tensor, chunk_index: torch.Tensor,
                         sliding_window: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode the earlier chunks in order; each row keeps the memory its current chunk reads ``(B, 1, w)``."""
        current = self.start_memory(model, ids.shape[0]).clone()  # the cache writes into it: no view
        for number, (_, following) in enumerate(self.decode_in_order(model, ids, int(chunk_index.max()))):
            current = torch.where((chunk_index > number)[:, None, None], following, current)
        return current, torch.ones_like(chunk_index)

    def store_chunk(self, model, cache, rows: torch.Tensor, sliding_window: bool) -> None:
        cache.memories[rows] = self.next_memory(model, cache.last_hidden[rows][:, None])

    def visible_slots(self, cache, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        memories = cache.memories if rows is None else cache.memories[rows]
        return memories, torch.ones(memories.shape[0], dtype=torch.long, device=memories.device)


class NoMemories(PastMemories):
    """``memory_mode="none"``: the no-memory baseline. The decoder of ``"past"`` (the same ``max_memories``
    slots, positions and layout), every slot empty as for a chunk with nothing before it, and no encoder: what
    ``past`` gives with ``without_memories=True``, so "memories help" compares like with like."""

    def chunk_memories(self, model, input_ids: torch.Tensor, embedding_format: str | None = None,
                       without_memories: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return super().chunk_memories(model, input_ids, embedding_format, without_memories=True)

    def earlier_memories(self, model, chunks: torch.Tensor, embedding_format: str | None) -> torch.Tensor:
        return chunks.new_zeros(*chunks.shape[:2], self.config.memory_width, dtype=model.embed_tokens.weight.dtype)

    def prefill_memories(self, model, ids: torch.Tensor, chunk_index: torch.Tensor,
                         sliding_window: bool) -> tuple[torch.Tensor, torch.Tensor]:
        memories = ids.new_zeros(ids.shape[0], self.config.max_memories, self.config.memory_width,
                                 dtype=model.embed_tokens.weight.dtype)
        return memories, torch.zeros_like(chunk_index)

    def store_chunk(self, model, cache, rows: torch.Tensor, sliding_window: bool) -> None:
        """A full chunk leaves nothing: the next chunk starts over with empty slots."""


MEMORY_MODES = {"past": PastMemories, "oracle": OracleMemories, "recurrent": RecurrentMemories, "none": NoMemories}


def memory_mode_for(config) -> MemoryMode:
    """The mode object of a `MemoryMixerConfig`."""
    return MEMORY_MODES[config.memory_mode](config)


__all__ = ["MEMORY_MODES", "MemoryMode", "NoMemories", "OracleMemories", "PastMemories", "RecurrentMemories",
           "decode_chunks", "join_memories", "memory_mode_for", "whole_chunks"]
