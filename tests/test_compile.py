"""Every family's training step compiles with ``torch.compile(fullgraph=True)``: no graph breaks (the input
checks that read values on the host run in eager mode only), the same loss and gradients as eager, and
``train.compile`` in the training script gives the same losses as an eager run.

The fast tests use the ``aot_eager`` backend: it traces exactly what inductor would (graph breaks and autograd
included) without generating C++ code, which takes over a minute per model on 2 CPU cores; the inductor run is
marked slow (``--runslow``).
"""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_MODEL, builtin_data, tiny_preset, train_losses, train_small_tokenizer
from variants import autoencoder_config, memory_config, mixer_config, random_ids

from memmix_train.config import resolve_config
from modeling_memmix import MemoryMixerForCausalLM, MixerAutoencoder, MixerForCausalLM
from train_accelerate import run_training

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

CASES = {
    "mixer_flat": lambda: (MixerForCausalLM(mixer_config("flat")), 16),
    "mixer_heads_kernel3": lambda: (MixerForCausalLM(mixer_config("heads_kernel3")), 16),
    "mixer_transformer": lambda: (MixerForCausalLM(mixer_config("transformer")), 16),
    "memory_past_variable": lambda: (MemoryMixerForCausalLM(memory_config("past_variable")), 40),
    "memory_recurrent": lambda: (MemoryMixerForCausalLM(memory_config("recurrent")), 40),
    "memory_oracle_int8": lambda: (MemoryMixerForCausalLM(memory_config("oracle_token", embedding_format="int8")), 40),
    "autoencoder_bottleneck_int8_qat": lambda: (MixerAutoencoder(autoencoder_config(
        "bottleneck", embedding_format="int8", embedding_noise="int8", embedding_noise_position="pre_bottleneck")), 16),
    # the seed's options (issue 12)
    "autoencoder_unroll_projected_noise_scale": lambda: (MixerAutoencoder(autoencoder_config(
        "unroll_projected", embedding_noise_scale=0.125, encoder_mixer_kernel_size=3)), 16),
    "memory_recurrent_seed": lambda: (MemoryMixerForCausalLM(memory_config("recurrent_seed")), 40),
    "memory_none": lambda: (MemoryMixerForCausalLM(memory_config("none_variable")), 40),
    "memory_per_stack_mixing": lambda: (MemoryMixerForCausalLM(memory_config("past_per_stack_mixing")), 40),
}


def loss_and_grads(model, step, ids):
    torch.manual_seed(1)  # the same noise draws (QAT) in both runs
    loss = step(ids, ids)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return loss.detach(), grads


@pytest.mark.parametrize("case", list(CASES))
def test_training_step_compiles_without_graph_breaks_and_matches_eager(case):
    torch.manual_seed(0)
    model, length = CASES[case]()
    model.train()
    ids = random_ids(2, length)

    def step(input_ids, labels):
        return model(input_ids, labels=labels).loss

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")  # fullgraph: a graph break raises
    eager_loss, eager_grads = loss_and_grads(model, step, ids)
    compiled_loss, compiled_grads = loss_and_grads(model, compiled, ids)
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-5)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(compiled_grad, eager_grad, atol=1e-5, rtol=1e-4)


def test_bad_input_still_raises_clearly_in_eager_mode():
    model = MixerForCausalLM(mixer_config("flat"))
    with pytest.raises(ValueError, match=r"token id 100, outside the vocabulary"):
        model(torch.tensor([[1, 100]]))


def test_train_compile_gives_the_eager_losses(tmp_path):
    shared = train_small_tokenizer(tmp_path / "tok")

    def run(name, **train):
        preset = tiny_preset("mixer", TINY_MODEL, builtin_data(shared), tmp_path / name, max_steps=3, eval_every=3,
                             save_every=3, **train)
        return run_training(resolve_config(preset))

    eager = run("eager")
    compiled = run("compiled", compile=True, compile_backend="aot_eager")
    eager_losses, compiled_losses = train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")
    assert len(eager_losses) == 3
    for step, loss in eager_losses.items():
        assert compiled_losses[step] == pytest.approx(loss, rel=1e-5)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-5)


def test_compile_backend_is_checked():
    from memmix_train.config import TrainConfig

    with pytest.raises(ValueError, match=r"train.compile_backend='turbo' is not a torch.compile backend"):
        TrainConfig(compile=True, compile_backend="turbo")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mixer_flat", "memory_past_variable", "autoencoder_bottleneck_int8_qat"])
def test_inductor_compiles_each_family(case):
    torch.manual_seed(0)
    model, length = CASES[case]()
    model.train()
    ids = random_ids(2, length)
    torch._dynamo.reset()
    compiled = torch.compile(lambda i, labels: model(i, labels=labels).loss, fullgraph=True)
    loss = compiled(ids, ids)
    loss.backward()
    assert torch.isfinite(loss)
