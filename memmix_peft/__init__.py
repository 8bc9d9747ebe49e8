"""PEFT (LoRA) fine-tuning recipes for memmix models: recommended `LoraConfig` per family, the memory-model
decoder-only recipe, trainable-parameter counts and merge-and-export. See docs/LORA.md.

Kept apart from ``modeling_memmix`` so that checkpoints (whose remote code is ``modeling_memmix``) load
without PEFT installed.
"""

from .lora import (
    count_trainable_parameters,
    memory_lora_config,
    merge_adapters,
    merge_and_export,
    recommended_lora_config,
)

__all__ = [
    "count_trainable_parameters",
    "memory_lora_config",
    "merge_adapters",
    "merge_and_export",
    "recommended_lora_config",
]
