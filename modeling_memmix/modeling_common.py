"""Pieces every memmix model shares: the `PreTrainedModel` base (weight init, Hub auto_map), output
dataclasses, loss bookkeeping for exact bits per byte (input checks live in ``input_checks.py``).

Loss bookkeeping: besides the mean token cross-entropy ``loss``, outputs carry ``loss_sum`` (summed nats over
the scored tokens), ``num_tokens`` and ``token_losses`` (per-token nats, 0 where the label is ignored), so
bits per byte can be computed exactly over any set of windows.

Training without logits: `head_and_loss` with ``return_logits=False`` (what the forwards' ``return_logits`` flag
and the training loop use) computes the LM head and the cross-entropy together over chunks of tokens
(`ChunkedLinearCrossEntropy`), so the full ``(tokens, vocabulary)`` logits never exist, in fp32 or otherwise.
Loss and gradients equal the full path's within rounding; ``logits`` is then ``None`` and ``token_losses`` carries
no gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
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


def scored_labels(labels: torch.Tensor, shift: bool, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``labels`` with ``-100`` wherever no prediction may be scored: padding is never a target, and with
    ``shift=True`` never a predictor either (see `token_cross_entropy`)."""
    if attention_mask is None:
        return labels
    real = attention_mask.bool()
    labels = labels.masked_fill(~real, IGNORE_INDEX)
    if shift:
        labels = torch.cat([labels[:, :1], labels[:, 1:].masked_fill(~real[:, :-1], IGNORE_INDEX)], dim=1)
    return labels


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
    labels = scored_labels(labels, shift, attention_mask)
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


# ----- LM head and cross-entropy in chunks (training without full-vocabulary logits) ----------------------------

# logits per chunk (tokens x vocabulary). CPU: 8 MB in fp32, about what stays in its caches (the fastest size in
# benchmarks/RESULTS_training.md); accelerators: 128 MB, few enough chunks that kernel launches stay negligible.
CHUNK_LOGITS = {"cpu": 2**21}
CHUNK_LOGITS_ACCELERATOR = 2**25


def chunk_tokens(vocab_size: int, device_type: str = "cpu") -> int:
    """Tokens per chunk of `ChunkedLinearCrossEntropy` for a head of ``vocab_size`` outputs on ``device_type``."""
    return max(16, CHUNK_LOGITS.get(device_type, CHUNK_LOGITS_ACCELERATOR) // vocab_size)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T (+ bias)`` against ``targets``, a chunk of tokens at a time.

    ``hidden (N, d)``, ``weight (V, d)``, ``bias (V,)`` or ``None``, ``targets (N,)`` (``-100`` = not scored).
    Returns ``(total, per_token)``: the summed nats (differentiable) and the per-token nats (``(N,)``, 0 where not
    scored; no gradient). The matmuls run in ``dtype`` (the autocast dtype, or the inputs' own) and the softmax in
    fp32, as the full path does under autocast.

    The gradients are computed in the forward, chunk by chunk, while each chunk's softmax is at hand, and the
    backward only scales them by the incoming gradient of ``total``: the full path's FLOPs (one matmul forward,
    two backward), no recomputation and no ``(N, V)`` tensor. That needs ``total`` to be the only differentiable
    output, which is why ``per_token`` has no gradient.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                dtype: torch.dtype, chunk: int, grad_hidden: bool, grad_weight: bool):
        tokens = hidden.shape[0]
        h, w = hidden.to(dtype), weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        per_token = hidden.new_empty(tokens, dtype=torch.float32)
        d_hidden = torch.empty_like(hidden) if grad_hidden else None
        d_weight = torch.zeros_like(weight, dtype=torch.float32) if grad_weight else None
        d_bias = torch.zeros_like(bias, dtype=torch.float32) if grad_weight and bias is not None else None
        for begin in range(0, tokens, chunk):
            end = min(begin + chunk, tokens)
            labels = targets[begin:end]
            scored = labels != IGNORE_INDEX
            picked = torch.where(scored, labels, 0)[:, None]  # (n, 1); any valid column where not scored
            logits = F.linear(h[begin:end], w, b)  # (n, V) in the compute dtype
            target_logit = logits.gather(1, picked).squeeze(1).float()
            probs = logits.float()  # in fp32 this is ``logits`` itself, overwritten below
            top = probs.amax(dim=1, keepdim=True)
            probs.sub_(top).exp_()  # exp(logits - max), in place: the chunk's one fp32 buffer
            norm = probs.sum(dim=1, keepdim=True)
            per_token[begin:end] = torch.where(scored, (top + norm.log()).squeeze(1) - target_logit, 0.0)
            if not (grad_hidden or grad_weight):
                continue
            row_weight = scored.float()[:, None]  # (n, 1): tokens not scored get no gradient
            probs.mul_(row_weight / norm)  # softmax
            probs.scatter_add_(1, picked, -row_weight)  # d nats / d logits = softmax - one_hot(target)
            d_logits = probs.to(dtype)
            if grad_hidden:
                d_hidden[begin:end] = d_logits @ w
            if grad_weight:
                d_weight.add_(d_logits.T @ h[begin:end])
                if d_bias is not None:
                    d_bias.add_(probs.sum(dim=0))
        ctx.save_for_backward(d_hidden, d_weight, d_bias)
        ctx.grad_dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(per_token)
        return per_token.sum(), per_token

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor, grad_per_token: torch.Tensor | None):
        grads = [None if grad is None else (grad * grad_total).to(dtype)
                 for grad, dtype in zip(ctx.saved_tensors, ctx.grad_dtypes, strict=True)]
        return *grads, None, None, None, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                 targets: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total, per_token)`` nats of the head ``hidden (N, d) -> (N, V)`` against ``targets (N,)`` without
    materializing the logits (see `ChunkedLinearCrossEntropy`). Under autocast the matmuls run in the autocast
    dtype, as ``nn.Linear`` would."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    grads = torch.is_grad_enabled()
    grad_hidden = grads and hidden.requires_grad
    grad_weight = grads and (weight.requires_grad or (bias is not None and bias.requires_grad))
    with torch.autocast(device, enabled=False):
        return ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, dtype,
                                               chunk or chunk_tokens(weight.shape[0], device), grad_hidden, grad_weight)


def head_and_loss(output, hidden: torch.Tensor, lm_head: nn.Module, labels: torch.Tensor | None,
                  input_ids: torch.Tensor | None, vocab_size: int, shift: bool,
                  attention_mask: torch.Tensor | None = None, num_items_in_batch: int | torch.Tensor | None = None,
                  return_logits: bool = True):
    """Apply ``lm_head`` to ``hidden (B, T, d)`` and fill ``output``'s logits and loss fields (`attach_loss`).

    ``return_logits=False`` leaves ``output.logits`` ``None``; with labels (training) the head and the
    cross-entropy then run together in chunks (`chunked_linear_cross_entropy`) and ``token_losses`` has no
    gradient. A head that is not a plain ``nn.Linear`` (a PEFT LoRA layer on the head, say) runs as a module on
    the full path, so its own forward is never bypassed."""
    if labels is None and not return_logits:
        output.logits = None
        return output
    if return_logits or type(lm_head) is not nn.Linear:
        logits = lm_head(hidden)
        output.logits = logits if return_logits else None
        return attach_loss(output, logits, labels, input_ids, vocab_size, shift, attention_mask, num_items_in_batch)
    if input_ids is not None:
        check_labels(labels, input_ids, vocab_size)
    targets = scored_labels(labels, shift, attention_mask)
    if shift:  # position t predicts label t + 1; the last position predicts nothing
        targets = torch.cat([targets[:, 1:], targets.new_full((targets.shape[0], 1), IGNORE_INDEX)], dim=1)
    total, per_token = chunked_linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), lm_head.weight,
                                                    lm_head.bias, targets.reshape(-1))
    per_token = per_token.view(targets.shape)
    count = (targets != IGNORE_INDEX).sum()
    output.logits = None
    output.loss = total / count.clamp(min=1) if num_items_in_batch is None else total / num_items_in_batch
    output.loss_sum, output.num_tokens = total, count
    output.token_losses = per_token[:, :-1] if shift else per_token
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
