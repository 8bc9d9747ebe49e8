"""transformers' ``Trainer`` trains memmix models like one large batch under gradient accumulation.

The Trainer passes ``num_items_in_batch`` (the scored tokens of all micro-batches of an optimizer step) to a
model that accepts loss kwargs and then stops dividing by the accumulation steps; a model that ignored it
would log (and step with) twice the loss at 2 accumulation steps. These tests prove, for all three
families, that ``per_device_train_batch_size=4, gradient_accumulation_steps=2`` logs the same loss and
gradient norm and reaches the same weights as ``batch_size=8`` on the same data.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments
from variants import TINY, autoencoder_config, memory_config, mixer_config, random_ids

from modeling_memmix import MemoryMixerForCausalLM, MixerAutoencoder, MixerForCausalLM

FAMILIES = {
    "mixer": (lambda: MixerForCausalLM(mixer_config("flat")), TINY["n_ctx"]),
    "autoencoder": (lambda: MixerAutoencoder(autoencoder_config("repeat")), TINY["n_ctx"]),
    "memory": (lambda: MemoryMixerForCausalLM(memory_config("past_fixed")), 3 * TINY["n_ctx"]),
}


class TokenRows(Dataset):
    """Fixed rows of token ids with labels; some labels are -100 so that rows score different counts."""

    def __init__(self, count: int, length: int):
        self.ids = random_ids(count, length, seed=5)
        self.labels = self.ids.clone()
        for row in range(count):
            self.labels[row, : row] = -100  # row r leaves its first r labels out

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


def train_one_step(family: str, batch_size: int, accumulation: int, output_dir) -> tuple[dict, dict]:
    factory, length = FAMILIES[family]
    torch.manual_seed(0)
    model = factory()
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=1e-2, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True,
        lr_scheduler_type="constant", max_grad_norm=1e9, optim="sgd",  # SGD: weights follow the gradient
    )
    trainer = Trainer(model=model, args=args, train_dataset=TokenRows(8, length))
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    return logged, {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_gradient_accumulation_matches_one_large_batch(family, tmp_path):
    assert FAMILIES[family][0]().accepts_loss_kwargs is True
    large, large_weights = train_one_step(family, 8, 1, tmp_path / "large")
    accumulated, accumulated_weights = train_one_step(family, 4, 2, tmp_path / "accumulated")
    assert accumulated["loss"] == pytest.approx(large["loss"], rel=1e-4)
    assert accumulated["grad_norm"] == pytest.approx(large["grad_norm"], rel=1e-4)
    for name, weight in large_weights.items():
        torch.testing.assert_close(accumulated_weights[name], weight, atol=1e-5, rtol=1e-4, msg=name)


def test_num_items_in_batch_divides_the_summed_loss():
    torch.manual_seed(0)
    model = MixerForCausalLM(mixer_config("flat"))
    ids = random_ids(2, 10)
    plain = model(ids, labels=ids)
    scaled = model(ids, labels=ids, num_items_in_batch=36)
    torch.testing.assert_close(scaled.loss, plain.loss_sum / 36)
    assert int(plain.num_tokens) == 18
