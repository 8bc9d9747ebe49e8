"""Building blocks shared by every memmix model: the masked token-mixing layer, the mixer block and the
stacks of blocks (mixer or Llama transformer) that encoders and decoders are made of.

One mixer block covers every variant of the seed, chosen by its arguments:

* flat mixing (``heads=0, kernel_size=1``): ``y = tril(W) @ LN(x)``, one ``n_ctx x n_ctx`` matrix;
* multi-headed mixing (``heads=h``): a projection to ``h`` heads, one causal matrix per head
  (one batched matmul for all heads), heads concatenated and projected back;
* kernel ``k > 1``: ``Conv1d(n_ctx, n_ctx, k, padding='same')`` with tokens as channels (grouped per head).

The causal mask is applied inside the computation (``weight * mask``), never written into the weight, so it
survives saving, loading, sharding and LoRA (whose update is added to ``weight`` before the mask).

Incremental decoding (generation): a causal mixing layer's output at position ``t`` reads earlier positions only
through its mixing matrix, so each layer keeps one preallocated *history* ``(B, [h,] n_ctx, c)`` of the values
it mixes (normalized inputs, or per-head values) and computes ``q`` new positions from row ``t`` of the matrix in
``O(t * c)`` (a grouped conv over the history for ``k > 1``). Pass ``history`` and ``start`` to the forward
methods: ``start`` is an ``int`` when every row continues at the same position, or a ``(B,)`` tensor of
per-row positions (ragged batches). The full forward and both cached paths run one function,
`MaskedTokenMixing.mix_rows`, so cached equals full by construction.

Each stack owns its incremental path: ``start(inputs, lengths)`` gives hidden states and a state object
(`MixerStackState`: the histories; `TransformerStackState`: a transformers ``DynamicCache``),
``restart_rows`` starts some rows over, ``step`` runs the next positions. The generation cache
(``generation_memmix.py``) holds that state without looking inside it.

`MemoryRead` is the memory model's content-addressed read (``memory_read="attention"``): a mixer stack runs it
before one of its blocks (``read=`` of ``forward``, ``start``, ``restart_rows`` and ``step``); it is
position-wise, so the cached path applies it to new positions alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding


class MaskedTokenMixing(nn.Module):
    """Mixes information across token positions with a learned (optionally causal) matrix per head.

    Weight layouts (kept at most 3-D where possible so PEFT's ``target_parameters`` can adapt them):
    flat ``(n_ctx, n_ctx)``, headed ``(h, n_ctx, n_ctx)``, flat conv ``(n_ctx, n_ctx, k)``,
    headed conv ``(h, n_ctx, n_ctx, k)``. Multi-headed mixers have a bias per head and output token. Flat
    mixers have none: a per-token bias adds the same value to every channel of a position, which every later
    LayerNorm removes, so it could never learn (its gradient is zero) — AdamW would only turn rounding noise
    into updates.
    """

    def __init__(self, width: int, n_ctx: int, heads: int = 0, kernel_size: int = 1, causal: bool = True):
        super().__init__()
        self.width = width
        self.n_ctx = n_ctx
        self.heads = heads
        self.kernel_size = kernel_size
        self.causal = causal
        head_shape = (heads,) if heads else ()
        kernel_shape = (kernel_size,) if kernel_size > 1 else ()
        self.weight = nn.Parameter(torch.empty(*head_shape, n_ctx, n_ctx, *kernel_shape))
        self.bias = nn.Parameter(torch.zeros(heads, n_ctx)) if heads else None
        if heads:
            self.in_proj = nn.Linear(width, width)
            self.out_proj = nn.Linear(width, width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The seed's init: torch's Conv1d default, uniform with bound ``1/sqrt(n_ctx * k)``."""
        bound = 1.0 / math.sqrt(self.n_ctx * self.kernel_size)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, h, T, d/h) values to mix; identity shape-wise for a flat mixer."""
        if not self.heads:
            return x
        batch, length, _ = x.shape
        return self.in_proj(x).view(batch, length, self.heads, -1).transpose(1, 2)

    def merge_heads(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of `split_heads`, including the output projection."""
        if not self.heads:
            return y
        batch, _, length, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, self.width))

    def forward(self, x: torch.Tensor, history: torch.Tensor | None = None,
                start: int | torch.Tensor | None = None, *, from_position: int = 0) -> torch.Tensor:
        """(B, T, d) normalized inputs -> (B, T, d) mixed, with T <= n_ctx.

        With ``history`` (from `new_history`) the ``T`` inputs are new positions starting at ``start`` (an int
        shared by all rows, or ``(B,)`` per-row positions): their values are written into the history and mixed
        with everything before them, without recomputing earlier positions. Both paths run `mix_rows`, so the
        cached output is the full forward's by construction.

        Without ``history``, ``from_position`` keeps only the outputs at positions ``from_position .. T-1``
        (``(B, T - from_position, d)``): an encoder needs its last position alone.
        """
        values = self.split_heads(x)
        if history is None:
            return self.merge_heads(self.mix_rows(values, from_position))  # rows from_position .. T-1
        past, rows = self.write_history(values, history, start)
        return self.merge_heads(self.mix_rows(past, rows))

    # ----- the one mixing path ----------------------------------------------------------------------------------

    def mix_rows(self, past: torch.Tensor, rows: int | torch.Tensor) -> torch.Tensor:
        """Output positions ``rows`` of the masked mixing applied to ``past (B, [h,] t, c)`` (the values at
        positions ``0 .. t-1``): one matmul, or one grouped conv for ``k > 1``.

        ``rows`` is an int ``first`` (positions ``first .. t-1`` for every batch row; ``0`` is the full window)
        or a ``(B, q)`` tensor of per-row positions. Returns ``(B, [h,] q, c)``.
        """
        weight, bias = self.masked_rows(rows, past.shape[-2])
        if self.kernel_size == 1:
            return add_token_bias(weight @ past, bias)
        # tokens are channels: the values are convolved along the hidden axis, one group per head (and, with
        # per-row positions, per batch row, since each row reads its own rows of the matrix)
        per_row = not isinstance(rows, int)
        batch, length, channels = past.shape[0], past.shape[-2], past.shape[-1]
        new = weight.shape[-3]
        groups = (self.heads or 1) * (batch if per_row else 1)
        values = past.reshape(1 if per_row else batch, -1, channels)
        if self.kernel_size % 2 == 0:
            # padding="same" with an even kernel pads (k-1)//2 zeros on the left and one more on the right; torch
            # does exactly this pad itself (and warns about the copy on every first call): doing it here gives the
            # same ops and numbers without the warning. The copy is one (B, t, c + 1) tensor, well under 1 % of
            # the conv's time (benchmarks/RESULTS_training.md).
            values = F.pad(values, (0, 1))
        mixed = F.conv1d(values, weight.reshape(groups * new, length, self.kernel_size), flat_bias(bias),
                         padding=(self.kernel_size - 1) // 2, groups=groups)
        return mixed.view(*past.shape[:-2], new, channels)

    def masked_rows(self, rows: int | torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows of the mixing weight over the first ``length`` columns, causal mask applied, and their bias.

        Weight ``([B,] [h,] q, length[, k])``, bias ``([B,] h, q)`` (``None`` for a flat mixer)."""
        kernel = (slice(None),) if self.kernel_size > 1 else ()
        if isinstance(rows, int):  # a contiguous block of rows shared by the batch: a slice, no copy
            positions = torch.arange(rows, length, device=self.weight.device)
            weight = self.weight[(..., slice(rows, length), slice(0, length), *kernel)]
            bias = None if self.bias is None else self.bias[:, rows:length]
            mask = torch.arange(length, device=weight.device)[None, :] <= positions[:, None]  # (q, t)
        else:  # (B, q) per-row positions
            positions = rows
            if self.heads:
                weight = self.weight[:, positions].movedim(0, 1)  # (B, h, q, n[, k])
                bias = self.bias[:, positions].movedim(0, 1)  # (B, h, q)
            else:
                weight, bias = self.weight[positions], None  # (B, q, n[, k]); flat mixers have no bias
            weight = weight[(..., slice(0, length), *kernel)]
            mask = torch.arange(length, device=weight.device) <= positions[..., None]  # (B, q, t)
            if self.heads:
                mask = mask.unsqueeze(1)
        if not self.causal:
            return weight, bias
        return weight * (mask.unsqueeze(-1) if self.kernel_size > 1 else mask), bias

    # ----- incremental decoding -------------------------------------------------------------------------------

    def new_history(self, batch_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Zeroed history buffer ``(B, [h,] n_ctx, c)`` for incremental decoding (preallocated once)."""
        if not self.causal:
            raise ValueError("incremental decoding needs a causal mixer; this mixing layer has causal=False")
        head_shape = (self.heads,) if self.heads else ()
        channels = self.width // self.heads if self.heads else self.width
        return torch.zeros(batch_size, *head_shape, self.n_ctx, channels, dtype=dtype, device=device)

    def write_history(self, values: torch.Tensor, history: torch.Tensor,
                      start: int | torch.Tensor) -> tuple[torch.Tensor, int | torch.Tensor]:
        """Store ``values (B, [h,] q, c)`` at positions ``start ..`` of ``history``; returns the history up to the
        newest position and the rows to compute (`mix_rows`' ``rows``)."""
        new = values.shape[-2]
        if isinstance(start, int):
            if start + new > self.n_ctx:
                raise ValueError(f"positions up to {start + new} exceed this mixer's n_ctx={self.n_ctx}")
            history[..., start : start + new, :] = values
            return history[..., : start + new, :], start
        positions = start[:, None] + torch.arange(new, device=start.device)  # (B, q)
        length = int(positions.max()) + 1
        if length > self.n_ctx:
            raise ValueError(f"positions up to {length} exceed this mixer's n_ctx={self.n_ctx}")
        rows = torch.arange(values.shape[0], device=start.device)[:, None]
        if self.heads:
            history[rows, :, positions] = values.transpose(1, 2)  # (B, q, h, c) written at each row's positions
        else:
            history[rows, positions] = values
        return history[..., :length, :], positions


def add_token_bias(mixed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Add a per-(head and) output-token bias ``(..., q)`` to mixed values ``(..., q, c)``."""
    return mixed if bias is None else mixed + bias.unsqueeze(-1)


def flat_bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    """The bias in the layout of a grouped conv with tokens as channels."""
    return None if bias is None else bias.reshape(-1)


class FeedForward(nn.Module):
    """Per-token two-layer MLP with GELU, as in the seed."""

    def __init__(self, width: int, intermediate: int):
        super().__init__()
        self.up = nn.Linear(width, intermediate)
        self.down = nn.Linear(intermediate, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class MixerBlock(nn.Module):
    """Pre-norm block: ``y = x + Drop(Mix(LN(x)))``, then ``y + Drop(FF(LN(y)))`` (``Drop`` is the identity unless
    ``dropout`` > 0)."""

    def __init__(self, width: int, n_ctx: int, causal: bool, heads: int, kernel_size: int, intermediate: int,
                 eps: float, dropout: float = 0.0):
        super().__init__()
        self.mixer_norm = nn.LayerNorm(width, eps=eps)
        self.mixing = MaskedTokenMixing(width, n_ctx, heads, kernel_size, causal)
        self.ff_norm = nn.LayerNorm(width, eps=eps)
        self.ff = FeedForward(width, intermediate)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, history: torch.Tensor | None = None,
                start: int | torch.Tensor | None = None, *, from_position: int = 0) -> torch.Tensor:
        """As `MaskedTokenMixing.forward`; ``from_position`` > 0 returns only positions ``from_position ..``,
        computing the mixing and the feed-forward for those positions alone."""
        mixed = self.dropout(self.mixing(self.mixer_norm(x), history, start, from_position=from_position))
        # no slice when every position is kept: a no-op slice here breaks torch 2.13's compiled backward
        # (aot_autograd, tests/test_compile.py)
        x = (x[:, from_position:] if from_position else x) + mixed
        return x + self.dropout(self.ff(self.ff_norm(x)))


class MemoryRead(nn.Module):
    """Content-addressed read of memory slots (`MemoryMixerConfig.memory_read="attention"`): one attention
    head from every position's hidden state over the slots it can see and a learned "nothing" slot, added to
    the hidden state: ``h + out(softmax(q(LN(h)) k(m)^T / sqrt(d)) v(m))``.

    A mixer weighs its memory slots with mixing weights that are the same for every input; this read lets what a
    position holds choose the memory. Position-wise, so generation calls it on each new position alone. The model
    starts ``out`` at zero (`MemoryMixerForCausalLM._init_weights`): an untrained read adds nothing."""

    def __init__(self, width: int, memory_width: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        self.query = nn.Linear(width, width, bias=False)
        self.key = nn.Linear(memory_width, width, bias=False)
        self.value = nn.Linear(memory_width, width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.nothing_key = nn.Parameter(torch.zeros(width))
        self.nothing_value = nn.Parameter(torch.zeros(width))

    def weights(self, hidden: torch.Tensor, slots: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Attention ``(N, L, 1 + S)`` of hidden states ``(N, L, d)`` over "nothing" (index 0) and memory slots
        ``(N, S, w)``, of which the first ``visible (N,)`` are in use; unused slots get weight 0."""
        query = self.query(self.norm(hidden))
        keys = torch.cat([self.nothing_key.to(query.dtype).expand(slots.shape[0], 1, -1),
                          self.key(slots).to(query.dtype)], dim=1)
        scores = query @ keys.transpose(1, 2) / math.sqrt(query.shape[-1])
        usable = torch.arange(keys.shape[1], device=slots.device)[None, :] <= visible[:, None]  # (N, 1 + S)
        return scores.masked_fill(~usable[:, None, :], float("-inf")).softmax(dim=-1)

    def forward(self, hidden: torch.Tensor, slots: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        weights = self.weights(hidden, slots, visible)
        values = torch.cat([self.nothing_value.to(weights.dtype).expand(slots.shape[0], 1, -1),
                            self.value(slots).to(weights.dtype)], dim=1)
        return hidden + self.out(weights @ values)


class BoundMemoryRead:
    """A `MemoryRead` with the slots of one decoder call, run by a `MixerStack` before block ``layer``."""

    def __init__(self, module: MemoryRead, layer: int, slots: torch.Tensor, visible: torch.Tensor):
        self.module, self.layer, self.slots, self.visible = module, layer, slots, visible

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.module(hidden, self.slots, self.visible)


class MixerStack(nn.Module):
    """``depth`` mixer blocks of one width, context length and mixing setting (``heads``, ``kernel_size``);
    ``config`` gives the feed-forward width and the norm epsilon."""

    def __init__(self, width: int, depth: int, n_ctx: int, causal: bool, config, *, heads: int, kernel_size: int):
        super().__init__()
        self.n_ctx = n_ctx
        self.causal = causal
        self.layers = nn.ModuleList(
            MixerBlock(width, n_ctx, causal, heads, kernel_size, config.ff_size(width), config.layer_norm_eps,
                       config.hidden_dropout)
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, histories: list[torch.Tensor] | None = None,
                start: int | torch.Tensor | None = None, read: BoundMemoryRead | None = None) -> torch.Tensor:
        """Full window, or (with ``histories`` from `new_histories`) new positions starting at ``start``.
        ``read``: a memory read (`BoundMemoryRead`) that runs before its block; position-wise, so the cached
        path calls it on the new positions alone."""
        for index, layer in enumerate(self.layers):
            if read is not None and index == read.layer:
                x = read(x)
            x = layer(x) if histories is None else layer(x, histories[index], start)
        return x

    def last_position(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, d): the stack's output at the last position, what an encoder keeps.

        The last block computes its mixing and feed-forward for that one position only (the same numbers as
        ``self(x)[:, -1]``; 1.25x faster autoencoder training steps at the shipped presets,
        benchmarks/RESULTS_autoencoder_encoder.md)."""
        *earlier, last = self.layers
        for layer in earlier:
            x = layer(x)
        return last(x, from_position=x.shape[1] - 1)[:, 0]

    def new_histories(self, batch_size: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        """One preallocated history buffer per layer, for incremental decoding."""
        # found by type, not as ``layer.mixing``: a wrapper (PEFT's LoRA ParamWrapper) may sit around the mixer
        mixers = [next(m for m in layer.modules() if isinstance(m, MaskedTokenMixing)) for layer in self.layers]
        return [mixer.new_history(batch_size, dtype, device) for mixer in mixers]

    # ----- incremental decoding: start, restart rows, step -------------------------------------------------------

    restarts_rows_alone = True  # each batch row's state can start over while the others continue

    def start(self, inputs: torch.Tensor, lengths: torch.Tensor,
              read: BoundMemoryRead | None = None) -> tuple[torch.Tensor, MixerStackState]:
        """Fresh state from ``inputs (B, W, d)`` (row ``b`` valid up to ``lengths[b]``, padding after it, which a
        causal stack never reads); returns the hidden states ``(B, W, d)`` and the state. ``read``: as in
        `forward`, for these rows (and in `restart_rows` and `step`)."""
        state = MixerStackState(self.new_histories(inputs.shape[0], inputs.dtype, inputs.device), lengths.clone())
        hidden = self(inputs, state.histories, 0, read) if inputs.shape[1] else inputs
        return hidden, state

    def restart_rows(self, state: MixerStackState, inputs: torch.Tensor, lengths: torch.Tensor,
                     rows: torch.Tensor, read: BoundMemoryRead | None = None) -> None:
        """Start batch rows ``rows`` over from ``inputs (n, W, d)``; the other rows keep their state."""
        fresh = self.start(inputs, lengths, read)[1]
        for history, new in zip(state.histories, fresh.histories, strict=True):
            history[rows] = new
        state.positions[rows] = lengths

    def step(self, inputs: torch.Tensor, state: MixerStackState, read: BoundMemoryRead | None = None) -> torch.Tensor:
        """Run ``inputs (B, q, d)`` as the next ``q`` positions of every row; returns ``(B, q, d)``."""
        start = state.positions
        check_capacity(start, inputs.shape[1], self.n_ctx)
        shared = int(start[0])
        hidden = self(inputs, state.histories, shared if bool((start == shared).all()) else start, read)
        state.positions = start + inputs.shape[1]
        return hidden


class TransformerStack(nn.Module):
    """``depth`` Llama decoder layers (from transformers) with rotary positions, causal or bidirectional.

    Used for the hybrid variants the seed compares (transformer encoder or decoder); attention runs through
    SDPA, whose ``is_causal`` flag selects the mask. Its modules are marked ``keeps_transformers_init``: they
    keep transformers' init whatever the config's ``init_style`` (as the seed's ``LlamaModel`` does).
    """

    def __init__(self, width: int, depth: int, n_ctx: int, causal: bool, config):
        super().__init__()
        self.n_ctx = n_ctx
        self.causal = causal
        self.llama_config = LlamaConfig(
            vocab_size=1,
            hidden_size=width,
            intermediate_size=config.ff_size(width),
            num_hidden_layers=depth,
            num_attention_heads=config.num_attention_heads,
            max_position_embeddings=n_ctx,
            rms_norm_eps=config.layer_norm_eps,
            attn_implementation="sdpa",
            bos_token_id=None,
            eos_token_id=None,
        )
        self.layers = nn.ModuleList(LlamaDecoderLayer(self.llama_config, i) for i in range(depth))
        self.rotary_emb = LlamaRotaryEmbedding(config=self.llama_config)
        for module in self.modules():
            module.keeps_transformers_init = True

    def forward(self, x: torch.Tensor, cache=None, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, read: BoundMemoryRead | None = None) -> torch.Tensor:
        """Full window; or, for generation, new positions appended to ``cache`` (a transformers
        ``DynamicCache``) at ``position_ids (B, q)``, reading the keys ``attention_mask (B, 1, q, K)`` allows
        (bool, True = attend; ``None`` = all earlier keys plus causal order among the new ones).

        SDPA's ``is_causal`` aligns its mask to the top left, which is wrong for several new queries after
        cached keys, so that case gets an explicit bottom-right-aligned mask. ``read`` must be ``None``
        (`MemoryMixerConfig` allows a memory read with mixer decoders only)."""
        if read is not None:
            raise ValueError("a transformer stack has no memory read; its attention already reads the memory slots")
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = past + torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        if attention_mask is None and self.causal and cache is not None and cache.get_seq_length() and x.shape[1] > 1:
            attention_mask = cached_causal_mask(x.shape[1], cache.get_seq_length(), x.device)
        position_embeddings = self.rotary_emb(x, position_ids=position_ids)
        for layer in self.layers:
            x = layer(x, attention_mask=attention_mask, position_ids=position_ids,
                      position_embeddings=position_embeddings, cache=cache, use_cache=cache is not None,
                      is_causal=self.causal and attention_mask is None)
        return x

    def last_position(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, d): the output at the last position (every position is computed: attention's
        keys and values need them all)."""
        return self(x)[:, -1]

    # ----- incremental decoding: start, restart rows, step -------------------------------------------------------

    restarts_rows_alone = False  # one key/value cache for the whole batch

    def start(self, inputs: torch.Tensor, lengths: torch.Tensor,
              read: BoundMemoryRead | None = None) -> tuple[torch.Tensor, TransformerStackState]:
        """Fresh state from ``inputs (B, W, d)`` (row ``b`` valid up to ``lengths[b]``; later prefill keys of a row
        stay hidden from it); returns the hidden states ``(B, W, d)`` and the state."""
        state = TransformerStackState(DynamicCache(config=self.llama_config), lengths.clone(), inputs.shape[1])
        hidden = self(inputs, cache=state.kv, read=read) if inputs.shape[1] else inputs
        return hidden, state

    def restart_rows(self, state: TransformerStackState, inputs: torch.Tensor, lengths: torch.Tensor,
                     rows: torch.Tensor, read: BoundMemoryRead | None = None) -> None:
        """All rows start over from ``inputs``: a key/value cache cannot restart some rows alone."""
        if rows.numel() != state.batch_size:
            raise ValueError(
                "a transformer decoder keeps one key/value cache for the whole batch, so all rows must start a new "
                "chunk together; generate prompts of equal length (or one at a time) with decoder_type='transformer'"
            )
        state.__dict__.update(self.start(inputs, lengths, read)[1].__dict__)

    def step(self, inputs: torch.Tensor, state: TransformerStackState,
             read: BoundMemoryRead | None = None) -> torch.Tensor:
        """Run ``inputs (B, q, d)`` as the next ``q`` positions of every row; returns ``(B, q, d)``."""
        start, new = state.positions, inputs.shape[1]
        check_capacity(start, new, self.n_ctx)
        position_ids = start[:, None] + torch.arange(new, device=start.device)
        hidden = self(inputs, cache=state.kv, position_ids=position_ids, attention_mask=state.step_mask(new),
                      read=read)
        state.positions = start + new
        return hidden


# ----- incremental state of a stack (what a generation cache holds for its decoder) ------------------------------


def check_capacity(start: torch.Tensor, new: int, capacity: int) -> None:
    longest = int(start.max()) + new
    if longest > capacity:
        raise ValueError(
            f"generation reached {longest} positions, past this decoder's n_ctx={capacity}; lower "
            "max_new_tokens or pass sliding_window=True to generate"
        )


class MixerStackState:
    """Incremental state of a `MixerStack`: one preallocated history ``(B, [h,] n_ctx, c)`` per layer and each
    row's next position ``positions (B,)``. Rows can be reordered, selected and repeated (beam search)."""

    def __init__(self, histories: list[torch.Tensor], positions: torch.Tensor):
        self.histories, self.positions = histories, positions

    @property
    def batch_size(self) -> int:
        return self.positions.shape[0]

    def index_rows(self, index: torch.Tensor) -> None:
        self.histories = [history[index.to(history.device)] for history in self.histories]
        self.positions = self.positions[index.to(self.positions.device)]

    def repeat_rows(self, repeats: int) -> None:
        self.histories = [history.repeat_interleave(repeats, dim=0) for history in self.histories]
        self.positions = self.positions.repeat_interleave(repeats, dim=0)


class TransformerStackState:
    """Incremental state of a `TransformerStack`: a transformers ``DynamicCache``, each row's next position, and
    which prefill keys a row may read: ``key_limit[b]`` of them (the rest was padding), and every key from
    column ``prefill_columns`` on."""

    def __init__(self, kv: DynamicCache, lengths: torch.Tensor, prefill_columns: int):
        self.kv, self.positions, self.key_limit, self.prefill_columns = kv, lengths, lengths.clone(), prefill_columns

    @property
    def batch_size(self) -> int:
        return self.positions.shape[0]

    def index_rows(self, index: torch.Tensor) -> None:
        self.kv.reorder_cache(index)
        self.positions, self.key_limit = self.positions[index], self.key_limit[index]

    def repeat_rows(self, repeats: int) -> None:
        self.kv.batch_repeat_interleave(repeats)
        self.positions = self.positions.repeat_interleave(repeats, dim=0)
        self.key_limit = self.key_limit.repeat_interleave(repeats, dim=0)

    def step_mask(self, new: int) -> torch.Tensor | None:
        """``(B, 1, q, K)`` boolean mask for ``q`` new positions: prefill padding hidden, causal among new keys
        (``None`` when nothing is hidden and there is one new position)."""
        total = self.kv.get_seq_length() + new
        columns = torch.arange(total, device=self.positions.device)
        valid = (columns[None, :] < self.key_limit[:, None]) | (columns[None, :] >= self.prefill_columns)
        if new == 1 and bool(valid.all()):
            return None
        causal = columns[None, :] <= (total - new + torch.arange(new, device=columns.device))[:, None]  # (q, K)
        return (valid[:, None, :] & causal[None]).unsqueeze(1)


def cached_causal_mask(new: int, past: int, device: torch.device) -> torch.Tensor:
    """``(1, 1, new, past + new)`` boolean mask: every cached key, and causal order among the new queries."""
    keys = torch.arange(past + new, device=device)
    return (keys[None, :] <= past + torch.arange(new, device=device)[:, None])[None, None]


def build_stack(block_type: str, width: int, depth: int, n_ctx: int, causal: bool, config, *, mixer_heads: int,
                mixer_kernel_size: int) -> nn.Module:
    """Factory: a stack of mixer blocks or Llama blocks, chosen by ``block_type``.

    The mixing setting is the caller's (each stack of a model may have its own, see
    ``MemmixBaseConfig.stack_mixing``); a transformer stack has none and ignores it. ``config`` gives the sizes
    every stack shares (feed-forward ratio, norm epsilon, attention heads)."""
    if block_type == "mixer":
        return MixerStack(width, depth, n_ctx, causal, config, heads=mixer_heads, kernel_size=mixer_kernel_size)
    if block_type == "transformer":
        return TransformerStack(width, depth, n_ctx, causal, config)
    raise ValueError(f"block_type={block_type!r} is not supported; choose 'mixer' or 'transformer'")


__all__ = ["BoundMemoryRead", "MaskedTokenMixing", "MemoryRead", "MixerBlock", "MixerStack", "MixerStackState", "TransformerStack",
           "TransformerStackState", "build_stack"]
