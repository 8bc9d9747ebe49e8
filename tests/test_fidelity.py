"""Fidelity to the seed's models (issue 12, section 1): each option reproduces what the seed's research code
(github.com/blbadger/memorymodels, ``memorymodels/mixer_autoencoder.py`` and ``memory_transformer.py``) does,
checked against a transcription of that code, and every default still builds the model memmix built before.

* ``unroll_source="projected"``: ``AutoencodingMixer.forward`` projects ``down`` then ``up`` and unrolls the
  full-width vector (its sliding-window loop is transcribed below);
* per-stack mixing (``encoder_mixer_*`` / ``decoder_mixer_*``) and ``from_autoencoder`` with the seed's memory
  recipe (a ``k = 16`` encoder, a flat decoder: ``frozen_mixer_trainer.py``);
* ``recurrent_style="seed"``: ``RecurrentMemoryMixer.forward`` (transcribed below);
* ``embedding_noise_scale``: ``encoder_embedding += torch.rand(shape) * 2**-3`` after ``down``;
* ``memory_mode="none"``: the ``past`` decoder with empty slots (``VariableMemoryMixer(no_memory=True)``), which
  trains with ``train_accelerate.py`` and generates;
* ``init_style="pytorch"``: PyTorch's default init, which the research code keeps.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    TINY_MODEL,
    builtin_data,
    fresh_accelerate_state,  # noqa: F401  (autouse fixture)
    tiny_preset,
    train_small_tokenizer,
)
from transformers import AutoModelForCausalLM
from variants import TINY, autoencoder_config, memory_config, random_ids

from memmix_train.config import resolve_config
from modeling_memmix import (
    MemoryMixerConfig,
    MemoryMixerForCausalLM,
    MixerAutoencoder,
    MixerAutoencoderConfig,
    MixerConfig,
    MixerForCausalLM,
)
from modeling_memmix.mixer_layers import MaskedTokenMixing, build_stack
from train_accelerate import run_training


def mixers(stack) -> list[MaskedTokenMixing]:
    return [module for module in stack.modules() if isinstance(module, MaskedTokenMixing)]


# ----- 1. unroll over the up-projected vector -------------------------------------------------------------------


def seed_unroll(encoder_embedding: torch.Tensor, tokenized_length: int) -> torch.Tensor:
    """``AutoencodingMixer.forward``'s unroll (mixer_autoencoder.py lines 186-197), transcribed: ``(B, 1, dim)`` ->
    ``(B, tokenized_length, dim // 2)`` before the shared projection."""
    dim = encoder_embedding.shape[-1]
    embedding_stack = []
    for i in range(tokenized_length):
        i %= dim
        sliding_window = encoder_embedding[..., i : i + dim // 2]
        if i + dim // 2 > dim:
            residual = i + dim // 2 - dim
            sliding_window = torch.cat((sliding_window, encoder_embedding[..., :residual]), dim=2)
        embedding_stack.append(sliding_window)
    return torch.cat(embedding_stack, dim=1)


@torch.no_grad()
def test_projected_unroll_is_the_seeds_up_projection_then_sliding_window():
    # n_ctx > hidden_size, so the window wraps around and positions repeat every hidden_size as in the seed
    config = MixerAutoencoderConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, n_ctx=20, embedding_dim=4,
                                    decoder_input="unroll", unroll_source="projected")
    model = MixerAutoencoder(config).eval()
    assert config.unroll_window == 4  # the seed's dim // 2 of the full width
    assert model.bottleneck_up.weight.shape == (8, 4) and model.up.weight.shape == (8, 4)
    embedding = torch.randn(3, 4)
    expected = model.up(seed_unroll(model.bottleneck_up(embedding)[:, None], 20))
    torch.testing.assert_close(model.decoder_inputs(embedding), expected, rtol=0, atol=0)


@torch.no_grad()
def test_embedding_unroll_slides_over_the_bottlenecked_vector_and_projected_over_the_full_width():
    torch.manual_seed(0)
    embedding_ae = MixerAutoencoder(autoencoder_config("unroll", embedding_dim=8)).eval()
    projected_ae = MixerAutoencoder(autoencoder_config("unroll_projected")).eval()
    embedding = torch.randn(2, 8)
    slices = embedding_ae.decoder_inputs(embedding)  # inputs repeat every embedding_dim = 8 positions
    torch.testing.assert_close(slices[:, 0], slices[:, 8], rtol=0, atol=0)
    projected = projected_ae.decoder_inputs(embedding)  # every one of the 16 positions differs (period 32)
    assert not torch.allclose(projected[:, 0], projected[:, 8])
    assert embedding_ae.bottleneck_up is None and projected_ae.config.unroll_window == TINY["hidden_size"] // 2


def test_without_a_bottleneck_both_unroll_sources_build_the_same_model():
    models = []
    for source in ("embedding", "projected"):
        torch.manual_seed(0)
        models.append(MixerAutoencoder(autoencoder_config("unroll", unroll_source=source)).eval())
    first, second = (model.state_dict() for model in models)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    ids = random_ids(2, 16)
    with torch.no_grad():
        assert torch.equal(models[0](ids).logits, models[1](ids).logits)


# ----- 2. encoder and decoder mixing apart ------------------------------------------------------------------------


def test_each_stack_gets_its_own_mixing_setting():
    model = MixerAutoencoder(autoencoder_config("per_stack_mixing"))
    assert [(m.heads, m.kernel_size) for m in mixers(model.encoder.stack)] == [(0, 3)] * 2
    assert [(m.heads, m.kernel_size) for m in mixers(model.decoder)] == [(4, 1)] * 2
    memory = MemoryMixerForCausalLM(memory_config("past_per_stack_mixing", mixer_heads=2))
    assert [(m.heads, m.kernel_size) for m in mixers(memory.encoder.stack)] == [(2, 3)] * 2  # heads: the shared
    assert [(m.heads, m.kernel_size) for m in mixers(memory.decoder)] == [(4, 1)] * 2


def test_unset_stack_settings_are_the_shared_ones():
    """None means the shared setting, so old configs (which have no per-stack fields) build the same model."""
    built = []
    for settings in ({"mixer_heads": 4, "mixer_kernel_size": 3},
                     {"mixer_heads": 4, "mixer_kernel_size": 3, "encoder_mixer_heads": 4, "decoder_mixer_heads": 4,
                      "encoder_mixer_kernel_size": 3, "decoder_mixer_kernel_size": 3}):
        torch.manual_seed(0)
        built.append(MemoryMixerForCausalLM(MemoryMixerConfig(**TINY, **settings)).state_dict())
    assert built[0].keys() == built[1].keys() and all(torch.equal(built[0][k], built[1][k]) for k in built[0])


def test_build_stack_takes_the_mixing_explicitly():
    config = MixerConfig(**TINY, mixer_heads=4, mixer_kernel_size=3)
    with pytest.raises(TypeError, match="mixer_heads"):
        build_stack("mixer", 32, 1, 16, True, config)
    stack = build_stack("mixer", 32, 1, 16, True, config, mixer_heads=0, mixer_kernel_size=1)  # not the config's
    assert [(m.heads, m.kernel_size) for m in mixers(stack)] == [(0, 1)]


@pytest.mark.parametrize("config_class,settings,message", [
    (MixerAutoencoderConfig, {"decoder_hidden_size": 16, "decoder_mixer_heads": 3},
     r"decoder_mixer_heads=3 must divide decoder_hidden_size=16"),
    (MixerAutoencoderConfig, {"encoder_mixer_kernel_size": 0}, r"encoder_mixer_kernel_size=0 must be a positive"),
    (MixerAutoencoderConfig, {"decoder_mixer_heads": -2}, r"decoder_mixer_heads=-2 must be an integer >= 0"),
    (MixerAutoencoderConfig, {"mixer_heads": 3, "decoder_mixer_heads": 0}, r"mixer_heads=3 must divide hidden_size"),
    (MemoryMixerConfig, {"encoder_hidden_size": 16, "encoder_mixer_heads": 5},
     r"encoder_mixer_heads=5 must divide encoder_hidden_size=16"),
    (MemoryMixerConfig, {"decoder_mixer_kernel_size": 2.5}, r"decoder_mixer_kernel_size=2.5 must be a positive"),
])
def test_bad_stack_mixing_names_the_field(config_class, settings, message):
    with pytest.raises(ValueError, match=message):
        config_class(**{**TINY, **settings})


def test_from_autoencoder_copies_the_encoders_mixing_and_takes_the_decoders_from_overrides(tmp_path):
    """The seed's memory recipe: an autoencoder encoder with k > 1 (k = 16 there), and a flat decoder."""
    torch.manual_seed(0)
    autoencoder = MixerAutoencoder(autoencoder_config("per_stack_mixing"))
    memory = MemoryMixerForCausalLM.from_autoencoder(autoencoder, decoder_mixer_heads=0, decoder_mixer_kernel_size=1)
    assert (memory.config.encoder_mixer_heads, memory.config.encoder_mixer_kernel_size) == (0, 3)
    assert [(m.heads, m.kernel_size) for m in mixers(memory.decoder)] == [(0, 1)] * 2
    for name, tensor in autoencoder.encoder.state_dict().items():
        assert torch.equal(memory.encoder.state_dict()[name], tensor)
    # without overrides the decoder mixes as the autoencoder's decoder does (heads 4); a shared override applies
    # to the decoder, setting by setting
    assert [m.heads for m in mixers(MemoryMixerForCausalLM.from_autoencoder(autoencoder).decoder)] == [4, 4]
    shared = MemoryMixerForCausalLM.from_autoencoder(autoencoder, mixer_kernel_size=2)
    assert [(m.heads, m.kernel_size) for m in mixers(shared.decoder)] == [(4, 2)] * 2
    assert [m.kernel_size for m in mixers(shared.encoder.stack)] == [3, 3]
    # the encoder's own settings stay fixed
    with pytest.raises(ValueError, match="encoder_mixer_kernel_size"):
        MemoryMixerForCausalLM.from_autoencoder(autoencoder, encoder_mixer_kernel_size=1)
    # and a saved memory model keeps them
    memory.save_pretrained(tmp_path)
    loaded = MemoryMixerForCausalLM.from_pretrained(tmp_path)
    assert [m.kernel_size for m in mixers(loaded.encoder.stack)] == [3, 3]


# ----- 3. the seed's recurrent baseline ---------------------------------------------------------------------------


def seed_recurrent_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """``RecurrentMemoryMixer.forward`` (mixer_autoencoder.py lines 438-467), transcribed with the model's own
    modules (memmix's final norm before the head added: the seed's mixers have none). Full chunks only."""
    length = model.config.n_ctx
    outputs = []
    for c in range(input_ids.shape[1] // length):
        decoder_embeds = model.embed_tokens(input_ids[:, c * length : (c + 1) * length])
        if c == 0:
            encoder_embedding = torch.zeros((input_ids.shape[0], 1, model.config.hidden_size))
        decoder_embeds[:, -1, :] = encoder_embedding.squeeze(1)
        x = torch.cat((encoder_embedding, decoder_embeds), dim=1)
        x = model.decoder(x)
        encoder_embedding = x[:, -1, :].unsqueeze(1)
        outputs.append(model.lm_head(model.norm(x[:, 1:])))
    return torch.cat(outputs, dim=1)


@torch.no_grad()
def test_seed_recurrent_is_the_seeds_recurrent_memory_mixer():
    torch.manual_seed(0)
    model = MemoryMixerForCausalLM(memory_config("recurrent_seed")).eval()
    ids = random_ids(2, 48)
    torch.testing.assert_close(model(ids).logits, seed_recurrent_logits(model, ids), rtol=0, atol=1e-6)
    names = {name for name, _ in model.named_parameters()}
    assert not any(name.startswith(("recurrent_proj", "initial_memory", "encoder")) for name in names)


@torch.no_grad()
def test_seed_recurrent_never_reads_a_chunks_last_token():
    """Its slot holds the memory, so the last token of a full chunk is only ever a target."""
    torch.manual_seed(0)
    model = MemoryMixerForCausalLM(memory_config("recurrent_seed")).eval()
    ids = random_ids(2, 48)
    changed = ids.clone()
    changed[:, 15] = (ids[:, 15] + 1) % TINY["vocab_size"]
    torch.testing.assert_close(model(changed).logits, model(ids).logits, rtol=0, atol=0)
    changed[:, 14] = (ids[:, 14] + 1) % TINY["vocab_size"]  # any other token is read
    assert not torch.allclose(model(changed).logits[:, 14:], model(ids).logits[:, 14:])


@torch.no_grad()
def test_seed_recurrent_generates_what_its_forward_predicts():
    torch.manual_seed(0)
    model = MemoryMixerForCausalLM(memory_config("recurrent_seed")).eval()
    generated = model.generate(random_ids(2, 5), max_new_tokens=59, do_sample=False)  # crosses 3 chunk ends
    assert torch.equal(model(generated).logits[:, 4:-1].argmax(-1), generated[:, 5:])


@pytest.mark.parametrize("settings,message", [
    ({"memory_mode": "recurrent", "recurrent_style": "seed", "combine": "sum"}, r"recurrent_style='seed'.*combine"),
    ({"recurrent_style": "seed"}, r"recurrent_style='seed' only applies to memory_mode='recurrent'"),
    ({"memory_mode": "recurrent", "recurrent_style": "rmt"}, r"recurrent_style='rmt'.*\['projected', 'seed'\]"),
])
def test_bad_recurrent_style_names_the_value(settings, message):
    with pytest.raises(ValueError, match=message):
        MemoryMixerConfig(**TINY, **settings)


# ----- 4. QAT noise of a fixed absolute step ----------------------------------------------------------------------


def test_noise_scale_adds_the_seeds_uncentred_uniform_noise_after_down():
    torch.manual_seed(0)
    model = MixerAutoencoder(autoencoder_config("noise_scale"))
    ids = random_ids(64, 16)
    with torch.no_grad():
        clean = model.eval().encoder(ids)
        torch.manual_seed(5)
        noisy = model.train().encoder(ids)
        torch.manual_seed(5)
        seed = clean + torch.rand(clean.shape) * 2**-3  # the seed's line, after down
    torch.testing.assert_close(noisy, seed, rtol=0, atol=1e-6)
    noise = noisy - clean
    assert noise.min() >= -1e-6 and noise.max() < 0.125 + 1e-6
    assert abs(noise.mean().item() - 0.0625) < 0.005  # not centred: mean scale / 2
    assert torch.equal(model.eval().encoder(ids), clean)  # evaluation reads the embedding without noise


def test_noise_scale_reaches_memories_in_training_only():
    torch.manual_seed(0)
    model = MemoryMixerForCausalLM(memory_config("past_noise_scale"))
    chunks = random_ids(2, 32).view(2, 2, 16)
    with torch.no_grad():
        clean = model.eval().encode_chunks(chunks)
        noise = model.train().encode_chunks(chunks) - clean
    assert noise.min() >= -1e-6 and noise.max() < 0.125 + 1e-6 and noise.abs().max() > 0.01


@pytest.mark.parametrize("settings,message", [
    ({"embedding_noise_scale": 0.0}, r"embedding_noise_scale=0.0 must be a finite number > 0"),
    ({"embedding_noise_scale": -0.125}, r"embedding_noise_scale=-0.125"),
    ({"embedding_noise_scale": math.inf}, r"embedding_noise_scale=inf"),
    ({"embedding_noise_scale": 0.125, "embedding_noise": "int8"}, r"embedding_noise='int8' and embedding_noise_scale"),
])
def test_bad_noise_scale_names_the_value(settings, message):
    with pytest.raises(ValueError, match=message):
        MixerAutoencoderConfig(**TINY, **settings)


# ----- 5. the no-memory baseline with the memory decoder's layout -------------------------------------------------


@pytest.mark.parametrize("positions", ["fixed", "variable"])
@torch.no_grad()
def test_no_memory_baseline_is_the_past_decoder_reading_empty_slots(positions):
    torch.manual_seed(0)
    past = MemoryMixerForCausalLM(memory_config("past_fixed", memory_positions=positions)).eval()
    baseline = MemoryMixerForCausalLM(memory_config("none_fixed", memory_positions=positions)).eval()
    assert not any(name.startswith(("encoder", "memory_proj")) for name in baseline.state_dict())
    assert baseline.config.decoder_n_ctx == past.config.decoder_n_ctx == 16 + 3
    decoder_only = {k: v for k, v in past.state_dict().items() if not k.startswith("encoder")}
    baseline.load_state_dict(decoder_only, strict=True)  # the same parameters, but no encoder
    ids = random_ids(2, 64)
    expected = past(ids, without_memories=True).logits
    torch.testing.assert_close(baseline(ids).logits, expected, rtol=0, atol=0)
    assert not torch.allclose(past(ids).logits[:, 16:], expected[:, 16:])  # the past model does read memories


@torch.no_grad()
def test_no_memory_baseline_generates_what_its_forward_predicts():
    torch.manual_seed(0)
    model = MemoryMixerForCausalLM(memory_config("none_fixed")).eval()
    generated = model.generate(random_ids(2, 5), max_new_tokens=59, do_sample=False)
    assert torch.equal(model(generated).logits[:, 4:-1].argmax(-1), generated[:, 5:])


def test_no_memory_baseline_has_no_encoder_to_freeze_or_take():
    with pytest.raises(ValueError, match="freeze_encoder=True, but memory_mode='none'"):
        MemoryMixerConfig(**TINY, memory_mode="none", freeze_encoder=True)
    with pytest.raises(ValueError, match="memory_mode='none' has no encoder"):
        MemoryMixerForCausalLM.from_autoencoder(MixerAutoencoder(autoencoder_config("repeat")), memory_mode="none")


def test_no_memory_baseline_trains_with_the_training_script_and_generates(tmp_path):
    shared = train_small_tokenizer(tmp_path / "shared")
    preset = tiny_preset("memory", {**TINY_MODEL, "max_memories": 2, "memory_mode": "none"}, builtin_data(shared),
                         tmp_path / "run", max_steps=3, eval_every=3, save_every=3, eval_batches=2)
    metrics = run_training(resolve_config(preset))
    assert math.isfinite(metrics["val_loss"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "export", trust_remote_code=True).eval()
    assert model.config.memory_mode == "none" and getattr(model, "encoder", None) is None
    with torch.no_grad():
        generated = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=20, do_sample=False)
    assert generated.shape == (1, 23)  # crosses a chunk end (n_ctx 16)


# ----- LoRA knows the new layouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("family,variant", [("autoencoder", "unroll_projected"), ("memory", "recurrent_seed"),
                                            ("memory", "none_fixed"), ("memory", "past_per_stack_mixing")])
def test_recommended_lora_targets_exist_in_the_new_layouts(family, variant):
    from peft import get_peft_model

    from memmix_peft import recommended_lora_config

    torch.manual_seed(0)
    if family == "autoencoder":
        model = MixerAutoencoder(autoencoder_config(variant))
    else:
        model = MemoryMixerForCausalLM(memory_config(variant))
    config = recommended_lora_config(model, rank=2, adapt_mixing=variant not in ("past_per_stack_mixing", "unroll_projected"))
    parameters = dict(model.named_parameters())  # PEFT itself ignores targets that do not exist
    assert all(name in parameters for name in config.target_parameters or []), config.target_parameters
    assert "recurrent_proj" not in config.target_modules  # none of these models has one
    if variant in ("none_fixed", "recurrent_seed"):
        assert "encoder" not in config.target_modules
    adapted = get_peft_model(model, config)
    targets = {name.rsplit(".lora_A", 1)[0] for name, _ in adapted.named_parameters() if ".lora_A" in name}
    if variant == "unroll_projected":
        assert any(name.endswith("bottleneck_up") for name in targets)


def test_lora_refuses_adapting_a_conv_stack_naming_its_own_field():
    from memmix_peft import memory_lora_config, recommended_lora_config

    config = MemoryMixerConfig(**TINY, encoder_mixer_kernel_size=3)
    with pytest.raises(ValueError, match="encoder_mixer_kernel_size=3"):
        recommended_lora_config(config, adapt_mixing=True)
    memory_lora_config(config, adapt_mixing=True)  # the decoder alone is flat: its mixing can be adapted


# ----- 6. initialization ------------------------------------------------------------------------------------------


def test_pytorch_init_is_pytorchs_default_and_memmix_init_stays():
    torch.manual_seed(0)
    pytorch = MixerForCausalLM(MixerConfig(**TINY, init_style="pytorch", intermediate_size=256))
    memmix = MixerForCausalLM(MixerConfig(**TINY, intermediate_size=256))
    assert abs(pytorch.model.embed_tokens.weight.std().item() - 1.0) < 0.05  # N(0, 1)
    assert abs(memmix.model.embed_tokens.weight.std().item() - 0.02) < 0.002  # N(0, 0.02)
    up = pytorch.model.stack.layers[0].ff.up  # nn.Linear(32, 256): U(+-1/sqrt(32)), weight and bias
    bound = 1 / math.sqrt(32)
    for tensor in (up.weight, up.bias):
        assert tensor.abs().max() <= bound and tensor.abs().max() > 0.9 * bound
    assert abs(up.weight.std().item() - bound / math.sqrt(3)) < 0.01
    assert torch.count_nonzero(memmix.model.stack.layers[0].ff.up.bias) == 0
    # the mixing matrices follow the seed's Conv1d default in both styles
    for model in (pytorch, memmix):
        weight = model.model.stack.layers[0].mixing.weight
        assert weight.abs().max() <= 1 / math.sqrt(16) and weight.abs().max() > 0.2


def test_pytorch_init_leaves_llama_blocks_at_transformers_init():
    """The seed's transformer stacks are transformers' LlamaModel, which initializes itself with std 0.02."""
    torch.manual_seed(0)
    model = MemoryMixerForCausalLM(MemoryMixerConfig(**TINY, init_style="pytorch", decoder_type="transformer",
                                                     intermediate_size=256))
    assert abs(model.decoder.layers[0].mlp.up_proj.weight.std().item() - 0.02) < 0.003
    assert abs(model.embed_tokens.weight.std().item() - 1.0) < 0.05
    assert abs(model.encoder.embed_tokens.weight.std().item() - 1.0) < 0.05


def test_pytorch_init_survives_saving_and_loading(tmp_path):
    torch.manual_seed(0)
    model = MixerAutoencoder(autoencoder_config("pytorch_init"))
    model.save_pretrained(tmp_path)
    loaded = MixerAutoencoder.from_pretrained(tmp_path)  # loading never re-initializes loaded weights
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_bad_init_style_names_the_value():
    with pytest.raises(ValueError, match=r"init_style='xavier'.*\['memmix', 'pytorch'\]"):
        MixerConfig(**TINY, init_style="xavier")
