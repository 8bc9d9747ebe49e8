"""The memory model `MemoryMixerForCausalLM`: an encoder turns chunks of ``n_ctx`` tokens into embeddings
(memories) that a causal decoder reads, so the context grows while the decoder's cost per token stays that
of an ``n_ctx``-token model.

Decoder input of chunk ``c`` (0-based) for each memory mode, with ``combine="token"``:

* ``past`` / ``fixed``:    ``[m_0 ... m_{c-1}, pad ... pad, tokens of chunk c]`` (``max_memories`` slots)
* ``past`` / ``variable``: ``[m_0 ... m_{c-1}, tokens of chunk c]``
* ``oracle``:              ``[e_c, tokens of chunk c]`` where ``e_c`` embeds chunk ``c`` itself
* ``recurrent``:           ``[r_c, tokens of chunk c]`` where ``r_c`` is the decoder's own last state of
  chunk ``c-1`` (a learned start vector for chunk 0), trained through time.

With ``combine="concat"`` / ``"sum"`` the (single) memory is appended to / added to every token vector instead.
Memories of all chunks are encoded in one batched encoder call, and all chunks are decoded in one batched
decoder call (except ``recurrent``, which is sequential by definition). Logits come back in sequence order,
``(B, T, V)``, with ``logits[:, t]`` predicting token ``t + 1``; the loss is the usual shifted next-token loss
over the whole sequence, so the first token of chunk ``c + 1`` is predicted by the last position of chunk ``c``.

Generation (``generation_memmix.py``): the prompt's earlier chunks are encoded once, in one encoder call; the
decoder keeps an incremental cache of the current chunk only, so its cost per token does not grow with the
context. When the current chunk is full it is encoded into a new memory and decoding continues in a fresh
chunk. Past ``max_memories`` generation raises ``ValueError`` before any work unless
``generate(..., sliding_window=True)``, which drops the oldest memory. Left-padded batches run each row at
its own positions. ``memory_mode="oracle"`` cannot generate (each chunk reads an embedding of itself).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import GenerationMixin

from .configuration_memmix import MemoryMixerConfig
from .generation_memmix import (
    MemmixCache,
    MemmixGenerationMixin,
    leading_padding,
    memory_cached_hidden,
    shift_rows_left,
    shift_rows_right,
    zero_padding_positions,
)
from .mixer_layers import build_stack
from .modeling_autoencoder import TextEncoder
from .modeling_common import (
    MemmixLMOutput,
    MemmixPreTrainedModel,
    attach_loss,
    check_input_ids,
)
from .quantization import QuantizedEmbedding, quantize_embedding, round_trip

MEMORY_AUTO_MAP = {
    "AutoConfig": "configuration_memmix.MemoryMixerConfig",
    "AutoModel": "modeling_memory.MemoryMixerForCausalLM",
    "AutoModelForCausalLM": "modeling_memory.MemoryMixerForCausalLM",
}


class MemoryMixerForCausalLM(MemmixPreTrainedModel, MemmixGenerationMixin, GenerationMixin):
    """Causal LM over ``n_ctx * (max_memories + 1)`` tokens, reading memories of earlier chunks.

    Build one whose encoder comes from a trained `MixerAutoencoder` with `from_autoencoder`.
    """

    config_class = MemoryMixerConfig
    AUTO_MAP = MEMORY_AUTO_MAP
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}

    def __init__(self, config: MemoryMixerConfig):
        super().__init__(config)
        width = config.hidden_size
        memory_width = config.memory_concat_dim if config.combine == "concat" else width
        token_width = width - config.memory_concat_dim if config.combine == "concat" else width
        if config.memory_mode == "recurrent":
            self.encoder = None
            self.recurrent_proj = nn.Linear(width, memory_width)
            self.initial_memory = nn.Parameter(torch.zeros(memory_width))
        else:
            self.encoder = TextEncoder(config, config.encoder_hidden_size, config.encoder_layers, config.memory_dim,
                                       config.encoder_type, config.encoder_causal)
            self.memory_proj = nn.Linear(config.memory_dim, memory_width) if config.memory_dim != memory_width else None
            if config.freeze_encoder:
                self.encoder.requires_grad_(False)
        self.embed_tokens = nn.Embedding(config.vocab_size, token_width)
        self.decoder = build_stack(config.decoder_type, width, config.num_hidden_layers, config.decoder_n_ctx, True,
                                   config)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(width, config.vocab_size, bias=False)
        if config.tie_word_embeddings and token_width != width:
            raise ValueError(
                f"tie_word_embeddings needs token vectors of the full width {width}, but combine='concat' narrows "
                f"them to {token_width}"
            )
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self and self.config.memory_mode == "recurrent":
            from transformers import initialization as init

            init.normal_(self.initial_memory, std=self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    # ----- memories -------------------------------------------------------------------------------------------

    def encode_chunks(self, chunk_ids: torch.LongTensor) -> torch.Tensor:
        """(B, n, L) token ids of ``n`` chunks -> (B, n, memory_dim) memories, all chunks in one encoder call.

        With ``config.embedding_quantization`` set, the memories are what that storage format gives back
        (quantized and dequantized), so evaluation measures the model with memories as they would be stored.
        """
        batch, count, length = chunk_ids.shape
        if count == 0:
            return chunk_ids.new_zeros(batch, 0, self.config.memory_dim, dtype=self.embed_tokens.weight.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            memories = self.encoder(chunk_ids.reshape(batch * count, length))
        if self.config.embedding_quantization is not None:
            memories = round_trip(memories, self.config.embedding_quantization)
        return memories.view(batch, count, -1)

    def quantized_memories(self, chunk_ids: torch.LongTensor, fmt: str) -> QuantizedEmbedding:
        """(B, n, L) chunks -> their memories stored in format ``fmt`` (codes, scales and ``num_bits``)."""
        batch, count, length = chunk_ids.shape
        memories = self.encoder(chunk_ids.reshape(batch * count, length))
        return quantize_embedding(memories, fmt)

    def project_memories(self, memories: torch.Tensor) -> torch.Tensor:
        """Encoder memories (…, memory_dim) -> decoder-side vectors (…, memory width)."""
        return self.memory_proj(memories) if self.memory_proj is not None else memories

    # ----- decoder inputs -------------------------------------------------------------------------------------

    def combine(self, memory: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        """Join per-chunk memory slots ``(N, S, w)`` with token vectors ``(N, L, w')`` -> decoder input."""
        mode = self.config.combine
        if mode == "token":
            return torch.cat([memory, token_embeds], dim=1)
        single = memory[:, -1:].expand(-1, token_embeds.shape[1], -1)  # (N, L, w): one memory per chunk
        if mode == "sum":
            return token_embeds + single
        return torch.cat([token_embeds, single], dim=-1)

    def memory_slots(self, memories: torch.Tensor, num_chunks: int) -> torch.Tensor:
        """Past mode: (B, n_mem, w) memories -> (B, num_chunks, S, w) slots.

        With ``combine="token"`` slot ``j`` of chunk ``c`` holds ``m_j`` if ``j < c`` and padding (zeros)
        otherwise (``S = max_memories``). With concat/sum (``max_memories == 1``) chunk ``c`` reads ``m_{c-1}``
        and chunk 0 reads zeros (``S = 1``).
        """
        batch, width = memories.shape[0], memories.shape[-1]
        slots = self.config.max_memories
        padded = torch.cat([memories, memories.new_zeros(batch, slots - memories.shape[1], width)], dim=1)
        chunk_index = torch.arange(num_chunks, device=memories.device)
        if self.config.combine == "token":
            visible = torch.arange(slots, device=memories.device)[None, :] < chunk_index[:, None]  # (n, S)
            return padded.unsqueeze(1) * visible[None, :, :, None]
        previous = padded[:, (chunk_index - 1).clamp(min=0)] * (chunk_index > 0)[None, :, None]
        return previous.unsqueeze(2)

    def past_decoder_inputs(self, input_ids: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs of every chunk in past mode.

        Returns ``inputs (B, n_chunks, S + n_ctx, d)`` and ``token_positions (n_chunks, n_ctx)``: where each
        chunk's tokens sit in its decoder input. The last chunk may be partial; it is padded at the end (the
        decoder is causal, so trailing padding changes nothing before it).
        """
        batch, length = input_ids.shape
        chunk = self.config.n_ctx
        num_chunks = math.ceil(length / chunk)
        padded_ids = nn.functional.pad(input_ids, (0, num_chunks * chunk - length))
        chunks = padded_ids.view(batch, num_chunks, chunk)
        memories = self.project_memories(self.encode_chunks(chunks[:, :-1]))
        slots = self.memory_slots(memories, num_chunks)  # (B, n, S, w)
        token_embeds = self.embed_tokens(chunks)  # (B, n, C, w')
        flat = self.combine(slots.flatten(0, 1), token_embeds.flatten(0, 1))
        inputs = flat.view(batch, num_chunks, *flat.shape[1:])
        offset = torch.arange(chunk, device=input_ids.device)
        num_slots = self.config.num_memory_slots
        if self.config.memory_positions == "variable" and num_slots:
            # variable positions: chunk c's tokens follow its c memories directly; move them forward
            starts = torch.arange(num_chunks, device=input_ids.device)
            positions = starts[:, None] + offset[None, :]
            inputs = self.close_memory_gaps(inputs, num_chunks)
        else:
            positions = (num_slots + offset)[None, :].expand(num_chunks, -1)
        return inputs, positions

    def close_memory_gaps(self, inputs: torch.Tensor, num_chunks: int) -> torch.Tensor:
        """Fixed layout ``[m, pad, tokens]`` -> variable layout ``[m, tokens, pad]`` by one gather per chunk."""
        slots, total = self.config.max_memories, inputs.shape[2]
        chunk_index = torch.arange(num_chunks, device=inputs.device)[:, None]
        position = torch.arange(total, device=inputs.device)[None, :]
        # position p of chunk c reads: memory p if p < c; token p - c if c <= p < c + C; padding after
        source = torch.where(position < chunk_index, position, position - chunk_index + slots)
        source = torch.where(source >= total, torch.full_like(source, slots - 1), source)
        gathered = inputs.gather(2, source[None, :, :, None].expand(inputs.shape[0], -1, -1, inputs.shape[-1]))
        is_tail = position >= chunk_index + (total - slots)
        return gathered * ~is_tail[None, :, :, None]

    def oracle_decoder_inputs(self, input_ids: torch.LongTensor,
                              lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Oracle mode: each chunk reads the embedding of itself.

        ``lengths (B,)`` are the real lengths of left-aligned rows (default: all of ``input_ids``). The last,
        partial chunk of a row is embedded as it is (its real tokens only), so a padded row reads the same
        embedding as the row alone.
        """
        batch, length = input_ids.shape
        chunk = self.config.n_ctx
        num_chunks = math.ceil(length / chunk)
        padded_ids = nn.functional.pad(input_ids, (0, num_chunks * chunk - length))
        chunks = padded_ids.view(batch, num_chunks, chunk)
        if lengths is None:
            lengths = torch.full((batch,), length, dtype=torch.long, device=input_ids.device)
        last_chunk = (lengths - 1) // chunk
        in_last = lengths - last_chunk * chunk
        memories = self.encode_chunks(chunks)
        for real in in_last[in_last < chunk].unique().tolist():  # rows ending inside a chunk: its real tokens
            rows = (in_last == real).nonzero().squeeze(1)
            ends = chunks[rows, last_chunk[rows], :real]  # (n, real)
            memories = memories.index_put((rows, last_chunk[rows]), self.encode_chunks(ends[:, None])[:, 0])
        token_embeds = self.embed_tokens(chunks)
        slots = self.project_memories(memories).unsqueeze(2)  # (B, n, 1, w)
        flat = self.combine(slots.flatten(0, 1), token_embeds.flatten(0, 1))
        positions = (self.config.num_memory_slots + torch.arange(chunk, device=input_ids.device))[None, :]
        return flat.view(batch, num_chunks, *flat.shape[1:]), positions.expand(num_chunks, -1)

    # ----- forward --------------------------------------------------------------------------------------------

    def decode_chunks(self, inputs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, n, L_dec, d) decoder inputs -> (B, n * n_ctx, d) final hidden states at the token positions."""
        batch, num_chunks = inputs.shape[:2]
        hidden = self.decoder(inputs.flatten(0, 1)).view(batch, num_chunks, inputs.shape[2], -1)
        index = positions[None, :, :, None].expand(batch, -1, -1, hidden.shape[-1])
        return self.norm(hidden.gather(2, index).flatten(1, 2))

    def recurrent_hidden(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Recurrent mode: decode chunk by chunk, each reading the previous chunk's last decoder state."""
        batch, length = input_ids.shape
        chunk = self.config.n_ctx
        memory = self.initial_memory.expand(batch, 1, -1)
        outputs = []
        num_slots = self.config.num_memory_slots
        for start in range(0, length, chunk):
            token_embeds = self.embed_tokens(input_ids[:, start : start + chunk])
            hidden = self.decoder(self.combine(memory, token_embeds))
            outputs.append(hidden[:, num_slots:])
            memory = self.recurrent_proj(hidden[:, -1:])
        return self.norm(torch.cat(outputs, dim=1))

    def sequence_hidden(self, input_ids: torch.LongTensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Training-time path: (B, T) token ids -> (B, T, d) final hidden states, all chunks at once.

        ``lengths (B,)``: real lengths of left-aligned rows (padding after them), default all ``T``."""
        length = input_ids.shape[1]
        if self.config.memory_mode == "recurrent":
            return self.recurrent_hidden(input_ids)
        if self.config.memory_mode == "past":
            inputs, positions = self.past_decoder_inputs(input_ids)
        else:
            inputs, positions = self.oracle_decoder_inputs(input_ids, lengths)
        return self.decode_chunks(inputs, positions)[:, :length]

    def forward(self, input_ids: torch.LongTensor, labels: torch.LongTensor | None = None,
                attention_mask: torch.Tensor | None = None, cache: MemmixCache | None = None,
                use_cache: bool | None = None, logits_to_keep: int = 0, sliding_window: bool = False,
                num_items_in_batch: int | torch.Tensor | None = None, **kwargs) -> MemmixLMOutput:
        """Logits ``(B, T, V)`` (and the loss with ``labels``). With ``attention_mask`` (left or right padding)
        each row gives the logits of that row run alone (left padding runs it from position 0), padding
        positions give zero logits, and the loss scores no prediction made from or of a padding position.
        ``num_items_in_batch`` (transformers' Trainer) divides the summed loss by that count instead.
        With ``use_cache=True`` or a ``cache`` (generation) the returned ``cache`` continues
        the sequence; a step returns logits of the new tokens, the prefill those of the last ``logits_to_keep``
        tokens (all with 0; only the last one when the prompt is longer than the model's limit)."""
        if cache is not None or use_cache:
            return self.cached_forward(input_ids, attention_mask, cache, logits_to_keep, sliding_window)
        check_input_ids(input_ids, self.config.vocab_size, self.config.max_sequence_length)
        pads = leading_padding(attention_mask, input_ids)
        lengths = None if attention_mask is None else attention_mask.bool().sum(1)
        if pads is None:
            hidden = self.sequence_hidden(input_ids, lengths)
        else:  # left padding: run each row from position 0, padding moved behind its tokens
            hidden = shift_rows_right(self.sequence_hidden(shift_rows_left(input_ids, pads), lengths), pads)
        hidden = zero_padding_positions(hidden, attention_mask)
        if logits_to_keep and labels is None:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        output = MemmixLMOutput(logits=logits)
        return attach_loss(output, logits, labels, input_ids, self.config.vocab_size, shift=True,
                           attention_mask=attention_mask, num_items_in_batch=num_items_in_batch)

    def cached_forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None,
                       cache: MemmixCache | None, logits_to_keep: int, sliding_window: bool) -> MemmixLMOutput:
        """Generation path (see `forward`)."""
        is_prefill = cache is None
        hidden, cache = memory_cached_hidden(self, input_ids, attention_mask, cache, sliding_window)
        if is_prefill and logits_to_keep != 1 and input_ids.shape[1] <= self.config.max_sequence_length:
            # earlier prompt positions come from the training-time path (the cache only holds the current chunk)
            logits = self.forward(input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep).logits
        else:
            logits = self.lm_head(hidden)
        return MemmixLMOutput(logits=logits, cache=cache)

    # ----- building from an autoencoder -------------------------------------------------------------------------

    @classmethod
    def from_autoencoder(cls, autoencoder, freeze_encoder: bool = True, **config_overrides) -> MemoryMixerForCausalLM:
        """A memory model whose encoder (and bottleneck) is a trained `MixerAutoencoder`'s.

        ``autoencoder`` is a `MixerAutoencoder` or a path / Hub id of one. The encoder settings (width, depth,
        type, causality, ``memory_dim``, ``n_ctx``, vocabulary) are taken from it; ``config_overrides`` set the
        decoder and memory options (e.g. ``hidden_size=..., max_memories=...``). With ``freeze_encoder=True``
        the encoder's weights stay fixed during training.
        """
        if isinstance(autoencoder, (str, bytes)) or hasattr(autoencoder, "__fspath__"):
            from .modeling_autoencoder import MixerAutoencoder

            autoencoder = MixerAutoencoder.from_pretrained(autoencoder)
        ae_config = autoencoder.config
        taken = {
            "vocab_size": ae_config.vocab_size,
            "n_ctx": ae_config.n_ctx,
            "encoder_hidden_size": ae_config.hidden_size,
            "encoder_layers": ae_config.encoder_layers,
            "encoder_type": ae_config.encoder_type,
            "encoder_causal": ae_config.encoder_causal,
            "memory_dim": ae_config.embedding_dim,
            "mixer_heads": ae_config.mixer_heads,
            "mixer_kernel_size": ae_config.mixer_kernel_size,
            "num_attention_heads": ae_config.num_attention_heads,
            "layer_norm_eps": ae_config.layer_norm_eps,
        }
        clashes = {k: v for k, v in config_overrides.items() if k in taken and v != taken[k]}
        if clashes:
            raise ValueError(f"these settings are fixed by the autoencoder's encoder and cannot change: {clashes}")
        settings = {**taken, **config_overrides, "freeze_encoder": freeze_encoder}
        settings.setdefault("hidden_size", ae_config.hidden_size)
        settings.setdefault("num_hidden_layers", ae_config.decoder_layers)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            settings.setdefault(name, getattr(ae_config, name))
        # keep the autoencoder's feed-forward ratio so the encoder's widths (scaled from it) match
        settings.setdefault("intermediate_size", ae_config.intermediate_size * settings["hidden_size"] // ae_config.hidden_size)
        model = cls(MemoryMixerConfig(**settings))
        model.encoder.load_state_dict(autoencoder.encoder.state_dict())
        return model


MemoryMixerConfig.register_for_auto_class()
MemoryMixerForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["MemoryMixerForCausalLM"]
