"""The one registry of memmix model families: what each is called, its config and model classes, whether it is
causal, and the Auto class and Hub task of its checkpoints.

Every other part of memmix (training presets, export, model cards, evaluation, PEFT recipes) looks families up
here, by the name presets use (``"mixer"``, ``"autoencoder"``, ``"memory"``) or by a config's ``model_type``::

    family = get_family("memory")          # by name
    family = family_of(model.config)       # by config, model or model_type string
    model = family.model_class(family.config_class(vocab_size=..., ...))

No model file imports this module, so it does not travel with checkpoints as remote code.
"""

from __future__ import annotations

from dataclasses import dataclass

from .configuration_memmix import MemoryMixerConfig, MixerAutoencoderConfig, MixerConfig
from .modeling_autoencoder import MixerAutoencoder
from .modeling_memory import MemoryMixerForCausalLM
from .modeling_mixer import MixerForCausalLM


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the family's one name (presets' ``"family"``, reports, model cards).
        config_class / model_class: what a checkpoint of the family is built from.
        causal: a causal LM (scores next tokens, generates) rather than an autoencoder.
        description: what the family is, in words (model cards, reports).
    """

    name: str
    config_class: type
    model_class: type
    causal: bool
    description: str

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def auto_class(self) -> str:
        """The transformers Auto class that loads the family's trained model."""
        return "AutoModelForCausalLM" if self.causal else "AutoModel"

    @property
    def task(self) -> str:
        """The Hub pipeline tag of the family's checkpoints."""
        return "text-generation" if self.causal else "feature-extraction"


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("mixer", MixerConfig, MixerForCausalLM, causal=True,
               description="causal masked-mixer language model"),
        Family("autoencoder", MixerAutoencoderConfig, MixerAutoencoder, causal=False,
               description="masked-mixer autoencoder"),
        Family("memory", MemoryMixerConfig, MemoryMixerForCausalLM, causal=True,
               description="masked-mixer memory model"),
    )
}


def get_family(name: str) -> Family:
    """The family called ``name``; ``ValueError`` listing the names otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"family={name!r} is not a memmix family; choose one of {list(FAMILIES)}")
    return FAMILIES[name]


def family_of(config_or_model_type) -> Family:
    """The family of a config, a model (its ``.config``) or a ``model_type`` string."""
    config = getattr(config_or_model_type, "config", config_or_model_type)
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise ValueError(
        f"model_type {model_type!r} is not a memmix model; expected one of "
        f"{[family.model_type for family in FAMILIES.values()]}"
    )


__all__ = ["FAMILIES", "Family", "family_of", "get_family"]
