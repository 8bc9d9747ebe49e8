"""Tiny configurations of every architecture variant and input helpers, shared by the test files.

Each entry is ``(name, config_factory)``; the factories build models small enough for 2 CPU cores
(hidden 32, 2 layers, vocabulary 100, n_ctx 16).
"""

from __future__ import annotations

import torch

from modeling_memmix import MemoryMixerConfig, MixerAutoencoderConfig, MixerConfig

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, n_ctx=16)

MIXER_VARIANTS = {
    "flat": {},
    "heads": {"mixer_heads": 4},
    "kernel3": {"mixer_kernel_size": 3},
    "heads_kernel3": {"mixer_heads": 4, "mixer_kernel_size": 3},
    "transformer": {"block_type": "transformer"},
    "pytorch_init": {"init_style": "pytorch"},
}

AUTOENCODER_VARIANTS = {
    "repeat": {},  # the default: k = 64 mixing
    "flat": {"mixer_kernel_size": 1},
    "unroll": {"decoder_input": "unroll"},
    "bottleneck": {"embedding_dim": 8},
    "heads_kernel3": {"mixer_heads": 4, "mixer_kernel_size": 3},
    "unmasked": {"encoder_causal": False, "decoder_causal": False},
    "transformer_decoder": {"decoder_type": "transformer", "decoder_input": "unroll", "decoder_hidden_size": 16},
    "transformer_encoder": {"encoder_type": "transformer"},
    "transformer_both_unmasked": {"encoder_type": "transformer", "decoder_type": "transformer",
                                  "encoder_causal": False, "decoder_causal": False},
    # the seed's options (issue 12): unroll over the up-projected vector, per-stack mixing, fixed-step QAT noise,
    # PyTorch's default init
    "unroll_projected": {"decoder_input": "unroll", "unroll_source": "projected", "embedding_dim": 8},
    "per_stack_mixing": {"mixer_kernel_size": 1, "encoder_mixer_kernel_size": 3, "decoder_mixer_heads": 4},
    "noise_scale": {"embedding_dim": 8, "embedding_noise_scale": 0.125},
    "pytorch_init": {"init_style": "pytorch"},
}

MEMORY_VARIANTS = {
    "past_fixed": {},
    "past_variable": {"memory_positions": "variable"},
    "past_heads_kernel3": {"mixer_heads": 4, "mixer_kernel_size": 3},
    "past_narrow_encoder": {"encoder_hidden_size": 16, "memory_dim": 8},
    "past_frozen": {"freeze_encoder": True},
    "past_sum": {"max_memories": 1, "combine": "sum"},
    "past_concat": {"max_memories": 1, "combine": "concat"},
    "past_transformer_decoder": {"decoder_type": "transformer"},
    "past_transformer_encoder": {"encoder_type": "transformer"},
    "oracle_token": {"memory_mode": "oracle"},
    "oracle_concat": {"memory_mode": "oracle", "combine": "concat"},
    "oracle_sum": {"memory_mode": "oracle", "combine": "sum"},
    "recurrent": {"memory_mode": "recurrent"},
    "recurrent_sum": {"memory_mode": "recurrent", "combine": "sum"},
    # the seed's options (issue 12)
    "recurrent_seed": {"memory_mode": "recurrent", "recurrent_style": "seed"},
    "none_fixed": {"memory_mode": "none"},
    "none_variable": {"memory_mode": "none", "memory_positions": "variable"},
    "past_per_stack_mixing": {"encoder_mixer_kernel_size": 3, "decoder_mixer_heads": 4},
    "past_noise_scale": {"memory_dim": 8, "embedding_noise_scale": 0.125},
    "past_pytorch_init": {"init_style": "pytorch"},
    "past_attention_read": {"memory_read": "attention"},
}


# generation tests cover the variants whose incremental path differs (even kernel k=2, recurrent concat,
# transformer encoder with a bottleneck, transformer decoder); they choose n_ctx per test
TINY_NO_CTX = {key: value for key, value in TINY.items() if key != "n_ctx"}
CACHED_MIXER_VARIANTS = {
    "flat": {},
    "heads": {"mixer_heads": 4},
    "conv3": {"mixer_kernel_size": 3},
    "heads_conv2": {"mixer_heads": 4, "mixer_kernel_size": 2},
    "transformer": {"block_type": "transformer"},
}
CACHED_MEMORY_VARIANTS = {
    "past_fixed": {},
    "past_variable": {"memory_positions": "variable"},
    "recurrent": {"memory_mode": "recurrent"},
    "sum": {"combine": "sum", "max_memories": 1},
    "concat": {"combine": "concat", "max_memories": 1},
    "recurrent_concat": {"memory_mode": "recurrent", "combine": "concat"},
    "heads_conv3": {"mixer_heads": 4, "mixer_kernel_size": 3},
    "transformer_encoder_bottleneck": {"encoder_type": "transformer", "memory_dim": 16},
    "transformer_decoder": {"decoder_type": "transformer"},
    "recurrent_seed": {"memory_mode": "recurrent", "recurrent_style": "seed"},
    "none": {"memory_mode": "none"},
    "none_variable": {"memory_mode": "none", "memory_positions": "variable"},
    "per_stack_conv2_decoder": {"decoder_mixer_heads": 4, "decoder_mixer_kernel_size": 2},
    # the content-addressed read (a live one: `wake_memory_read`), before the first block and between blocks
    "attention_read": {"memory_read": "attention"},
    "attention_read_variable_layer1": {"memory_read": "attention", "memory_positions": "variable",
                                       "memory_read_layer": 1},
    "attention_read_recurrent_layer1": {"memory_mode": "recurrent", "memory_read": "attention",
                                        "memory_read_layer": 1},
    "attention_read_sum": {"memory_read": "attention", "combine": "sum", "max_memories": 1},
}


def mixer_config(name: str, **extra) -> MixerConfig:
    return MixerConfig(**TINY, **MIXER_VARIANTS[name], **extra)


def autoencoder_config(name: str, **extra) -> MixerAutoencoderConfig:
    return MixerAutoencoderConfig(**TINY, **AUTOENCODER_VARIANTS[name], **extra)


def memory_config(name: str, **extra) -> MemoryMixerConfig:
    return MemoryMixerConfig(**TINY, **MEMORY_VARIANTS[name], **extra)


def wake_memory_read(model, seed: int = 0):
    """A memory model whose content-addressed read (``memory_read="attention"``) is live: its output projection
    starts at zero, which would make every test of the read pass trivially. Other models pass unchanged."""
    read = getattr(model, "memory_read", None)
    if read is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in (read.out.weight, read.nothing_key, read.nothing_value):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Reproducible token ids of the tiny vocabulary."""
    return torch.randint(0, TINY["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))


def change_after(ids: torch.Tensor, t: int) -> torch.Tensor:
    """Same tokens up to position t, different tokens after it."""
    changed = ids.clone()
    changed[:, t + 1 :] = (ids[:, t + 1 :] + 1 + torch.arange(ids.shape[1] - t - 1)) % TINY["vocab_size"]
    return changed
