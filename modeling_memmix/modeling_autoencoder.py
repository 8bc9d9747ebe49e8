"""The one-pass autoencoder `MixerAutoencoder` and the `TextEncoder` it shares with the memory model.

The encoder reads ``n_ctx`` tokens; its hidden state at the last position, optionally squeezed through a
bottleneck (``down`` to ``embedding_dim``), is the embedding. The decoder receives that single vector at every
position (``repeat``: the same vector, or ``unroll``: position ``i`` gets a wrapped-around slice of the
embedding, or with ``unroll_source="projected"`` of the embedding projected back to full width as the seed does,
then a shared projection) and regenerates all ``n_ctx`` tokens in one pass. Encoder and decoder may each have
their own mixing setting (``encoder_mixer_*`` / ``decoder_mixer_*``).
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_memmix import MixerAutoencoderConfig
from .input_checks import check_input_ids, value_checks_enabled
from .mixer_layers import build_stack
from .modeling_common import (
    MemmixAutoencoderOutput,
    MemmixPreTrainedModel,
    head_and_loss,
)
from .quantization import QuantizationNoise, QuantizedEmbedding, quantize_embedding, round_trip

AUTOENCODER_AUTO_MAP = {
    "AutoConfig": "configuration_memmix.MixerAutoencoderConfig",
    "AutoModel": "modeling_autoencoder.MixerAutoencoder",
}


class TextEncoder(nn.Module):
    """Token embedding, a stack of blocks, and the embedding taken at the last position (then ``down``).

    The memory model builds the same module with the same names, so a trained autoencoder's encoder
    weights load into it unchanged.

    Quantization-aware training (``config.embedding_noise``, a format name, or ``config.embedding_noise_scale``,
    the seed's fixed absolute step): in training mode uniform noise (half that format's step on each side, or
    ``U[0, scale)``) is added to the embedding (``embedding_noise_position="embedding"``), or — the
    seed's variant, ``"pre_bottleneck"`` — to the last hidden state before the bottleneck, with a residual
    across the bottleneck (``embedding = down(h) + h[:embedding_dim]``).

    The stack's mixing setting is ``config.stack_mixing("encoder")``.
    """

    def __init__(self, config, width: int, depth: int, embedding_dim: int, block_type: str, causal: bool):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, width)
        self.stack = build_stack(block_type, width, depth, config.n_ctx, causal, config,
                                 **config.stack_mixing("encoder"))
        self.down = nn.Linear(width, embedding_dim) if embedding_dim != width else None
        self.noise = QuantizationNoise(config.embedding_noise, config.embedding_noise_scale)
        self.noise_before_bottleneck = config.embedding_noise_position == "pre_bottleneck"

    def forward(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """(N, T) token ids -> (N, embedding_dim) embeddings."""
        hidden = self.stack.last_position(self.embed_tokens(input_ids))
        if self.down is None:
            return self.noise(hidden)
        if self.noise_before_bottleneck:
            noisy = self.noise(hidden)
            return self.down(noisy) + noisy[:, : self.down.out_features]
        return self.noise(self.down(hidden))


class MixerAutoencoder(MemmixPreTrainedModel):
    """Autoencoder: ``encode(input_ids) -> (B, embedding_dim)``, ``decode(embedding) -> logits (B, n_ctx, V)``,
    ``forward(input_ids, labels=None)`` -> `MemmixAutoencoderOutput` (loss, logits, embedding).

    The reconstruction loss scores ``logits[:, t]`` against ``labels[:, t]`` (pass ``labels=input_ids``).
    """

    config_class = MixerAutoencoderConfig
    AUTO_MAP = AUTOENCODER_AUTO_MAP

    def __init__(self, config: MixerAutoencoderConfig):
        super().__init__(config)
        self.encoder = TextEncoder(config, config.hidden_size, config.encoder_layers, config.embedding_dim,
                                   config.encoder_type, config.encoder_causal)
        decoder_width = config.decoder_hidden_size
        # the seed's order: the bottlenecked embedding back to full width, then unrolled
        projected = config.unroll_source == "projected" and config.embedding_dim != config.hidden_size
        self.bottleneck_up = nn.Linear(config.embedding_dim, config.hidden_size) if projected else None
        if config.decoder_input == "unroll":
            self.up = nn.Linear(config.unroll_window, decoder_width)  # the shared projection of every slice
        else:
            self.up = nn.Linear(config.embedding_dim, decoder_width) if config.embedding_dim != decoder_width else None
        self.decoder = build_stack(config.decoder_type, decoder_width, config.decoder_layers, config.n_ctx,
                                   config.decoder_causal, config, **config.stack_mixing("decoder"))
        self.norm = nn.LayerNorm(decoder_width, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(decoder_width, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def _check_window(self, input_ids: torch.Tensor) -> None:
        check_input_ids(input_ids, self.config.vocab_size, self.config.n_ctx)
        if input_ids.shape[1] != self.config.n_ctx:
            raise ValueError(
                f"input_ids has length {input_ids.shape[1]}, but the autoencoder encodes windows of exactly "
                f"n_ctx={self.config.n_ctx} tokens"
            )

    def encode(self, input_ids: torch.LongTensor,
               embedding_format: str | None = None) -> torch.Tensor | QuantizedEmbedding:
        """(B, n_ctx) token ids -> (B, embedding_dim) embedding.

        With ``embedding_format`` (one of ``"fp32", "bf16", "fp16", "e4m3", "e5m2", "int8", "int4"``) the
        embedding is returned as stored: a `QuantizedEmbedding` holding the codes, the per-vector scale and its
        real size (``num_bits``).
        """
        self._check_window(input_ids)
        embedding = self.encoder(input_ids)
        return embedding if embedding_format is None else quantize_embedding(embedding, embedding_format)

    def decoder_inputs(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, embedding_dim) -> (B, n_ctx, decoder width): repeated or unrolled embedding.

        Unroll: position ``i`` reads ``v[(i + j) % len(v)]`` for ``j < unroll_window``, the seed's sliding window
        (``encoder_embedding[..., i:i + dim//2]``, wrapped around to the start), through the shared projection
        ``up``; ``v`` is the embedding, or ``bottleneck_up(embedding)`` (full width) with
        ``unroll_source="projected"``."""
        n_ctx = self.config.n_ctx
        if self.config.decoder_input == "unroll":
            if self.bottleneck_up is not None:
                embedding = self.bottleneck_up(embedding)  # (B, hidden_size)
            window = self.config.unroll_window
            offsets = torch.arange(n_ctx, device=embedding.device)[:, None] + torch.arange(window, device=embedding.device)
            slices = embedding[:, offsets % embedding.shape[-1]]  # (B, n_ctx, window): one slice per position
            return self.up(slices)
        if self.up is not None:
            embedding = self.up(embedding)
        return embedding.unsqueeze(1).expand(-1, n_ctx, -1)

    def decode(self, embedding: torch.Tensor | QuantizedEmbedding) -> torch.Tensor:
        """(B, embedding_dim) embedding (float or `QuantizedEmbedding`) -> (B, n_ctx, V) logits."""
        if isinstance(embedding, QuantizedEmbedding):
            embedding = embedding.dequantize().to(self.lm_head.weight.dtype)
        expected = self.config.embedding_dim
        if embedding.dim() != 2 or embedding.shape[-1] != expected:
            raise ValueError(f"embedding must have shape (batch, {expected}), got {tuple(embedding.shape)}")
        return self.lm_head(self.decoded_hidden(embedding))

    def decoded_hidden(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, embedding_dim) float embedding -> (B, n_ctx, decoder width) normed hidden states before the head."""
        return self.norm(self.decoder(self.decoder_inputs(embedding)))

    def forward(self, input_ids: torch.LongTensor, labels: torch.LongTensor | None = None,
                embedding_format: str | None = None, attention_mask: torch.Tensor | None = None,
                num_items_in_batch: int | torch.Tensor | None = None, return_logits: bool = True,
                **kwargs) -> MemmixAutoencoderOutput:
        """Encode, decode, and score the reconstruction. The decoder reads the embedding stored in
        ``embedding_format`` (default ``config.embedding_format``; ``None`` = float); in training the
        storage round trip passes gradients straight through to the encoder.

        The autoencoder embeds whole windows: an ``attention_mask`` (what a collator adds) must be all ones,
        since padding would be read into the embedding. ``num_items_in_batch`` (transformers' Trainer)
        divides the summed loss by that count instead of taking this batch's mean. ``return_logits=False`` with
        ``labels`` (the training loop) scores without full-vocabulary logits (``modeling_common.head_and_loss``)."""
        self._check_no_padding(attention_mask, input_ids)
        embedding = self.encode(input_ids)
        stored_format = embedding_format or self.config.embedding_format
        read = embedding if stored_format is None else round_trip(embedding, stored_format)
        hidden = self.decoded_hidden(read)
        output = MemmixAutoencoderOutput(embedding=embedding)
        return head_and_loss(output, hidden, self.lm_head, labels, input_ids, self.config.vocab_size, shift=False,
                             num_items_in_batch=num_items_in_batch, return_logits=return_logits)

    @staticmethod
    def _check_no_padding(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> None:
        if attention_mask is None:
            return
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape "
                f"{tuple(input_ids.shape)}"
            )
        if value_checks_enabled() and not bool(attention_mask.bool().all()):
            raise ValueError(
                "the autoencoder embeds whole windows of n_ctx tokens, but attention_mask marks padding; "
                "padding would be read into the embedding. Pack text into full windows instead"
            )


MixerAutoencoderConfig.register_for_auto_class()
MixerAutoencoder.register_for_auto_class("AutoModel")

__all__ = ["MixerAutoencoder", "TextEncoder"]
