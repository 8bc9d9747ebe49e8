"""The training loop's speed levers change speed, not results: ``train.optimizer_impl`` (fused / foreach /
for-loop AdamW) takes the same steps, and ``train.chunked_loss`` (the loss without full-vocabulary logits) logs
the same losses as the full-logits path. Bad values are named. (Speed itself is measured by
``benchmarks/bench_training.py``, never asserted here.)
"""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_MODEL, builtin_data, tiny_preset, train_losses, train_small_tokenizer
from variants import mixer_config, random_ids

from memmix_train.config import TrainConfig, resolve_config
from memmix_train.loop import build_optimizer
from modeling_memmix import MixerForCausalLM
from train_accelerate import run_training


@pytest.mark.parametrize("impl, flag", [("fused", "fused"), ("foreach", "foreach")])
def test_optimizer_impl_reaches_adamw(impl, flag):
    optimizer = build_optimizer(MixerForCausalLM(mixer_config("flat")), TrainConfig(optimizer_impl=impl))
    assert optimizer.defaults[flag] is True


def test_bad_lever_values_are_named():
    with pytest.raises(ValueError, match=r"train.optimizer_impl='adam'.*fused"):
        TrainConfig(optimizer_impl="adam")
    with pytest.raises(ValueError, match=r"train.chunked_loss='yes' must be true or false"):
        TrainConfig(chunked_loss="yes")


def test_every_optimizer_impl_takes_the_same_steps():
    ids = random_ids(2, 16)
    trained = {}
    for impl in ("for_loop", "foreach", "fused"):
        torch.manual_seed(0)
        model = MixerForCausalLM(mixer_config("heads_kernel3"))
        optimizer = build_optimizer(model, TrainConfig(optimizer_impl=impl, lr=1e-2))
        for _ in range(3):
            model(ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        trained[impl] = [p.detach().clone() for p in model.parameters()]
    for impl in ("foreach", "fused"):
        for got, want in zip(trained[impl], trained["for_loop"], strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_chunked_loss_logs_the_full_paths_losses(tmp_path):
    shared = train_small_tokenizer(tmp_path / "tok")

    def run(name, **train):
        preset = tiny_preset("mixer", TINY_MODEL, builtin_data(shared), tmp_path / name, max_steps=3, eval_every=3,
                             save_every=3, **train)
        run_training(resolve_config(preset))
        return train_losses(tmp_path / name)

    chunked, full = run("chunked"), run("full", chunked_loss=False)
    assert len(full) == 3
    for step, loss in full.items():
        assert chunked[step] == pytest.approx(loss, rel=1e-5)
