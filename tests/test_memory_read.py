"""The memory model's content-addressed read (``memory_read="attention"``, `MemoryRead`): an untrained read
changes nothing, the attention picks memories by content and never reads a slot a chunk cannot see, the read
trains, the cached and padded paths agree with it (``test_generation.py``, ``test_padding.py``), LoRA adapts it,
and bad settings name the value."""

from __future__ import annotations

import re

import pytest
import torch
from variants import TINY, memory_config, random_ids, wake_memory_read

from memmix_peft import recommended_lora_config
from modeling_memmix import MemoryMixerConfig, MemoryMixerForCausalLM
from modeling_memmix.mixer_layers import MemoryRead


def build(variant: str = "past_fixed", **extra) -> MemoryMixerForCausalLM:
    torch.manual_seed(0)
    return MemoryMixerForCausalLM(memory_config(variant, **extra)).eval()


@pytest.mark.parametrize("extra", [{}, {"memory_read_layer": 1}, {"memory_mode": "recurrent"}],
                         ids=["before_block_0", "before_block_1", "recurrent"])
@torch.no_grad()
def test_untrained_read_gives_the_slots_models_numbers(extra):
    with_read = build(memory_read="attention", **extra)
    assert torch.count_nonzero(with_read.memory_read.out.weight) == 0
    slots_only = build(**extra)
    missing = slots_only.load_state_dict(with_read.state_dict(), strict=False)
    assert not missing.missing_keys and all(k.startswith("memory_read.") for k in missing.unexpected_keys)
    ids = random_ids(2, 3 * TINY["n_ctx"])
    torch.testing.assert_close(with_read(ids).logits, slots_only(ids).logits, atol=0, rtol=0)


@torch.no_grad()
def test_live_read_changes_the_logits_of_chunks_with_memories_only():
    model = wake_memory_read(build(memory_read="attention"))
    slots_only = build()
    slots_only.load_state_dict(model.state_dict(), strict=False)
    ids = random_ids(2, 3 * TINY["n_ctx"])
    difference = (model(ids).logits - slots_only(ids).logits).abs().amax(dim=(0, 2))  # per position
    chunk = TINY["n_ctx"]
    # later chunks read something; and what they read depends on the memories: changing chunk 0 moves the later
    # chunks' logits differently with the read than without it
    assert difference[chunk:].max() > 1e-3
    changed = ids.clone()
    changed[:, :chunk] = (changed[:, :chunk] + 7) % TINY["vocab_size"]
    shift = (model(changed).logits - model(ids).logits)[:, chunk:]
    shift_slots = (slots_only(changed).logits - slots_only(ids).logits)[:, chunk:]
    assert not torch.allclose(shift, shift_slots, atol=1e-4)


def test_read_weights_never_reach_unseen_slots_and_pick_by_content():
    torch.manual_seed(0)
    read = MemoryRead(8, 8, 1e-5)
    slots = torch.randn(3, 2, 8)
    visible = torch.tensor([0, 1, 2])
    weights = read.weights(torch.randn(3, 5, 8), slots, visible)
    assert weights.shape == (3, 5, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))
    assert torch.all(weights[0, :, 1:] == 0) and torch.all(weights[0, :, 0] == 1)  # nothing visible: "nothing"
    assert torch.all(weights[1, :, 2] == 0)  # slot 1 is not in use for row 1
    # content addressing: with identity projections a query aligned with slot j's memory reads slot j
    with torch.no_grad():
        for linear in (read.query, read.key, read.value):
            linear.weight.copy_(torch.eye(8))
        read.norm.weight.fill_(1.0)
        read.norm.bias.zero_()
    memories = torch.zeros(1, 2, 8)
    memories[0, 0, :4], memories[0, 1, 4:] = 20.0, 20.0
    hidden = torch.zeros(1, 2, 8)
    hidden[0, 0, :4], hidden[0, 1, 4:] = 1.0, 1.0
    picked = read.weights(hidden, memories, torch.tensor([2]))[0]
    assert picked[0, 1] > 0.99 and picked[1, 2] > 0.99


def test_read_trains_from_its_zero_start():
    torch.manual_seed(0)
    model = MemoryMixerForCausalLM(memory_config("past_fixed", memory_read="attention")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = random_ids(4, 3 * TINY["n_ctx"])
    before = {name: p.detach().clone() for name, p in model.memory_read.named_parameters()}
    for _ in range(3):
        optimizer.zero_grad()
        model(ids, labels=ids).loss.backward()
        optimizer.step()
    moved = {name for name, p in model.memory_read.named_parameters() if not torch.equal(p, before[name])}
    assert {"out.weight", "query.weight", "key.weight", "value.weight"} <= moved


def test_lora_adapts_the_read():
    config = MemoryMixerConfig(**TINY, memory_read="attention", freeze_encoder=True)
    pattern = recommended_lora_config(config).target_modules
    for name in ("memory_read.query", "memory_read.key", "memory_read.value", "memory_read.out"):
        assert re.fullmatch(pattern, name), name
    assert not re.fullmatch(recommended_lora_config(MemoryMixerConfig(**TINY)).target_modules, "memory_read.query")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"memory_read": "gate"}, r"memory_read='gate' is not supported; choose one of \['slots', 'attention'\]"),
        ({"memory_read": "attention", "decoder_type": "transformer"}, r"memory_read='attention'.*decoder_type"),
        ({"memory_read": "attention", "memory_read_layer": 2}, r"memory_read_layer=2 must name a decoder block, 0 to 1"),
        ({"memory_read": "attention", "memory_read_layer": -1}, r"memory_read_layer=-1"),
    ],
)
def test_bad_read_settings_name_the_value(settings, message):
    with pytest.raises(ValueError, match=message):
        MemoryMixerConfig(**TINY, **settings)
