"""The memory model `MemoryMixerForCausalLM`: an encoder turns chunks of ``n_ctx`` tokens into embeddings
(memories) that a causal decoder reads, so the context grows while the decoder's cost per token stays that
of an ``n_ctx``-token model.

How a chunk reads its memories depends on ``memory_mode`` (past / oracle / recurrent, or none, the no-memory
baseline with the same decoder) and ``combine`` (token / concat / sum); each mode lives in one class of
``memory_modes.py``, which serves the training forward and generation alike. ``memory_read="attention"`` adds a
content-addressed read of the same slots inside a mixer decoder (`MemoryRead`, ``bound_read``). Memories of all chunks are encoded in one batched encoder call, and all chunks are decoded
in one batched decoder call (except ``recurrent``, which is sequential by definition). Logits come back in
sequence order, ``(B, T, V)``, with ``logits[:, t]`` predicting token ``t + 1``; the loss is the usual shifted
next-token loss over the whole sequence, so the first token of chunk ``c + 1`` is predicted by the last
position of chunk ``c``.

Evaluation controls are explicit forward arguments: ``embedding_format`` stores the memories in a format for
this call, ``without_memories=True`` decodes every chunk as if nothing came before it.

Generation (``generation_memmix.py``): the prompt's earlier chunks are encoded once, in one encoder call; the
decoder keeps an incremental cache of the current chunk only, so its cost per token does not grow with the
context. When the current chunk is full it is encoded into a new memory and decoding continues in a fresh
chunk. Past ``max_memories`` generation raises ``ValueError`` before any work unless
``generate(..., sliding_window=True)``, which drops the oldest memory. Left-padded batches run each row at
its own positions. ``memory_mode="oracle"`` cannot generate (each chunk reads an embedding of itself).
"""

from __future__ import annotations

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
from .input_checks import check_input_ids
from .memory_modes import memory_mode_for
from .mixer_layers import BoundMemoryRead, MemoryRead, build_stack
from .modeling_autoencoder import TextEncoder
from .modeling_common import (
    MemmixLMOutput,
    MemmixPreTrainedModel,
    head_and_loss,
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
        width, memory_width, token_width = config.hidden_size, config.memory_width, config.token_width
        self.memory_mode = memory_mode_for(config)
        self.encoder = self.memory_proj = self.recurrent_proj = self.initial_memory = None
        if config.memory_mode == "recurrent" and config.recurrent_style == "projected":
            self.recurrent_proj = nn.Linear(width, memory_width)
            self.initial_memory = nn.Parameter(torch.zeros(memory_width))
        elif config.has_encoder:
            self.encoder = TextEncoder(config, config.encoder_hidden_size, config.encoder_layers, config.memory_dim,
                                       config.encoder_type, config.encoder_causal)
            self.memory_proj = nn.Linear(config.memory_dim, memory_width) if config.memory_dim != memory_width else None
            if config.freeze_encoder:
                self.encoder.requires_grad_(False)
        self.embed_tokens = nn.Embedding(config.vocab_size, token_width)
        self.decoder = build_stack(config.decoder_type, width, config.num_hidden_layers, config.decoder_n_ctx, True,
                                   config, **config.stack_mixing("decoder"))
        self.memory_read = (MemoryRead(width, memory_width, config.layer_norm_eps)
                            if config.memory_read == "attention" else None)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(width, config.vocab_size, bias=False)
        if config.tie_word_embeddings and token_width != width:
            raise ValueError(
                f"tie_word_embeddings needs token vectors of the full width {width}, but combine='concat' narrows "
                f"them to {token_width}"
            )
        self.post_init()

    def _init_weights(self, module):
        from transformers import initialization as init

        if self.memory_read is not None and module is self.memory_read.out:
            init.zeros_(module.weight)  # an untrained read adds nothing: the model starts as memory_read="slots"
            return
        super()._init_weights(module)
        if module is self and self.initial_memory is not None:
            init.normal_(self.initial_memory, std=self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    # ----- memories -------------------------------------------------------------------------------------------

    def encode_chunks(self, chunk_ids: torch.LongTensor, embedding_format: str | None = None) -> torch.Tensor:
        """(B, n, L) token ids of ``n`` chunks -> (B, n, memory_dim) memories, all chunks in one encoder call.

        The memories are what storage in ``embedding_format`` gives back (quantized and dequantized; default
        ``config.embedding_format``, ``"fp32"`` or ``None`` with no configured format = float), so evaluation
        measures the model with memories as they would be stored.
        """
        batch, count, length = chunk_ids.shape
        if count == 0:
            return chunk_ids.new_zeros(batch, 0, self.config.memory_dim, dtype=self.embed_tokens.weight.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            memories = self.encoder(chunk_ids.reshape(batch * count, length))
        stored_format = embedding_format or self.config.embedding_format
        if stored_format not in (None, "fp32"):
            memories = round_trip(memories, stored_format)
        return memories.view(batch, count, -1)

    def quantized_memories(self, chunk_ids: torch.LongTensor, embedding_format: str) -> QuantizedEmbedding:
        """(B, n, L) chunks -> their memories stored in ``embedding_format`` (codes, scales and ``num_bits``)."""
        batch, count, length = chunk_ids.shape
        memories = self.encoder(chunk_ids.reshape(batch * count, length))
        return quantize_embedding(memories, embedding_format)

    def project_memories(self, memories: torch.Tensor) -> torch.Tensor:
        """Encoder memories (…, memory_dim) -> decoder-side vectors (…, memory width)."""
        return self.memory_proj(memories) if self.memory_proj is not None else memories

    def bound_read(self, slots: torch.Tensor, visible: torch.Tensor) -> BoundMemoryRead | None:
        """The decoder's memory read over ``slots (N, S, w)`` of which ``visible (N,)`` are in use, or ``None``
        with ``memory_read="slots"``."""
        if self.memory_read is None:
            return None
        return BoundMemoryRead(self.memory_read, self.config.memory_read_layer, slots, visible)

    # ----- forward --------------------------------------------------------------------------------------------

    def sequence_hidden(self, input_ids: torch.LongTensor, lengths: torch.Tensor | None = None,
                        embedding_format: str | None = None, without_memories: bool = False) -> torch.Tensor:
        """Training-time path: (B, T) token ids -> (B, T, d) final hidden states, all chunks at once.

        ``lengths (B,)``: real lengths of left-aligned rows (padding after them), default all ``T``."""
        hidden = self.memory_mode.sequence_hidden(self, input_ids, lengths, embedding_format, without_memories)
        return hidden[:, : input_ids.shape[1]]

    def forward(self, input_ids: torch.LongTensor, labels: torch.LongTensor | None = None,
                attention_mask: torch.Tensor | None = None, cache: MemmixCache | None = None,
                use_cache: bool | None = None, logits_to_keep: int = 0, sliding_window: bool = False,
                num_items_in_batch: int | torch.Tensor | None = None, embedding_format: str | None = None,
                without_memories: bool = False, return_logits: bool = True, **kwargs) -> MemmixLMOutput:
        """Logits ``(B, T, V)`` (and the loss with ``labels``). With ``attention_mask`` (left or right padding)
        each row gives the logits of that row run alone (left padding runs it from position 0), padding
        positions give zero logits, and the loss scores no prediction made from or of a padding position.
        ``num_items_in_batch`` (transformers' Trainer) divides the summed loss by that count instead.
        Evaluation controls: ``embedding_format`` stores the memories in that format for this call (default
        ``config.embedding_format``; ``"fp32"`` = float), ``without_memories=True`` decodes every chunk as if
        nothing came before it (``memory_modes.py``). ``return_logits=False`` with ``labels`` (the training loop)
        scores without full-vocabulary logits (``modeling_common.head_and_loss``): same loss, ``logits=None``.
        With ``use_cache=True`` or a ``cache`` (generation) the returned ``cache`` continues
        the sequence; a step returns logits of the new tokens, the prefill those of the last ``logits_to_keep``
        tokens (all with 0; only the last one when the prompt is longer than the model's limit)."""
        if cache is not None or use_cache:
            return self.cached_forward(input_ids, attention_mask, cache, logits_to_keep, sliding_window)
        check_input_ids(input_ids, self.config.vocab_size, self.config.max_sequence_length)
        pads = leading_padding(attention_mask, input_ids)
        lengths = None if attention_mask is None else attention_mask.bool().sum(1)
        controls = dict(embedding_format=embedding_format, without_memories=without_memories)
        if pads is None:
            hidden = self.sequence_hidden(input_ids, lengths, **controls)
        else:  # left padding: run each row from position 0, padding moved behind its tokens
            hidden = shift_rows_right(self.sequence_hidden(shift_rows_left(input_ids, pads), lengths, **controls),
                                      pads)
        hidden = zero_padding_positions(hidden, attention_mask)
        if logits_to_keep and labels is None:
            hidden = hidden[:, -logits_to_keep:]
        return head_and_loss(MemmixLMOutput(), hidden, self.lm_head, labels, input_ids, self.config.vocab_size,
                             shift=True, attention_mask=attention_mask, num_items_in_batch=num_items_in_batch,
                             return_logits=return_logits)

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
        type, causality, mixing setting, ``memory_dim``, ``n_ctx``, vocabulary) are taken from it;
        ``config_overrides`` set the decoder and memory options (e.g. ``hidden_size=..., max_memories=...``).
        The decoder's mixing setting defaults to the autoencoder decoder's; override it with
        ``decoder_mixer_heads`` / ``decoder_mixer_kernel_size`` (or the shared ``mixer_heads`` /
        ``mixer_kernel_size``). The seed's recipe is an encoder with ``k = 16`` and a flat decoder:
        ``from_autoencoder(ae, decoder_mixer_heads=0, decoder_mixer_kernel_size=1)``. With
        ``freeze_encoder=True`` the encoder's weights stay fixed during training.
        """
        if isinstance(autoencoder, (str, bytes)) or hasattr(autoencoder, "__fspath__"):
            from .modeling_autoencoder import MixerAutoencoder

            autoencoder = MixerAutoencoder.from_pretrained(autoencoder)
        ae_config = autoencoder.config
        memory_mode = config_overrides.get("memory_mode", "past")
        if memory_mode not in ("past", "oracle"):
            raise ValueError(
                f"from_autoencoder gives the model the autoencoder's encoder, but memory_mode={memory_mode!r} has no "
                "encoder; use memory_mode='past' or 'oracle' (or build the model from a MemoryMixerConfig)"
            )
        encoder_mixing, decoder_mixing = ae_config.stack_mixing("encoder"), ae_config.stack_mixing("decoder")
        taken = {
            "vocab_size": ae_config.vocab_size,
            "n_ctx": ae_config.n_ctx,
            "encoder_hidden_size": ae_config.hidden_size,
            "encoder_layers": ae_config.encoder_layers,
            "encoder_type": ae_config.encoder_type,
            "encoder_causal": ae_config.encoder_causal,
            "memory_dim": ae_config.embedding_dim,
            "encoder_mixer_heads": encoder_mixing["mixer_heads"],
            "encoder_mixer_kernel_size": encoder_mixing["mixer_kernel_size"],
            "num_attention_heads": ae_config.num_attention_heads,
            "layer_norm_eps": ae_config.layer_norm_eps,
        }
        clashes = {k: v for k, v in config_overrides.items() if k in taken and v != taken[k]}
        if clashes:
            raise ValueError(f"these settings are fixed by the autoencoder's encoder and cannot change: {clashes}")
        settings = {**taken, **config_overrides, "freeze_encoder": freeze_encoder}
        for name, value in decoder_mixing.items():  # the decoder's mixing: as overridden, else the AE decoder's
            if name not in config_overrides:
                settings.setdefault(f"decoder_{name}", value)
            settings.setdefault(name, getattr(ae_config, name))
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
