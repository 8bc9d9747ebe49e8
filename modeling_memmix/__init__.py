"""memmix: masked-mixer language models for the Hugging Face ecosystem.

``from modeling_memmix import MixerForCausalLM, MixerAutoencoder, MemoryMixerForCausalLM`` (and their configs).
Importing this package also registers the three families with transformers' Auto classes, so local
checkpoints load with ``AutoModel`` / ``AutoModelForCausalLM`` even without ``trust_remote_code``.
The one registry of the families (name, classes, causal or not) is ``FAMILIES`` / ``get_family`` / ``family_of``.
Saved checkpoints carry this folder's files as remote code, for machines where memmix is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_memmix import MemoryMixerConfig, MixerAutoencoderConfig, MixerConfig
from .families import FAMILIES, Family, family_of, get_family
from .modeling_autoencoder import MixerAutoencoder
from .modeling_memory import MemoryMixerForCausalLM
from .modeling_mixer import MixerForCausalLM, MixerModel

for _config, _model, _auto in (
    (MixerConfig, MixerModel, AutoModel),
    (MixerConfig, MixerForCausalLM, AutoModelForCausalLM),
    (MixerAutoencoderConfig, MixerAutoencoder, AutoModel),
    (MemoryMixerConfig, MemoryMixerForCausalLM, AutoModel),
    (MemoryMixerConfig, MemoryMixerForCausalLM, AutoModelForCausalLM),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    _auto.register(_config, _model, exist_ok=True)

__all__ = [
    "FAMILIES",
    "Family",
    "family_of",
    "get_family",
    "MixerConfig",
    "MixerModel",
    "MixerForCausalLM",
    "MixerAutoencoderConfig",
    "MixerAutoencoder",
    "MemoryMixerConfig",
    "MemoryMixerForCausalLM",
]
