"""Property-based battery: random small valid configs of every family and variant, random batches, padding and
lengths, checked against the properties every memmix model must have.

* causality: changing the tokens after ``t`` never changes an output at a position ``<= t``;
* padding: a left- or right-padded row gives the logits of the row alone, and the padded loss equals the
  loss of the rows alone;
* cache: prefill plus one-token steps (ragged left-padded prompts included) equals the full forward;
* checkpoints: save, then load in a fresh process without memmix importable, gives the same logits;
* bad input: random invalid configs and inputs raise ``ValueError`` naming the field or the limit.

The default profile draws few examples (derandomized, about a minute on 2 CPU cores); ``--runslow`` draws
many more with fresh randomness (see ``conftest.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from modeling_memmix import (
    MemoryMixerConfig,
    MemoryMixerForCausalLM,
    MixerAutoencoder,
    MixerAutoencoderConfig,
    MixerConfig,
    MixerForCausalLM,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

VOCAB = 50
TOLERANCE = dict(atol=2e-5, rtol=1e-5)


# ----- strategies ----------------------------------------------------------------------------------------------


@st.composite
def mixing_settings(draw, width: int) -> dict:
    heads = draw(st.sampled_from([h for h in (0, 2, 4) if h == 0 or width % h == 0]))
    return {"mixer_heads": heads, "mixer_kernel_size": draw(st.sampled_from([1, 2, 3]))}


@st.composite
def stack_mixing(draw, stack: str, width: int) -> dict:
    """Often nothing (the stack takes the shared setting), else the stack's own mixing setting."""
    if draw(st.booleans()):
        return {}
    return {f"{stack}_{name}": value for name, value in draw(mixing_settings(width)).items()}


@st.composite
def core_settings(draw) -> dict:
    width = draw(st.sampled_from([16, 32]))
    return {"vocab_size": VOCAB, "hidden_size": width, "num_hidden_layers": draw(st.integers(1, 2)),
            "n_ctx": draw(st.integers(4, 12)), "num_attention_heads": 4, **draw(mixing_settings(width))}


@st.composite
def mixer_configs(draw) -> MixerConfig:
    return MixerConfig(**draw(core_settings()), block_type=draw(st.sampled_from(["mixer", "mixer", "transformer"])))


@st.composite
def memory_configs(draw, causal_only: bool = False) -> MemoryMixerConfig:
    core = draw(core_settings())
    modes = ["past", "recurrent", "none"] if causal_only else ["past", "recurrent", "none", "oracle"]
    mode = draw(st.sampled_from(modes))
    combine = draw(st.sampled_from(["token", "token", "concat", "sum"]))
    max_memories = 1 if mode in ("past", "none") and combine != "token" else draw(st.integers(1, 3))
    recurrent_style = "projected"
    if mode == "recurrent" and combine == "token":
        recurrent_style = draw(st.sampled_from(["projected", "seed"]))
    encoder_width = draw(st.sampled_from([core["hidden_size"], 16]))
    if core["mixer_heads"] and encoder_width % core["mixer_heads"]:
        encoder_width = core["hidden_size"]
    return MemoryMixerConfig(
        **core, memory_mode=mode, combine=combine, max_memories=max_memories, recurrent_style=recurrent_style,
        **draw(stack_mixing("encoder", encoder_width)), **draw(stack_mixing("decoder", core["hidden_size"])),
        memory_positions=draw(st.sampled_from(["fixed", "variable"])), encoder_hidden_size=encoder_width,
        memory_dim=draw(st.sampled_from([None, 8])), encoder_type=draw(st.sampled_from(["mixer", "transformer"])),
        decoder_type=draw(st.sampled_from(["mixer", "mixer", "transformer"])),
    )


@st.composite
def autoencoder_configs(draw) -> MixerAutoencoderConfig:
    core = draw(core_settings())
    embedding_dim = draw(st.sampled_from([None, 8]))
    decoder_type = draw(st.sampled_from(["mixer", "transformer"]))
    decoder_input = draw(st.sampled_from(["repeat", "unroll"]))
    unroll_source = draw(st.sampled_from(["embedding", "projected"])) if decoder_input == "unroll" else "embedding"
    return MixerAutoencoderConfig(
        **core, embedding_dim=embedding_dim, decoder_input=decoder_input, unroll_source=unroll_source,
        encoder_type=draw(st.sampled_from(["mixer", "transformer"])), decoder_type=decoder_type,
        encoder_causal=draw(st.booleans()), decoder_causal=draw(st.booleans()),
        **draw(stack_mixing("encoder", core["hidden_size"])), **draw(stack_mixing("decoder", core["hidden_size"])),
    )


def causal_configs(causal_memory_only: bool = True):
    return st.one_of(mixer_configs(), memory_configs(causal_only=causal_memory_only))


def build(config):
    torch.manual_seed(0)
    model_class = {MixerConfig: MixerForCausalLM, MemoryMixerConfig: MemoryMixerForCausalLM,
                   MixerAutoencoderConfig: MixerAutoencoder}[type(config)]
    return model_class(config).eval()


def token_rows(draw, lengths: list[int]) -> list[torch.Tensor]:
    return [torch.tensor(draw(st.lists(st.integers(0, VOCAB - 1), min_size=n, max_size=n))) for n in lengths]


def pad(rows: list[torch.Tensor], sides: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, (row, side) in enumerate(zip(rows, sides, strict=True)):
        columns = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[b, columns], mask[b, columns] = row, 1
    return ids, mask


# ----- properties ----------------------------------------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=causal_configs(), data=st.data())
@torch.no_grad()
def test_outputs_never_depend_on_later_tokens(config, data):
    model = build(config)
    length = data.draw(st.integers(2, config.max_sequence_length), label="length")
    batch = data.draw(st.integers(1, 3), label="batch")
    ids = torch.stack(token_rows(data.draw, [length] * batch))
    t = data.draw(st.integers(0, length - 2), label="t")
    changed = ids.clone()
    changed[:, t + 1 :] = (ids[:, t + 1 :] + data.draw(st.integers(1, VOCAB - 1), label="shift")) % VOCAB
    torch.testing.assert_close(model(changed).logits[:, : t + 1], model(ids).logits[:, : t + 1], **TOLERANCE)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=causal_configs(causal_memory_only=False), data=st.data())
@torch.no_grad()
def test_padded_batches_equal_their_rows_alone(config, data):
    model = build(config)
    batch = data.draw(st.integers(1, 3), label="batch")
    lengths = data.draw(st.lists(st.integers(1, config.max_sequence_length), min_size=batch, max_size=batch))
    sides = data.draw(st.lists(st.sampled_from(["left", "right"]), min_size=batch, max_size=batch))
    assume(len(set(sides)) == 1 or len(set(lengths)) == 1)  # one batch is padded on one side
    rows = token_rows(data.draw, lengths)
    ids, mask = pad(rows, sides)
    labels = ids.masked_fill(mask == 0, -100)
    padded = model(ids, attention_mask=mask, labels=labels)
    total, count = 0.0, 0
    for b, row in enumerate(rows):
        alone = model(row[None], labels=row[None])
        torch.testing.assert_close(padded.logits[b, mask[b].bool()], alone.logits[0], **TOLERANCE)
        total, count = total + alone.loss_sum, count + int(alone.num_tokens)
    assert int(padded.num_tokens) == count
    torch.testing.assert_close(padded.loss_sum, torch.as_tensor(total, dtype=torch.float32), atol=1e-4, rtol=1e-5)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=causal_configs(), data=st.data())
@torch.no_grad()
def test_cached_steps_equal_the_full_forward(config, data):
    model = build(config)
    batch = data.draw(st.integers(1, 3), label="batch")
    if config.model_type == "memory_mixer" and config.decoder_type == "transformer":
        prompt_lengths = [data.draw(st.integers(1, config.max_sequence_length - 1), label="prompt")] * batch
    else:  # ragged prompts, left padded as generate() wants
        prompt_lengths = data.draw(st.lists(st.integers(1, config.max_sequence_length - 1), min_size=batch,
                                            max_size=batch), label="prompts")
    steps = data.draw(st.integers(1, config.max_sequence_length - max(prompt_lengths)), label="steps")
    rows = token_rows(data.draw, [n + steps for n in prompt_lengths])
    ids, mask = pad([row[: n] for row, n in zip(rows, prompt_lengths, strict=True)], ["left"] * batch)
    output = model(ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
    logits, cache = [output.logits[:, -1]], output.cache
    for step in range(steps):
        new = torch.stack([row[n + step] for row, n in zip(rows, prompt_lengths, strict=True)])[:, None]
        mask = torch.cat([mask, torch.ones_like(new)], dim=1)
        output = model(new, attention_mask=mask, cache=cache)
        logits.append(output.logits[:, -1])
    cached = torch.stack(logits, dim=1)  # (B, steps + 1, V): predictions after the prompt and each step
    for b, (row, n) in enumerate(zip(rows, prompt_lengths, strict=True)):
        full = model(row[None]).logits[0, n - 1 :]
        torch.testing.assert_close(cached[b], full, **TOLERANCE)


FRESH_PROCESS_CHECK = textwrap.dedent("""
    import json, sys
    sys.modules["modeling_memmix"] = None  # only the checkpoint's remote code may run
    import torch
    from transformers import AutoModel, AutoModelForCausalLM
    for case in json.loads(sys.argv[1]):
        auto = AutoModelForCausalLM if case["causal"] else AutoModel
        model = auto.from_pretrained(case["folder"], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model)
        with torch.no_grad():
            logits = model(torch.tensor(case["ids"])).logits
        expected = torch.tensor(case["logits"])
        assert torch.allclose(logits, expected, atol=1e-5, rtol=1e-5), (case["folder"], (logits - expected).abs().max())
    print("ok")
""")


@settings(max_examples=2, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
@given(configs=st.tuples(mixer_configs(), memory_configs(), autoencoder_configs()), data=st.data())
@torch.no_grad()
def test_saved_models_load_in_a_fresh_process_with_the_same_logits(configs, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    cases = []
    for index, config in enumerate(configs):
        model = build(config)
        causal = config.model_type != "mixer_autoencoder"
        length = data.draw(st.integers(1, config.max_sequence_length)) if causal else config.n_ctx
        ids = torch.stack(token_rows(data.draw, [length] * 2))
        model.save_pretrained(folder / str(index))
        cases.append({"folder": str(folder / str(index)), "causal": causal, "ids": ids.tolist(),
                      "logits": model(ids).logits.tolist()})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(folder / "hf_home"))
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS_CHECK, json.dumps(cases)], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


# ----- bad configs and inputs ----------------------------------------------------------------------------------

CONFIG_CLASSES = {"mixer": MixerConfig, "autoencoder": MixerAutoencoderConfig, "memory": MemoryMixerConfig}
POSITIVE_FIELDS = {
    "mixer": ["vocab_size", "hidden_size", "num_hidden_layers", "n_ctx", "intermediate_size", "mixer_kernel_size",
              "num_attention_heads"],
    "autoencoder": ["encoder_layers", "decoder_layers", "embedding_dim", "decoder_hidden_size", "unroll_window",
                    "encoder_mixer_kernel_size", "decoder_mixer_kernel_size"],
    "memory": ["max_memories", "encoder_hidden_size", "encoder_layers", "memory_dim", "encoder_mixer_kernel_size",
               "decoder_mixer_kernel_size"],
}
CHOICE_FIELDS = {
    "mixer": ["block_type", "embedding_quantization", "embedding_noise", "embedding_noise_position", "init_style"],
    "autoencoder": ["encoder_type", "decoder_type", "decoder_input", "unroll_source"],
    "memory": ["memory_mode", "combine", "memory_positions", "encoder_type", "decoder_type", "recurrent_style"],
}
VALID = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, n_ctx=8, num_attention_heads=4)


@st.composite
def invalid_settings(draw) -> tuple[type, str, dict]:
    family = draw(st.sampled_from(list(CONFIG_CLASSES)))
    kind = draw(st.sampled_from(["positive", "choice"]))
    shared = POSITIVE_FIELDS["mixer"] if kind == "positive" else CHOICE_FIELDS["mixer"][1:]
    own = POSITIVE_FIELDS[family] if kind == "positive" else CHOICE_FIELDS[family]
    field = draw(st.sampled_from(sorted(set(shared + (own if family != "mixer" else [])) | set(own))))
    if kind == "positive":
        value = draw(st.one_of(st.integers(-5, 0), st.just("8"), st.just(2.5), st.just(True)))
    else:
        value = draw(st.text(alphabet="abcxyz_", min_size=1, max_size=8))
    return CONFIG_CLASSES[family], field, {**VALID, field: value}


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(case=invalid_settings())
def test_invalid_configs_raise_a_value_error_naming_the_field(case):
    config_class, field, settings_ = case
    with pytest.raises(ValueError, match=field):
        config_class(**settings_)


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=st.one_of(mixer_configs(), memory_configs(), autoencoder_configs()), data=st.data())
@torch.no_grad()
def test_invalid_inputs_raise_a_value_error_naming_the_limit(config, data):
    model = build(config)
    limit = config.n_ctx if config.model_type == "mixer_autoencoder" else config.max_sequence_length
    problem = data.draw(st.sampled_from(["too_long", "id_too_large", "negative_id", "one_dim", "float"]))
    ids = torch.randint(0, VOCAB, (2, limit))
    if problem == "too_long":
        ids, message = torch.randint(0, VOCAB, (2, limit + data.draw(st.integers(1, 5)))), f"at most {limit}"
    elif problem == "id_too_large":
        ids[1, data.draw(st.integers(0, limit - 1))] = VOCAB + data.draw(st.integers(0, 10))
        message = rf"outside the vocabulary \[0, {VOCAB}\)"
    elif problem == "negative_id":
        ids[0, 0], message = -1, "token id -1"
    elif problem == "one_dim":
        ids, message = ids[0], r"shape \(batch, length\)"
    else:
        ids, message = ids.float(), "integer token ids"
    with pytest.raises(ValueError, match=message):
        model(ids)
