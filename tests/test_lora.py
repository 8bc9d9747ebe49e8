"""Tests of the PEFT LoRA recipes in memmix_peft: causality with random nonzero adapters on every
recommended target (mixing weights included) before and after merging, the mixing adapter not being a no-op,
exact adapter save/load, merged == adapted, loading an adapter on a remote-code base in a process without
memmix, the memory-model decoder-only recipe, clear errors, and a short LoRA fine-tune lowering the loss."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from variants import MIXER_VARIANTS, TINY, change_after, random_ids

from memmix_peft import (
    count_trainable_parameters,
    memory_lora_config,
    merge_adapters,
    merge_and_export,
    recommended_lora_config,
)
from modeling_memmix import (
    MemoryMixerConfig,
    MemoryMixerForCausalLM,
    MixerAutoencoder,
    MixerAutoencoderConfig,
    MixerConfig,
    MixerForCausalLM,
)

# mixing weights are adaptable (and recommended with adapt_mixing=True) only for kernel size 1 mixer stacks
ADAPTS_MIXING = {"flat": True, "heads": True, "kernel3": False, "heads_kernel3": False, "transformer": False,
                 "pytorch_init": True}


# ----- helpers ------------------------------------------------------------------------------------------------


def randomize_adapters(model: torch.nn.Module, name_pattern: str = r"lora_[AB]\.", seed: int = 1) -> int:
    """Give matching LoRA factors random nonzero values (default init has lora_B = 0, a no-op adapter)."""
    generator = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if re.search(name_pattern, name):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
                count += 1
    assert count, f"no LoRA parameter matched {name_pattern!r}"
    return count


def assert_causal(forward, ids_or_inputs: torch.Tensor, positions=(0, 5, 11)) -> None:
    """Changing the input after position t never changes the output at positions <= t, but does change later."""
    reference = forward(ids_or_inputs)
    for t in positions:
        if ids_or_inputs.dtype.is_floating_point:
            changed = ids_or_inputs.clone()
            changed[:, t + 1 :] += torch.randn(
                changed[:, t + 1 :].shape, generator=torch.Generator().manual_seed(t)
            )
        else:
            changed = change_after(ids_or_inputs, t)
        output = forward(changed)
        torch.testing.assert_close(output[:, : t + 1], reference[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(output[:, t + 1 :], reference[:, t + 1 :]), "later positions should change"


def mixing_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the raw (unmasked) mixing weights, by the name of their mixing module."""
    return {
        name.replace(".base_layer", ""): module.weight.detach().clone()
        for name, module in model.named_modules()
        if type(module).__name__ == "MaskedTokenMixing"
    }


def assert_upper_triangle_changed(before: dict, after: dict) -> None:
    """The merged adapter wrote into the masked (future) entries: only the mask keeps the model causal."""
    assert before.keys() == after.keys() and before
    for name, weight in before.items():
        upper = torch.ones(weight.shape[-2:], dtype=torch.bool).triu(1)
        assert (after[name] - weight)[..., upper].abs().max() > 1e-3, name


def adapted(model, config: LoraConfig, seed: int = 1) -> PeftModel:
    peft_model = get_peft_model(model, config)
    randomize_adapters(peft_model, seed=seed)
    return peft_model.eval()


# ----- 1. causality with random nonzero adapters, before and after merging ---------------------------------------


@pytest.mark.parametrize("variant", sorted(MIXER_VARIANTS))
def test_lora_causal_lm_stays_causal_before_and_after_merge(variant):
    torch.manual_seed(0)
    model = MixerForCausalLM(MixerConfig(**TINY, **MIXER_VARIANTS[variant])).eval()
    adapt_mixing = ADAPTS_MIXING[variant]
    before = mixing_weights(model)
    peft_model = adapted(model, recommended_lora_config(model, rank=4, adapt_mixing=adapt_mixing))
    ids = random_ids(2, TINY["n_ctx"])
    with torch.no_grad():
        assert_causal(lambda x: peft_model(input_ids=x).logits, ids)
        adapted_logits = peft_model(input_ids=ids).logits
        merged = merge_adapters(peft_model).eval()
        assert not any("lora" in name for name, _ in merged.named_parameters())
        assert_causal(lambda x: merged(x).logits, ids)
        torch.testing.assert_close(merged(ids).logits, adapted_logits, rtol=1e-4, atol=1e-5)
    if adapt_mixing:
        assert_upper_triangle_changed(before, mixing_weights(merged))


def test_conv_mixing_weight_adapted_by_hand_stays_causal():
    """Not recommended (it is not low-rank), but even PEFT's 3-D 'experts' reading of a conv weight is masked."""
    torch.manual_seed(0)
    model = MixerForCausalLM(MixerConfig(**TINY, mixer_kernel_size=3)).eval()
    peft_model = adapted(model, LoraConfig(r=2, target_modules=[], target_parameters=["mixing.weight"]))
    ids = random_ids(2, TINY["n_ctx"])
    with torch.no_grad():
        assert_causal(lambda x: peft_model(input_ids=x).logits, ids)
        merged = merge_adapters(peft_model)
        assert_causal(lambda x: merged(x).logits, ids)


@pytest.mark.parametrize("variant", ["flat", "heads", "transformer_decoder", "bottleneck_unroll"])
def test_lora_autoencoder_encoder_and_decoder_stay_causal(variant):
    settings = {
        "flat": dict(),
        "heads": dict(mixer_heads=4),
        "transformer_decoder": dict(decoder_type="transformer"),
        "bottleneck_unroll": dict(embedding_dim=8, decoder_input="unroll"),
    }[variant]
    settings.setdefault("mixer_kernel_size", 1)  # mixing is adaptable only with k = 1 (the autoencoder default is 64)
    torch.manual_seed(0)
    model = MixerAutoencoder(MixerAutoencoderConfig(**TINY, **settings)).eval()
    config = recommended_lora_config(model, rank=4, adapt_mixing=True)
    peft_model = adapted(model, config)
    names = [name for name, _ in peft_model.named_parameters() if "lora_B" in name]
    assert any(name.split(".")[2] == "encoder" for name in names) and any(
        ".decoder." in name for name in names
    )
    if variant == "bottleneck_unroll":
        assert any(".encoder.down." in name for name in names) and any(".model.up." in name for name in names)
    inputs = torch.randn(2, TINY["n_ctx"], TINY["hidden_size"], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for stage in ("adapted", "merged"):
            base = merge_adapters(peft_model) if stage == "merged" else peft_model.base_model.model
            assert (stage == "merged") != any("lora" in name for name, _ in base.named_parameters())
            assert_causal(base.encoder.stack, inputs)
            assert_causal(base.decoder, inputs)


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(mixer_heads=4), dict(encoder_hidden_size=16, memory_dim=8)],
    ids=["flat", "heads", "narrow_encoder"],
)
def test_lora_memory_model_stays_causal(settings):
    torch.manual_seed(0)
    model = MemoryMixerForCausalLM(MemoryMixerConfig(**TINY, max_memories=2, **settings)).eval()
    peft_model = adapted(model, recommended_lora_config(model, rank=4, adapt_mixing=True))
    ids = random_ids(2, 3 * TINY["n_ctx"])
    decoder_inputs = torch.randn(
        2, model.config.decoder_n_ctx, TINY["hidden_size"], generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        assert_causal(lambda x: peft_model(input_ids=x).logits, ids, positions=(3, 16, 30, 40))
        assert_causal(peft_model.base_model.model.decoder, decoder_inputs)
        merged = merge_adapters(peft_model)
        assert not any("lora" in name for name, _ in merged.named_parameters())
        assert_causal(lambda x: merged(x).logits, ids, positions=(3, 16, 30, 40))
        assert_causal(merged.decoder, decoder_inputs)


# ----- 2. the mixing adapter is not a silent no-op -------------------------------------------------------------


@pytest.mark.parametrize("variant", ["flat", "heads"])
def test_mixing_adapter_changes_outputs_and_trains(variant):
    torch.manual_seed(0)
    model = MixerForCausalLM(MixerConfig(**TINY, **MIXER_VARIANTS[variant])).eval()
    peft_model = get_peft_model(model, recommended_lora_config(model, rank=4, adapt_mixing=True))
    ids = random_ids(2, TINY["n_ctx"])
    # default init (lora_B = 0): identical outputs, but the mixing adapter receives gradients
    with peft_model.disable_adapter(), torch.no_grad():
        base_logits = peft_model(input_ids=ids).logits
    peft_model(input_ids=ids, labels=ids).loss.backward()
    mixing_b = {n: p for n, p in peft_model.named_parameters() if re.search(r"mixing\.lora_B\.", n)}
    assert len(mixing_b) == TINY["num_hidden_layers"]
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in mixing_b.values())
    # only the mixing adapters nonzero: outputs change
    randomize_adapters(peft_model, r"mixing\.lora_B\.")
    with torch.no_grad():
        mixed_logits = peft_model(input_ids=ids).logits
    assert (mixed_logits - base_logits).abs().max() > 1e-2


@pytest.mark.parametrize("variant", ["flat", "heads", "memory"])
def test_cached_generation_uses_the_mixing_adapter(variant):
    """generate() on the adapted model: cached == uncached == merged, and differs from the base model."""
    torch.manual_seed(0)
    if variant == "memory":  # generation crosses a chunk boundary, so a memory is written and read
        model = MemoryMixerForCausalLM(MemoryMixerConfig(**TINY, max_memories=2)).eval()
    else:
        model = MixerForCausalLM(MixerConfig(**TINY, **MIXER_VARIANTS[variant])).eval()
    peft_model = adapted(model, recommended_lora_config(model, rank=4, adapt_mixing=True))
    prompt = random_ids(2, 12, seed=4)
    settings = dict(max_new_tokens=4 if variant != "memory" else 12, do_sample=False)
    with torch.no_grad():
        cached = peft_model.generate(input_ids=prompt, **settings)
        uncached = peft_model.generate(input_ids=prompt, use_cache=False, **settings)
        with peft_model.disable_adapter():
            base = peft_model.generate(input_ids=prompt, **settings)
        merged = merge_adapters(peft_model).generate(input_ids=prompt, **settings)
    assert torch.equal(cached, uncached) and torch.equal(cached, merged)
    assert not torch.equal(cached, base)


# ----- 3. save / load / merge ------------------------------------------------------------------------------------


def test_adapter_save_load_is_exact_and_merged_export_matches(tmp_path):
    torch.manual_seed(0)
    model = MixerForCausalLM(MixerConfig(**TINY, mixer_heads=4))
    model.save_pretrained(tmp_path / "base")
    peft_model = adapted(model, recommended_lora_config(model, rank=4, adapt_mixing=True))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = random_ids(3, TINY["n_ctx"])
    with torch.no_grad():
        adapted_logits = peft_model(input_ids=ids).logits
        fresh_base = MixerForCausalLM.from_pretrained(tmp_path / "base")
        loaded = PeftModel.from_pretrained(fresh_base, tmp_path / "adapter").eval()
        assert torch.equal(loaded(input_ids=ids).logits, adapted_logits)
        merged = merge_and_export(loaded, tmp_path / "merged")
        torch.testing.assert_close(merged(ids).logits, adapted_logits, rtol=1e-4, atol=1e-5)
        exported = MixerForCausalLM.from_pretrained(tmp_path / "merged").eval()
        assert torch.equal(exported(ids).logits, merged(ids).logits)
    assert (tmp_path / "merged" / "modeling_mixer.py").exists()  # remote code travels with the export


def test_adapter_loads_on_remote_code_base_without_memmix(tmp_path):
    torch.manual_seed(0)
    model = MixerForCausalLM(MixerConfig(**TINY))
    model.save_pretrained(tmp_path / "base")
    peft_model = adapted(model, recommended_lora_config(model, rank=4, adapt_mixing=True))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = random_ids(2, TINY["n_ctx"])
    (tmp_path / "ids.json").write_text(json.dumps(ids.tolist()))
    script = textwrap.dedent("""
        import json, sys, torch
        sys.modules["modeling_memmix"] = None  # even where memmix is installed, only the remote code may run
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained("base", trust_remote_code=True)
        model = PeftModel.from_pretrained(base, "adapter").eval()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(json.load(open("ids.json")))).logits
        torch.save(logits, "logits.pt")
        print(type(base).__module__)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout  # the class really came from the checkpoint's code
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


# ----- memory-model recipe -------------------------------------------------------------------------------------


def test_memory_lora_config_adapts_decoder_side_only():
    torch.manual_seed(0)
    autoencoder = MixerAutoencoder(MixerAutoencoderConfig(**TINY, embedding_dim=8, mixer_kernel_size=1))
    memory = MemoryMixerForCausalLM.from_autoencoder(autoencoder, freeze_encoder=True, max_memories=2)
    encoder_before = {k: v.clone() for k, v in memory.encoder.state_dict().items()}
    peft_model = get_peft_model(
        memory, memory_lora_config(memory, rank=4, adapt_mixing=True, modules_to_save=["memory_proj"])
    )
    trainable_names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert not any(".encoder." in n for n in trainable_names)
    assert any(".decoder." in n and "mixing.lora_" in n for n in trainable_names)
    assert any("memory_proj.modules_to_save" in n for n in trainable_names)
    trainable, total = count_trainable_parameters(peft_model)
    assert trainable == sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad)
    assert 0 < trainable < total
    # one optimizer step trains the decoder side and leaves the autoencoder's encoder as it was
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.1)
    ids = random_ids(2, 3 * TINY["n_ctx"])
    peft_model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    for key, value in memory.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[key]), key


def test_frozen_memory_encoder_gets_no_adapters_in_recommended_config():
    config = MemoryMixerConfig(**TINY, freeze_encoder=True)
    lora = recommended_lora_config(config, adapt_mixing=True)
    assert all(name.startswith("decoder.") for name in lora.target_parameters)
    unfrozen = recommended_lora_config(MemoryMixerConfig(**TINY), adapt_mixing=True)
    assert any(name.startswith("encoder.stack.") for name in unfrozen.target_parameters)


def test_count_trainable_parameters_counts_tied_weights_once():
    model = MixerForCausalLM(MixerConfig(**TINY, tie_word_embeddings=True))
    trainable, total = count_trainable_parameters(model)
    assert trainable == total == sum(p.numel() for p in set(model.parameters()))
    assert total < sum(p.numel() for p in model.state_dict().values())


# ----- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, kwargs, message",
    [
        (dict(mixer_kernel_size=3), dict(adapt_mixing=True), "mixer_kernel_size=3"),
        (dict(block_type="transformer"), dict(adapt_mixing=True), "no mixing weights"),
        (dict(), dict(adapt_mixing=True, dropout=0.1), "dropout=0.1"),
        (dict(), dict(rank=0), "rank=0"),
        (dict(), dict(dropout=1.5), "dropout=1.5"),
    ],
)
def test_bad_settings_raise_clear_errors(settings, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        recommended_lora_config(MixerConfig(**TINY, **settings), **kwargs)


def test_wrong_family_raises():
    with pytest.raises(ValueError, match="model_type"):
        recommended_lora_config(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="memory models"):
        memory_lora_config(MixerConfig(**TINY))
    with pytest.raises(ValueError, match="PeftModel"):
        merge_and_export(MixerForCausalLM(MixerConfig(**TINY)), "unused")


def test_dropout_without_mixing_adapters_is_applied():
    config = recommended_lora_config(MixerConfig(**TINY), dropout=0.1)
    assert config.lora_dropout == 0.1 and not config.target_parameters


# ----- a short LoRA fine-tune lowers held-out loss ----------------------------------------------------------------


def counting_windows(step: int, count: int, seed: int) -> torch.Tensor:
    """Tiny synthetic "text": windows counting up by ``step`` from random starts."""
    starts = torch.randint(0, TINY["vocab_size"], (count, 1), generator=torch.Generator().manual_seed(seed))
    return (starts + step * torch.arange(TINY["n_ctx"])) % TINY["vocab_size"]


def train_steps(model: torch.nn.Module, windows: torch.Tensor, steps: int, lr: float = 1e-2) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        batch = windows[(step * 8) % len(windows) :][:8]
        optimizer.zero_grad()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
    model.eval()


def test_lora_fine_tune_lowers_validation_loss():
    torch.manual_seed(0)
    model = MixerForCausalLM(MixerConfig(**TINY))
    train_steps(model, counting_windows(3, 64, seed=1), steps=40)  # the "published checkpoint"
    peft_model = get_peft_model(model, recommended_lora_config(model, rank=4, alpha=8, adapt_mixing=True))
    trainable, total = count_trainable_parameters(peft_model)
    assert 0 < trainable < total / 5
    new_text, valid = counting_windows(7, 40, seed=2), counting_windows(7, 16, seed=3)

    def valid_loss() -> float:
        with torch.no_grad():
            return peft_model(input_ids=valid, labels=valid).loss.item()

    before = valid_loss()
    frozen_before = model.model.stack.layers[0].ff.up.base_layer.weight.clone()
    train_steps(peft_model, new_text, steps=40)
    assert valid_loss() < 0.5 * before
    assert torch.equal(model.model.stack.layers[0].ff.up.base_layer.weight, frozen_before)
