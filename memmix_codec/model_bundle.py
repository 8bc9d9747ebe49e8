"""Loading a model folder for the codec, and the fingerprints a stream records to refuse the wrong one.

`CodecModel` bundles the model (float32, eval mode, CPU), its tokenizer, the byte table (`tokens.py`) and three
fingerprints (sha256, first 8 bytes each):

* ``weights``: every tensor of the state dict (name, dtype, shape, bytes), in sorted name order;
* ``config``: the config as sorted JSON, without the fields that do not change the computation
  (``transformers_version``, ``_name_or_path``, ``architectures``, ``auto_map``, ``dtype``, ``use_cache``);
* ``tokenizer``: the byte spelling of every id (exactly what decoding depends on).

The mode the stream was made in (causal or embedding-augmented) follows from the model's config.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from .tokens import ByteTable, build_byte_table

_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "architectures", "auto_map", "dtype",
                         "torch_dtype", "use_cache")


def weights_fingerprint(model: torch.nn.Module) -> bytes:
    digest = hashlib.sha256(b"memmix_codec weights v1\x00")
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\x00{tensor.dtype}\x00{tuple(tensor.shape)}\x00".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.digest()[:8]


def config_fingerprint(config) -> bytes:
    settings = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(b"memmix_codec config v1\x00" + text.encode()).digest()[:8]


def is_oracle(model) -> bool:
    return getattr(model.config, "memory_mode", None) == "oracle"


@dataclass
class CodecModel:
    """A model ready for coding. Build with `load_codec_model` (a folder) or `CodecModel.wrap` (in memory)."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    table: ByteTable
    weights_fp: bytes
    config_fp: bytes
    tokenizer_fp: bytes
    source: str = ""

    @classmethod
    def wrap(cls, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, source: str = "") -> CodecModel:
        model = model.to("cpu", torch.float32).eval()
        if not is_oracle(model) and not hasattr(model, "generate"):
            raise ValueError(f"{type(model).__name__} cannot predict the next token; use a causal memmix model")
        table = build_byte_table(tokenizer, model.config.vocab_size)
        return cls(model, tokenizer, table, weights_fingerprint(model), config_fingerprint(model.config),
                   table.fingerprint[:8], source)

    @property
    def mode(self) -> str:
        return "embedding" if is_oracle(self.model) else "causal"


def load_codec_model(folder: str | os.PathLike) -> CodecModel:
    """Load a saved causal memmix model and its tokenizer from ``folder`` (remote code is trusted: the folder
    is the user's own export)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"model folder {folder!r} does not exist")
    try:
        from modeling_memmix import MemoryMixerForCausalLM, MixerForCausalLM  # noqa: F401  (registers classes)
    except ImportError:  # pragma: no cover - the remote code in the folder is enough
        pass
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return CodecModel.wrap(model, tokenizer, source=os.path.abspath(folder))


__all__ = ["CodecModel", "config_fingerprint", "is_oracle", "load_codec_model", "weights_fingerprint"]
