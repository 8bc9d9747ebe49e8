"""The causal masked-mixer language model: `MixerModel` (hidden states; what ``AutoModel`` returns for a
causal-LM checkpoint) and `MixerForCausalLM` (what ``AutoModelForCausalLM`` returns).

Embedding -> mixer blocks -> final norm -> LM head. A mixer has no positional encoding: positions are absolute,
given by the rows of the mixing matrices, so a sequence can be at most ``n_ctx`` tokens long. A left-padded
batch (``attention_mask`` with leading zeros) runs each row at its own positions ``0 .. L_b - 1``.

Generation: ``use_cache=True`` (what ``generate`` passes) builds a `MemmixCache` that ``forward`` takes back as
``cache=`` and returns as ``outputs.cache``; see ``generation_memmix.py`` for the cache, ragged batches, length
limits and ``generate(..., sliding_window=True)``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPast

from .configuration_memmix import MixerConfig
from .generation_memmix import (
    MemmixCache,
    MemmixGenerationMixin,
    leading_padding,
    mixer_cached_hidden,
    shift_rows_left,
    shift_rows_right,
    zero_padding_positions,
)
from .input_checks import check_input_ids
from .mixer_layers import build_stack
from .modeling_common import (
    MemmixLMOutput,
    MemmixPreTrainedModel,
    head_and_loss,
)

MIXER_AUTO_MAP = {
    "AutoConfig": "configuration_memmix.MixerConfig",
    "AutoModel": "modeling_mixer.MixerModel",
    "AutoModelForCausalLM": "modeling_mixer.MixerForCausalLM",
}


class MixerPreTrainedModel(MemmixPreTrainedModel):
    config_class = MixerConfig
    base_model_prefix = "model"  # MixerForCausalLM.model is the MixerModel that AutoModel gives
    AUTO_MAP = MIXER_AUTO_MAP


class MixerModel(MixerPreTrainedModel):
    """Token embedding, a stack of causal blocks and the final norm; returns ``last_hidden_state (B, T, d)``."""

    def __init__(self, config: MixerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.stack = build_stack(config.block_type, config.hidden_size, config.num_hidden_layers, config.n_ctx,
                                 True, config, mixer_heads=config.mixer_heads,
                                 mixer_kernel_size=config.mixer_kernel_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(self, input_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, cache: MemmixCache | None = None,
                use_cache: bool | None = None, sliding_window: bool = False,
                **kwargs) -> BaseModelOutput | BaseModelOutputWithPast:
        """Hidden states ``(B, T, d)``. With ``use_cache=True`` or a ``cache`` (generation), returns
        `BaseModelOutputWithPast` whose ``cache`` continues the sequence (pass only the new tokens next time).
        ``use_cache=None`` means no cache (the config's ``use_cache`` is for ``generate``)."""
        if cache is not None or use_cache:
            if inputs_embeds is not None:
                raise ValueError("cached decoding reads input_ids; inputs_embeds are not supported with a cache")
            is_prefill = cache is None
            hidden, cache = mixer_cached_hidden(self, input_ids, attention_mask, cache, sliding_window)
            hidden = self.norm(hidden)
            if is_prefill:  # later steps get the mask of the whole sequence, their new tokens are all real
                hidden = zero_padding_positions(hidden, attention_mask)
            return BaseModelOutputWithPast(last_hidden_state=hidden, cache=cache)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            check_input_ids(input_ids, self.config.vocab_size, self.config.n_ctx)
            inputs_embeds = self.embed_tokens(input_ids)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[1] > self.config.n_ctx:
            raise ValueError(
                f"inputs_embeds must be (batch, length <= {self.config.n_ctx}, {self.config.hidden_size}), "
                f"got {tuple(inputs_embeds.shape)}"
            )
        pads = leading_padding(attention_mask, inputs_embeds)
        if pads is None:
            hidden = self.stack(inputs_embeds)
        else:  # left padding: run each row from position 0, padding moved behind its tokens
            hidden = shift_rows_right(self.stack(shift_rows_left(inputs_embeds, pads)), pads)
        return BaseModelOutput(last_hidden_state=zero_padding_positions(self.norm(hidden), attention_mask))


class MixerForCausalLM(MixerPreTrainedModel, MemmixGenerationMixin, GenerationMixin):
    """Causal masked mixer with an LM head. ``forward(input_ids, labels)`` returns `MemmixLMOutput` with
    logits ``(B, T, V)`` and the next-token loss (``-100`` ignored; ``None`` without labels).

    ``generate`` uses an exact incremental cache (``generation_memmix.py``); prompt plus new tokens must fit
    in ``n_ctx`` unless ``generate(..., sliding_window=True)``."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MixerConfig):
        super().__init__(config)
        self.model = MixerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, input_ids: torch.LongTensor | None = None, labels: torch.LongTensor | None = None,
                inputs_embeds: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: MemmixCache | None = None, use_cache: bool | None = None, logits_to_keep: int = 0,
                sliding_window: bool = False, num_items_in_batch: int | torch.Tensor | None = None,
                return_logits: bool = True, **kwargs) -> MemmixLMOutput:
        """``logits_to_keep=k > 0`` computes logits of the last ``k`` positions only (ignored with labels).

        With ``attention_mask`` (left or right padding) each row gives the logits of that row run alone and
        padding positions give zero logits; the loss scores no prediction made from or of a padding position.
        ``num_items_in_batch`` (transformers' Trainer) divides the summed loss by that count instead.
        ``return_logits=False`` with ``labels`` (what the training loop passes) computes the loss without
        full-vocabulary logits (``modeling_common.head_and_loss``): same loss and gradients, ``logits=None``."""
        outputs = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                             cache=cache, use_cache=use_cache, sliding_window=sliding_window)
        hidden = outputs.last_hidden_state
        if logits_to_keep and labels is None:
            hidden = hidden[:, -logits_to_keep:]
        output = MemmixLMOutput(cache=getattr(outputs, "cache", None))
        return head_and_loss(output, hidden, self.lm_head, labels, input_ids, self.config.vocab_size, shift=True,
                             attention_mask=None if cache is not None else attention_mask,
                             num_items_in_batch=num_items_in_batch, return_logits=return_logits)


MixerConfig.register_for_auto_class()
MixerModel.register_for_auto_class("AutoModel")
MixerForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["MixerModel", "MixerForCausalLM", "MixerPreTrainedModel"]
