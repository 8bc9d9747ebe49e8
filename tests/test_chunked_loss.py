"""Training without full-vocabulary logits (``return_logits=False``) gives the loss and gradients of the full path.

`modeling_common.head_and_loss` computes the LM head and the cross-entropy together over chunks of tokens; these
tests check, for every family and every variant of ``tests/variants.py``, that loss, ``loss_sum``,
``num_tokens``, ``token_losses`` and every parameter's gradient equal the full path's (fp32: to rounding; bf16
autocast: no further from an fp32 reference than the full path itself), with ``-100`` labels, padded batches
and ``num_items_in_batch``; that chunking at any size gives the same numbers; that the head of a PEFT LoRA model
still runs as a module; and that logits stay the default.
"""

from __future__ import annotations

import pytest
import torch
from variants import (
    AUTOENCODER_VARIANTS,
    MEMORY_VARIANTS,
    MIXER_VARIANTS,
    autoencoder_config,
    memory_config,
    mixer_config,
    random_ids,
)

from modeling_memmix import MemoryMixerForCausalLM, MixerAutoencoder, MixerForCausalLM
from modeling_memmix.modeling_common import chunked_linear_cross_entropy

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

CASES = {
    **{f"mixer_{name}": (MixerForCausalLM, mixer_config, name, 16) for name in MIXER_VARIANTS},
    **{f"autoencoder_{name}": (MixerAutoencoder, autoencoder_config, name, 16) for name in AUTOENCODER_VARIANTS},
    **{f"memory_{name}": (MemoryMixerForCausalLM, memory_config, name, 40) for name in MEMORY_VARIANTS},
}


def build(case: str, **extra):
    model_class, config_factory, variant, length = CASES[case]
    torch.manual_seed(0)
    model = model_class(config_factory(variant, **extra)).train()
    return model, min(length, model.config.max_sequence_length)  # memory models: several chunks


def labels_with_ignored(ids: torch.Tensor) -> torch.Tensor:
    labels = ids.clone()
    labels[0, 3:6] = -100
    labels[-1, -2:] = -100
    return labels


def loss_and_grads(model, ids, labels, return_logits: bool, autocast: bool = False, **kwargs):
    torch.manual_seed(1)  # the same noise draws (QAT) in both runs
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        output = model(ids, labels=labels, return_logits=return_logits, **kwargs)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return output, torch.autograd.grad(output.loss, trainable)


def assert_same(chunked, full, atol=1e-5, rtol=1e-4):
    (out_c, grads_c), (out_f, grads_f) = chunked, full
    assert out_c.logits is None and out_f.logits is not None
    for name in ("loss", "loss_sum", "token_losses"):
        torch.testing.assert_close(getattr(out_c, name), getattr(out_f, name).detach(), atol=atol, rtol=rtol)
    assert int(out_c.num_tokens) == int(out_f.num_tokens)
    for grad_c, grad_f in zip(grads_c, grads_f, strict=True):
        torch.testing.assert_close(grad_c, grad_f, atol=atol, rtol=rtol)


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_gradients_equal_the_full_path(case):
    model, length = build(case)
    ids = random_ids(2, length)
    labels = labels_with_ignored(ids)
    assert_same(loss_and_grads(model, ids, labels, False), loss_and_grads(model, ids, labels, True))


@pytest.mark.parametrize("case", ["mixer_flat", "mixer_heads_kernel3", "autoencoder_bottleneck", "memory_past_fixed",
                                  "memory_recurrent"])
def test_num_items_in_batch(case):
    model, length = build(case)
    ids = random_ids(2, length)
    chunked = loss_and_grads(model, ids, ids, False, num_items_in_batch=50)
    assert_same(chunked, loss_and_grads(model, ids, ids, True, num_items_in_batch=50))
    torch.testing.assert_close(chunked[0].loss, chunked[0].loss_sum / 50)


@pytest.mark.parametrize("case", ["mixer_flat", "mixer_transformer", "memory_past_fixed", "memory_oracle_token"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches(case, side):
    model, length = build(case)
    ids = random_ids(3, length)
    mask = torch.ones_like(ids)
    if side == "left":
        mask[1, :5], mask[2, : length - 3] = 0, 0
    else:
        mask[1, -5:], mask[2, 3:] = 0, 0
    labels = ids.masked_fill(mask == 0, -100)
    assert_same(loss_and_grads(model, ids, labels, False, attention_mask=mask),
                loss_and_grads(model, ids, labels, True, attention_mask=mask))


@pytest.mark.parametrize("case", ["mixer_flat", "autoencoder_unroll", "memory_past_variable"])
def test_bf16_autocast_is_as_close_to_fp32_as_the_full_path(case):
    """Under autocast both paths round differently; the chunked one must be no worse than the full one."""
    model, length = build(case)
    ids = random_ids(2, length)
    labels = labels_with_ignored(ids)
    reference = loss_and_grads(model, ids, labels, True)
    full = loss_and_grads(model, ids, labels, True, autocast=True)
    chunked = loss_and_grads(model, ids, labels, False, autocast=True)
    loss_r, loss_f, loss_c = (float(out.loss.detach()) for out in (reference[0], full[0], chunked[0]))
    full_error = abs(loss_f - loss_r)
    assert abs(loss_c - loss_r) <= 2 * full_error + 1e-3
    for grad_r, grad_f, grad_c in zip(reference[1], full[1], chunked[1], strict=True):
        full_error = float((grad_f - grad_r).norm())
        assert float((grad_c - grad_r).norm()) <= 2 * full_error + 1e-4 * float(grad_r.norm()) + 1e-7


@pytest.mark.parametrize("chunk", [1, 7, 32, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_any_chunk_size_gives_the_same_loss_and_gradients(chunk, bias):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(45, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    head_bias = torch.randn(50, generator=generator, requires_grad=True) if bias else None
    targets = torch.randint(0, 50, (45,), generator=generator)
    targets[::4] = -100
    logits = torch.nn.functional.linear(hidden, weight, head_bias)
    per_token = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    inputs = [hidden, weight] + ([head_bias] if bias else [])
    expected = torch.autograd.grad(per_token.sum() * 0.5, inputs)
    total, chunked_per_token = chunked_linear_cross_entropy(hidden, weight, head_bias, targets, chunk=chunk)
    assert not chunked_per_token.requires_grad
    torch.testing.assert_close(chunked_per_token, per_token.detach())
    for got, want in zip(torch.autograd.grad(total * 0.5, inputs), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_no_gradient_work_without_grad_and_frozen_head():
    model, length = build("mixer_flat")
    ids = random_ids(2, length)
    with torch.no_grad():
        chunked, full = model(ids, labels=ids, return_logits=False), model(ids, labels=ids)
    torch.testing.assert_close(chunked.loss, full.loss)
    model.lm_head.weight.requires_grad_(False)
    grads_c = loss_and_grads(model, ids, ids, False)
    grads_f = loss_and_grads(model, ids, ids, True)
    assert_same(grads_c, grads_f)


def test_logits_are_returned_unless_asked_not_to():
    model, length = build("mixer_flat")
    ids = random_ids(2, length)
    assert model(ids, labels=ids).logits.shape == (2, length, 100)
    assert model(ids).logits.shape == (2, length, 100)
    assert model(ids, return_logits=False).logits is None


def test_lora_on_the_head_keeps_its_adapter():
    peft = pytest.importorskip("peft")
    model, length = build("mixer_flat")
    config = peft.LoraConfig(r=2, target_modules=["lm_head"], init_lora_weights=False)
    lora = peft.get_peft_model(model, config)
    ids = random_ids(2, length)
    chunked = lora(input_ids=ids, labels=ids, return_logits=False)
    full = lora(input_ids=ids, labels=ids)
    torch.testing.assert_close(chunked.loss, full.loss)
    with lora.disable_adapter():
        assert not torch.allclose(lora(input_ids=ids, labels=ids).loss, full.loss)


@pytest.mark.parametrize("case", ["mixer_flat", "autoencoder_bottleneck", "memory_past_variable"])
def test_compiles_without_graph_breaks(case):
    model, length = build(case)
    ids = random_ids(2, length)

    def step(input_ids):
        return model(input_ids, labels=input_ids, return_logits=False).loss

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")  # fullgraph: a graph break raises
    trainable = [p for p in model.parameters() if p.requires_grad]
    eager_loss = step(ids)
    eager_grads = torch.autograd.grad(eager_loss, trainable)
    compiled_loss = compiled(ids)
    torch.testing.assert_close(compiled_loss, eager_loss)
    for got, want in zip(torch.autograd.grad(compiled_loss, trainable), eager_grads, strict=True):
        torch.testing.assert_close(got, want)
