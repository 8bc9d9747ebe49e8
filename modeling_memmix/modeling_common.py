"""Pieces every memmix model shares: the `PreTrainedModel` base (weight init, Hub auto_map), output
dataclasses, loss bookkeeping for exact bits per byte (input checks live in ``input_checks.py``).

Loss bookkeeping: besides the mean token cross-entropy ``loss``, outputs carry ``loss_sum`` (summed nats over
the scored tokens), ``num_tokens`` and ``token_losses`` (per-token nats, 0 where the label is ignored), so
bits per byte can be computed exactly over any set of windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .input_checks import IGNORE_INDEX, check_labels
from .mixer_layers import MaskedTokenMixing


@dataclass
class MemmixLMOutput(ModelOutput):
    """Output of the causal models. ``logits`` is ``(B, T, V)``; ``logits[:, t]`` predicts token ``t + 1``."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    loss_sum: torch.FloatTensor | None = None
    num_tokens: torch.LongTensor | None = None
    token_losses: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: torch.FloatTensor | None = None


@dataclass
class MemmixAutoencoderOutput(ModelOutput):
    """Output of `MixerAutoencoder`. ``logits[:, t]`` reconstructs input token ``t`` (no shift)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embedding: torch.FloatTensor | None = None
    loss_sum: torch.FloatTensor | None = None
    num_tokens: torch.LongTensor | None = None
    token_losses: torch.FloatTensor | None = None


@dataclass
class TokenLoss:
    """Cross-entropy of a batch: mean, sum (nats), count of scored tokens and per-token values."""

    mean: torch.Tensor
    total: torch.Tensor
    count: torch.Tensor
    per_token: torch.Tensor


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, shift: bool,
                        attention_mask: torch.Tensor | None = None) -> TokenLoss:
    """Token cross-entropy in nats with ``-100`` ignored.

    ``shift=True`` is next-token prediction (``logits[:, t]`` scored against ``labels[:, t + 1]``);
    ``shift=False`` scores each position against its own label (autoencoder reconstruction).
    With ``attention_mask``, padding (mask 0) is never a target, and with ``shift=True`` never a predictor
    either: the first real token of a left-padded row is not scored, exactly as the first token of an
    unpadded sequence is not, so a padded batch gives the loss of its rows run alone.
    The mean is NaN-free: with no scored token it is 0 (and ``count`` is 0).
    """
    if attention_mask is not None:
        real = attention_mask.bool()
        labels = labels.masked_fill(~real, IGNORE_INDEX)
        if shift:
            labels = torch.cat([labels[:, :1], labels[:, 1:].masked_fill(~real[:, :-1], IGNORE_INDEX)], dim=1)
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    per_token = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    count = (labels != IGNORE_INDEX).sum()
    total = per_token.sum()
    return TokenLoss(mean=total / count.clamp(min=1), total=total, count=count, per_token=per_token)


def attach_loss(output, logits: torch.Tensor, labels: torch.Tensor | None, input_ids: torch.Tensor | None,
                vocab_size: int, shift: bool, attention_mask: torch.Tensor | None = None,
                num_items_in_batch: int | torch.Tensor | None = None):
    """Fill ``loss``, ``loss_sum``, ``num_tokens`` and ``token_losses`` of ``output`` when labels are given.

    ``num_items_in_batch`` (what transformers' ``Trainer`` passes under gradient accumulation: the scored
    tokens of all micro-batches of one optimizer step) makes ``loss`` the summed nats divided by it, so the
    accumulated gradient equals that of one large batch; without it ``loss`` is the mean over this batch.
    """
    if labels is None:
        return output
    if input_ids is not None:
        check_labels(labels, input_ids, vocab_size)
    loss = token_cross_entropy(logits, labels, shift=shift, attention_mask=attention_mask)
    output.loss = loss.mean if num_items_in_batch is None else loss.total / num_items_in_batch
    output.loss_sum, output.num_tokens = loss.total, loss.count
    output.token_losses = loss.per_token
    return output


class MemmixPreTrainedModel(PreTrainedModel):
    """Base class: weight init that keeps the mixing matrices at the seed's scale, and a Hub ``auto_map``
    that lists every Auto class a checkpoint of this family answers (``AUTO_MAP``)."""

    base_model_prefix = ""  # the autoencoder and the memory model have no base model; the causal mixer sets "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["MixerBlock", "LlamaDecoderLayer"]
    _supports_sdpa = True
    # the forwards honour ``num_items_in_batch`` (see `attach_loss`); said explicitly so that transformers'
    # Trainer does not have to guess it from ``**kwargs``
    accepts_loss_kwargs = True
    AUTO_MAP: dict[str, str] = {}

    def _init_weights(self, module):
        if not self._pytorch_default_init(module):
            super()._init_weights(module)
        if isinstance(module, MaskedTokenMixing):
            # transformers' default (normal, std 0.02) would shrink an n_ctx-wide sum toward zero; keep the
            # seed's Conv1d default scale instead.
            bound = 1.0 / math.sqrt(module.n_ctx * module.kernel_size)
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.uniform_(module.bias, -bound, bound)

    def _pytorch_default_init(self, module) -> bool:
        """``config.init_style="pytorch"`` (what the seed's research code keeps): PyTorch's own init of an
        ``nn.Linear`` (weight and bias uniform in ``+-1/sqrt(fan_in)``) or ``nn.Embedding`` (``N(0, 1)``); returns
        whether it initialized ``module``. Modules of transformer stacks (``keeps_transformers_init``) keep
        transformers' init, as the seed's ``LlamaModel`` does."""
        if getattr(self.config, "init_style", "memmix") != "pytorch" or getattr(module, "keeps_transformers_init", False):
            return False
        if isinstance(module, torch.nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))  # = bound 1/sqrt(fan_in), nn.Linear.reset_parameters
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.in_features) if module.in_features else 0.0
                init.uniform_(module.bias, -bound, bound)
            return True
        if isinstance(module, torch.nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
            return True
        return False

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save, with an ``auto_map`` naming every Auto class of this family (see CONVENTIONS.md item 1)."""
        if self.AUTO_MAP:
            self.config.auto_map = dict(self.AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)
