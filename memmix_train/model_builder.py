"""What model a run trains, decided once, and the one place it is built.

`check_init_from` loads and checks the ``train.init_from`` checkpoint's config (before anything else is built);
`plan_model` resolves the model config (from the preset and the tokenizer, or the checkpoint's), the data window
and the LoRA config; `build_model` builds it: fresh, loaded from ``init_from``, or a memory model around a trained
autoencoder's encoder (``train.init_from_autoencoder``), wrapped with PEFT adapters when ``train.lora_rank`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from memmix_hub import looks_like_hub_id
from memmix_peft import memory_lora_config, recommended_lora_config
from modeling_memmix import MemoryMixerForCausalLM, MixerAutoencoder, MixerAutoencoderConfig

from .checkpointing import is_complete
from .config import RunConfig
from .data import window_length

# model keys a preset may leave null to have them filled in (from the tokenizer, or from an init_from checkpoint)
FILLED_MODEL_KEYS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")


def model_settings(config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The preset's model section with the tokenizer's vocabulary size and special ids filled in."""
    settings = dict(config.model)
    vocab = len(tokenizer)
    given = settings.get("vocab_size")
    if given is not None and given < vocab:
        raise ValueError(f"model.vocab_size={given} is smaller than the tokenizer's {vocab} tokens")
    settings["vocab_size"] = given or vocab
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if settings.get(name) is None:
            settings[name] = tokenizer.eos_token_id
    return settings


# ----- train.init_from -------------------------------------------------------------------------------------------


def _init_from_hint(source: str) -> str:
    """What a folder that is not an exported model probably is, and what to give instead."""
    folder = Path(source)
    if (folder / "adapter_config.json").is_file():
        return (" It is a LoRA adapter folder: start from its base model, or from a merged export "
                "(train.lora_merge=true).")
    if is_complete(folder):
        return f" It is a training checkpoint: continue that run with --resume {source}, or start from its export/ folder."
    if (folder / "export" / "config.json").is_file():
        return f" Did you mean {folder / 'export'}?"
    return ""


def load_init_from_config(source: str) -> PretrainedConfig:
    """The model config stored in the ``train.init_from`` folder (or Hub repo), with clear errors."""
    if not os.path.isdir(source) and not looks_like_hub_id(source):
        raise FileNotFoundError(
            f"train.init_from={source!r} is not a folder; give an exported model folder (save_pretrained output, "
            "e.g. runs/mixer_tiny/export) or a Hub model id"
        )
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        if not os.path.isdir(source):
            raise FileNotFoundError(
                f"train.init_from={source!r} is not a local folder and could not be loaded from the Hugging Face "
                f"Hub ({error}); give a local exported folder, or go online / set HF_HUB_OFFLINE=0"
            ) from error
        raise FileNotFoundError(
            f"train.init_from={source!r} holds no loadable model config ({error}).{_init_from_hint(source)}"
        ) from error


def check_init_from(config: RunConfig) -> PretrainedConfig | None:
    """The config of the ``train.init_from`` checkpoint (None without one), checked against the run: same family,
    every model key the preset sets equal to the checkpoint's (the error lists each mismatch with both values)."""
    source, family = config.train.init_from, config.family
    if source is None:
        return None
    saved = load_init_from_config(source)
    expected = config.family_entry.model_type
    if saved.model_type != expected:
        raise ValueError(
            f"train.init_from={source!r} holds a {saved.model_type!r} model but family={family!r} needs "
            f"model_type {expected!r}; use the preset of the checkpoint's family"
        )
    mismatches = [
        f"{name}: checkpoint {getattr(saved, name, None)!r}, preset {wanted!r}"
        for name, wanted in config.model.items()
        if not (wanted is None and name in FILLED_MODEL_KEYS) and getattr(saved, name, None) != wanted
    ]
    if mismatches:
        raise ValueError(
            f"train.init_from={source!r}: the checkpoint's config does not match the preset's model section "
            f"({'; '.join(mismatches)}). Remove these model keys from the preset (the checkpoint's values are used) "
            "or start from a checkpoint that has them"
        )
    return saved


# ----- the plan and the build -------------------------------------------------------------------------------------


@dataclass
class ModelPlan:
    """The model a run trains, before it is built: its config, the settings it is built from, and LoRA."""

    config: PretrainedConfig
    settings: dict[str, Any]  # model settings with the tokenizer's ids (unused with init_from)
    lora: LoraConfig | None

    @property
    def window(self) -> int:
        """Tokens per training window: n_ctx, or n_ctx * (max_memories + 1) for the memory model."""
        return window_length(self.config)


def plan_model(config: RunConfig, tokenizer: PreTrainedTokenizerBase,
               checkpoint_config: PretrainedConfig | None) -> ModelPlan:
    """The run's `ModelPlan`; ``checkpoint_config`` is what `check_init_from` returned. Raises ValueError when the
    tokenizer does not fit the checkpoint and for LoRA settings PEFT cannot apply (before the data is built)."""
    if checkpoint_config is not None:
        if len(tokenizer) > checkpoint_config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the checkpoint {config.train.init_from!r} has "
                f"vocab_size={checkpoint_config.vocab_size}; use the checkpoint's tokenizer (data.tokenizer=null)"
            )
        model_config, settings = checkpoint_config, {}
    else:
        settings = model_settings(config, tokenizer)
        source = config.train.init_from_autoencoder
        if source is not None and config.family != "memory":
            raise ValueError(f"train.init_from_autoencoder needs family='memory', got family={config.family!r}")
        planned = dict(settings)
        if source is not None:
            planned.setdefault("n_ctx", MixerAutoencoderConfig.from_pretrained(source).n_ctx)
        model_config = config.family_entry.config_class(**planned)
    return ModelPlan(model_config, settings, lora_config_for(config, model_config))


def lora_config_for(config: RunConfig, model_config) -> LoraConfig | None:
    """The run's LoRA config (None without ``train.lora_rank``): `memmix_peft.recommended_lora_config`, or
    `memmix_peft.memory_lora_config` with ``train.lora_decoder_only``. Raises ValueError for settings PEFT
    cannot apply (e.g. dropout with adapted mixing weights)."""
    train = config.train
    if train.lora_rank is None:
        return None
    make = memory_lora_config if train.lora_decoder_only else recommended_lora_config
    return make(model_config, rank=train.lora_rank, alpha=train.lora_alpha, dropout=train.lora_dropout,
                adapt_mixing=train.lora_adapt_mixing)


def build_model(config: RunConfig, plan: ModelPlan) -> PreTrainedModel:
    """The model to train (the single place where models are built), with LoRA adapters added by
    ``peft.get_peft_model`` when the plan has a LoRA config (then only they train).

    With ``train.init_from`` the checkpoint's model is loaded; a memory model with ``train.init_from_autoencoder``
    takes that autoencoder's encoder (frozen when ``train.freeze_encoder``).
    """
    train = config.train
    if train.init_from is not None:
        model = config.family_entry.model_class.from_pretrained(train.init_from)
    elif train.init_from_autoencoder is not None:
        source, settings = train.init_from_autoencoder, dict(plan.settings)
        autoencoder = MixerAutoencoder.from_pretrained(source)
        if autoencoder.config.vocab_size != settings["vocab_size"]:
            raise ValueError(
                f"The autoencoder in {source} has vocab_size={autoencoder.config.vocab_size} but the tokenizer "
                f"gives {settings['vocab_size']}; use the autoencoder's tokenizer (data.tokenizer=null)"
            )
        settings.pop("freeze_encoder", None)
        model = MemoryMixerForCausalLM.from_autoencoder(autoencoder, freeze_encoder=train.freeze_encoder, **settings)
    else:
        model = config.family_entry.model_class(plan.config)
    return model if plan.lora is None else get_peft_model(model, plan.lora)
