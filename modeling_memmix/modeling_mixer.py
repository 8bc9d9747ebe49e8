"""The causal masked-mixer language model: `MixerModel` (hidden states; what ``AutoModel`` returns for a
causal-LM checkpoint) and `MixerForCausalLM` (what ``AutoModelForCausalLM`` returns).

Embedding -> mixer blocks -> final norm -> LM head. A mixer has no positional encoding: positions are absolute,
given by the rows of the mixing matrices, so a sequence can be at most ``n_ctx`` tokens long.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import BaseModelOutput

from .configuration_memmix import MixerConfig
from .mixer_layers import build_stack
from .modeling_common import (
    MemmixLMOutput,
    MemmixPreTrainedModel,
    check_input_ids,
    check_labels,
    token_cross_entropy,
)

MIXER_AUTO_MAP = {
    "AutoConfig": "configuration_memmix.MixerConfig",
    "AutoModel": "modeling_mixer.MixerModel",
    "AutoModelForCausalLM": "modeling_mixer.MixerForCausalLM",
}


class MixerPreTrainedModel(MemmixPreTrainedModel):
    config_class = MixerConfig
    AUTO_MAP = MIXER_AUTO_MAP


class MixerModel(MixerPreTrainedModel):
    """Token embedding, a stack of causal blocks and the final norm; returns ``last_hidden_state (B, T, d)``."""

    def __init__(self, config: MixerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.stack = build_stack(config.block_type, config.hidden_size, config.num_hidden_layers, config.n_ctx,
                                 True, config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(self, input_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs) -> BaseModelOutput:
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
        hidden = self.stack(inputs_embeds)
        return BaseModelOutput(last_hidden_state=self.norm(hidden))


class MixerForCausalLM(MixerPreTrainedModel, GenerationMixin):
    """Causal masked mixer with an LM head. ``forward(input_ids, labels)`` returns `MemmixLMOutput` with
    logits ``(B, T, V)`` and the next-token loss (``-100`` ignored; ``None`` without labels)."""

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
                inputs_embeds: torch.Tensor | None = None, **kwargs) -> MemmixLMOutput:
        hidden = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds).last_hidden_state
        logits = self.lm_head(hidden)
        output = MemmixLMOutput(logits=logits)
        if labels is not None:
            if input_ids is not None:
                check_labels(labels, input_ids, self.config.vocab_size)
            loss = token_cross_entropy(logits, labels, shift=True)
            output.loss, output.loss_sum, output.num_tokens = loss.mean, loss.total, loss.count
            output.token_losses = loss.per_token
        return output


MixerConfig.register_for_auto_class()
MixerModel.register_for_auto_class("AutoModel")
MixerForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["MixerModel", "MixerForCausalLM", "MixerPreTrainedModel"]
