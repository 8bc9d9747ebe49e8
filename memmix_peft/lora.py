"""Recommended PEFT LoRA configurations for the memmix families, and helpers around them.

PEFT has no model-side default targets for custom models, so this file says which layers to adapt:

* the per-token linear layers of every block: feed-forward ``ff.up`` / ``ff.down``, the head projections
  ``mixing.in_proj`` / ``mixing.out_proj`` of multi-headed mixers, and the ``q/k/v/o_proj`` and
  ``gate/up/down_proj`` of Llama blocks in hybrid (``"transformer"``) stacks;
* the projections between parts: the autoencoder's bottleneck (``encoder.down``, ``up``) and the memory
  model's ``memory_proj`` / ``recurrent_proj``;
* optionally (``adapt_mixing=True``) the token-mixing matrices ``mixing.weight`` through PEFT's
  ``target_parameters``. PEFT then swaps ``weight`` for ``weight + B @ A`` only while the mixing module's
  ``forward`` runs, and that forward multiplies the weight by the causal mask, so the adapter's update is
  masked too: the adapted (and the merged) model stays causal.

What PEFT 0.21 supports for raw parameters (``lora.ParamWrapper``): 2-D weights (flat mixing
``(n_ctx, n_ctx)``: one rank-``r`` update) and 3-D weights, which it reads as a stack of experts
(headed mixing ``(h, n_ctx, n_ctx)``: one rank-``r`` update per head). A conv mixing weight
``(n_ctx, n_ctx, k)`` is 3-D too, but PEFT would read the output-token axis as ``n_ctx`` experts of shape
``(n_ctx, k)``: more adapter parameters than the weight itself, so it is refused here; the headed conv weight
``(h, n_ctx, n_ctx, k)`` is 4-D, which PEFT refuses. ParamWrapper also refuses ``lora_dropout != 0``.

No file in ``modeling_memmix`` imports PEFT (checkpoints load without it); only this package does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from modeling_memmix.families import FAMILIES, Family, family_of

MIXER_BLOCK_LINEARS = ("ff.up", "ff.down", "mixing.in_proj", "mixing.out_proj")
TRANSFORMER_BLOCK_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


@dataclass(frozen=True)
class StackScope:
    """One stack of blocks to adapt: where it sits in the model, its block type and depth, and (for error
    messages) the config field that sets its mixing kernel and that kernel."""

    prefix: str
    block_type: str
    depth: int
    kernel_field: str = "mixer_kernel_size"
    kernel_size: int = 1


def _stack_scope(config, prefix: str, block_type: str, depth: int, stack: str | None = None) -> StackScope:
    """The scope of a stack whose mixing setting is ``config``'s for ``stack`` (its own ``{stack}_mixer_kernel_size``
    when set, else the shared ``mixer_kernel_size``)."""
    own = getattr(config, f"{stack}_mixer_kernel_size", None) if stack else None
    field = f"{stack}_mixer_kernel_size" if own is not None else "mixer_kernel_size"
    return StackScope(prefix, block_type, depth, field, getattr(config, field))


@dataclass(frozen=True)
class AdapterScope:
    """Everything a LoRA config of one model targets: stacks of blocks and single extra linear layers."""

    stacks: tuple[StackScope, ...]
    extra_linears: tuple[str, ...]
    task_type: str | None


# ----- validation ---------------------------------------------------------------------------------------------


def _config_of(model_or_config) -> tuple[object, Family]:
    """The memmix config of a model (plain, PEFT-wrapped or loaded as remote code) or the config itself, and its
    family (`modeling_memmix.families`)."""
    config = getattr(model_or_config, "config", model_or_config)
    try:
        return config, family_of(config)
    except ValueError:
        model_types = [family.model_type for family in FAMILIES.values()]
        raise ValueError(
            f"expected a memmix model or config (model_type one of {model_types}), got "
            f"{type(model_or_config).__name__} with model_type={getattr(config, 'model_type', None)!r}"
        ) from None


def _check_lora_settings(rank: int, alpha: float, dropout: float, adapt_mixing: bool) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ValueError(f"rank={rank!r} must be a positive integer")
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r} must be > 0")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
    if adapt_mixing and dropout != 0.0:
        raise ValueError(
            f"dropout={dropout} with adapt_mixing=True: PEFT's LoRA on raw parameters (the mixing weights) "
            "cannot apply dropout; use dropout=0.0 or adapt_mixing=False"
        )


def _check_mixing_adaptable(config, scope: AdapterScope) -> None:
    """Raise if ``adapt_mixing=True`` cannot give a sensible, masked LoRA update for this model."""
    if not any(stack.block_type == "mixer" for stack in scope.stacks):
        raise ValueError(
            "adapt_mixing=True, but no adapted stack is a mixer stack (all are 'transformer' blocks), so there "
            "are no mixing weights to adapt"
        )
    conv = next((stack for stack in scope.stacks if stack.block_type == "mixer" and stack.kernel_size > 1), None)
    if conv is not None:
        raise ValueError(
            f"adapt_mixing=True is not supported with {conv.kernel_field}={conv.kernel_size}: the conv "
            "mixing weight (n_ctx, n_ctx, k) would be read by PEFT 0.21 as n_ctx experts of shape (n_ctx, k), "
            "giving more adapter parameters than the weight has, and the headed conv weight is 4-D, which PEFT "
            "refuses. Use adapt_mixing=False (the per-token layers are still adapted)."
        )


# ----- scopes of each family ------------------------------------------------------------------------------------


def _bottleneck_linears(config) -> tuple[str, ...]:
    """The autoencoder's projections between encoder and decoder that exist for this config."""
    names = []
    if config.embedding_dim != config.hidden_size:
        names.append("encoder.down")
        if getattr(config, "unroll_source", "embedding") == "projected":
            names.append("bottleneck_up")
    if config.decoder_input == "unroll" or config.embedding_dim != config.decoder_hidden_size:
        names.append("up")
    return tuple(names)


MEMORY_READ_LINEARS = ("memory_read.query", "memory_read.key", "memory_read.value", "memory_read.out")


def _memory_extra_linears(config, include_encoder: bool) -> tuple[str, ...]:
    """The memory model's projections that exist for this config (``memory_proj``, ``recurrent_proj``, the
    content-addressed read's, ...)."""
    read = MEMORY_READ_LINEARS if getattr(config, "memory_read", "slots") == "attention" else ()
    if config.memory_mode == "recurrent":
        projected = getattr(config, "recurrent_style", "projected") == "projected"
        return (("recurrent_proj",) if projected else ()) + read
    if config.memory_mode == "none":  # no encoder, so no projection of its memories
        return read
    memory_width = config.memory_concat_dim if config.combine == "concat" else config.hidden_size
    names = []
    if config.memory_dim != memory_width:
        names.append("memory_proj")
    if include_encoder and config.memory_dim != config.encoder_hidden_size:
        names.append("encoder.down")
    return tuple(names) + read


def _memory_scope(config, include_encoder: bool) -> AdapterScope:
    stacks = [_stack_scope(config, "decoder", config.decoder_type, config.num_hidden_layers, "decoder")]
    has_encoder = config.memory_mode in ("past", "oracle")  # "recurrent" and "none" have no encoder
    if include_encoder and has_encoder:
        stacks.append(_stack_scope(config, "encoder.stack", config.encoder_type, config.encoder_layers, "encoder"))
    extras = _memory_extra_linears(config, include_encoder and has_encoder)
    return AdapterScope(tuple(stacks), extras, "CAUSAL_LM")


def _family_scope(config, family: Family) -> AdapterScope:
    """What `recommended_lora_config` adapts in each family."""
    if family.name == "mixer":
        return AdapterScope(
            (_stack_scope(config, "model.stack", config.block_type, config.num_hidden_layers),), (), "CAUSAL_LM"
        )
    if family.name == "autoencoder":
        stacks = (
            _stack_scope(config, "encoder.stack", config.encoder_type, config.encoder_layers, "encoder"),
            _stack_scope(config, "decoder", config.decoder_type, config.decoder_layers, "decoder"),
        )
        return AdapterScope(stacks, _bottleneck_linears(config), None)
    # memory model: a frozen encoder runs without gradients, so adapters there would never train
    return _memory_scope(config, include_encoder=not config.freeze_encoder)


# ----- building the LoraConfig ---------------------------------------------------------------------------------


def _target_modules_pattern(scope: AdapterScope) -> str:
    """One regular expression (PEFT full-matches it against module names) for every targeted linear layer."""
    alternatives = []
    for stack in scope.stacks:
        leaves = MIXER_BLOCK_LINEARS if stack.block_type == "mixer" else TRANSFORMER_BLOCK_LINEARS
        leaf_pattern = "|".join(re.escape(leaf) for leaf in leaves)
        alternatives.append(rf"{re.escape(stack.prefix)}\.layers\.\d+\.(?:{leaf_pattern})")
    alternatives.extend(re.escape(name) for name in scope.extra_linears)
    return "|".join(f"(?:{alternative})" for alternative in alternatives)


def _mixing_weight_names(scope: AdapterScope) -> list[str]:
    """Full names of the mixing weights of every mixer stack in the scope."""
    return [
        f"{stack.prefix}.layers.{index}.mixing.weight"
        for stack in scope.stacks
        if stack.block_type == "mixer"
        for index in range(stack.depth)
    ]


def _lora_config(
    config,
    scope: AdapterScope,
    rank: int,
    alpha: float,
    dropout: float,
    adapt_mixing: bool,
    modules_to_save: list[str] | None,
) -> LoraConfig:
    _check_lora_settings(rank, alpha, dropout, adapt_mixing)
    if adapt_mixing:
        _check_mixing_adaptable(config, scope)
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=_target_modules_pattern(scope),
        target_parameters=_mixing_weight_names(scope) if adapt_mixing else None,
        modules_to_save=modules_to_save,
        task_type=scope.task_type,
        bias="none",
    )


def recommended_lora_config(
    model_or_config, rank: int = 8, alpha: float = 16, dropout: float = 0.0, adapt_mixing: bool = False
) -> LoraConfig:
    """The recommended `peft.LoraConfig` for a `MixerForCausalLM`, `MixerAutoencoder` or `MemoryMixerForCausalLM`.

    Targets the per-token linear layers of every stack (feed-forward, head projections of multi-headed
    mixers, Llama projections of transformer stacks) and the projections between parts (bottleneck,
    memory projection). A memory model whose config has ``freeze_encoder=True`` is adapted in its decoder
    side only (its encoder runs without gradients). With ``adapt_mixing=True`` the token-mixing matrices are
    adapted too, under the causal mask (needs ``dropout=0`` and ``mixer_kernel_size=1``).

    ``model_or_config`` may be a model (also one loaded with ``trust_remote_code``) or its config.
    """
    config, family = _config_of(model_or_config)
    scope = _family_scope(config, family)
    return _lora_config(config, scope, rank, alpha, dropout, adapt_mixing, None)


def memory_lora_config(
    model_or_config,
    rank: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    adapt_mixing: bool = False,
    modules_to_save: list[str] | None = None,
) -> LoraConfig:
    """LoRA for the memory model's decoder side only; the encoder (e.g. a trained autoencoder's) stays frozen.

    Targets the decoder blocks and the memory projection (``memory_proj`` / ``recurrent_proj``). Parts that
    are new and must be trained in full (e.g. ``memory_proj`` of a model just built with
    `MemoryMixerForCausalLM.from_autoencoder`) can be listed in ``modules_to_save``; a decoder that is
    itself new should be trained in full instead (``from_autoencoder(..., freeze_encoder=True)``, no PEFT).
    """
    config, family = _config_of(model_or_config)
    if family.name != "memory":
        raise ValueError(
            f"memory_lora_config is for memory models (model_type 'memory_mixer'), got {config.model_type!r}; "
            "use recommended_lora_config"
        )
    scope = _memory_scope(config, include_encoder=False)
    if modules_to_save:
        overlap = set(modules_to_save) & set(scope.extra_linears)
        scope = AdapterScope(
            scope.stacks, tuple(n for n in scope.extra_linears if n not in overlap), scope.task_type
        )
    return _lora_config(
        config, scope, rank, alpha, dropout, adapt_mixing, list(modules_to_save or []) or None
    )


# ----- helpers ------------------------------------------------------------------------------------------------


def count_trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; shared (tied) parameters are counted once."""
    trainable = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


def _unwrap_leftover_adapters(model: nn.Module) -> int:
    """Merge and unwrap adapter layers that ``merge_and_unload`` left behind; returns how many.

    PEFT 0.21 skips every module inside a tuner layer when unloading, so the LoRA layers of ``in_proj`` /
    ``out_proj`` nested in a mixing module wrapped for its ``weight`` (``ParamWrapper``) stay unmerged.
    """
    leftovers = [name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    # innermost first, so a parent's name still resolves after its children were replaced
    for name in sorted(leftovers, key=lambda n: n.count("."), reverse=True):
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, child_name)
        layer.merge()
        setattr(parent, child_name, layer.get_base_layer())
    return len(leftovers)


def merge_adapters(peft_model) -> nn.Module:
    """``peft_model.merge_and_unload()``, completed: every adapter is folded into the base weights.

    Returns the plain memmix model. The PEFT model's base is modified in place, so use the returned model
    afterwards.
    """
    if not hasattr(peft_model, "merge_and_unload"):
        raise ValueError(
            f"expected a peft.PeftModel with an adapter to merge, got {type(peft_model).__name__}"
        )
    merged = peft_model.merge_and_unload()
    _unwrap_leftover_adapters(merged)
    return merged


def merge_and_export(
    peft_model, save_directory: str | os.PathLike, tokenizer=None, **save_kwargs
) -> nn.Module:
    """Fold the adapter into the base weights (`merge_adapters`) and save a plain memmix checkpoint.

    Returns the merged model. The saved folder carries the model's remote code and loads with
    ``from_pretrained`` without PEFT.
    """
    merged = merge_adapters(peft_model)
    merged.save_pretrained(save_directory, **save_kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(save_directory)
    return merged


__all__ = [
    "count_trainable_parameters",
    "memory_lora_config",
    "merge_adapters",
    "merge_and_export",
    "recommended_lora_config",
]
