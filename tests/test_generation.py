"""Generation: the incremental cache equals the full forward for every mixer and memory
variant, generate() reuses the cache (transformers 5.24 `cache=` / `outputs.cache`), ragged batches equal
single prompts, the memory model crosses chunk boundaries exactly like its training-time forward, all the
usual generate modes work, length limits fail before any work, and a saved checkpoint generates through
`pipeline("text-generation")` in a process where `modeling_memmix` is not importable.

Run: ``python -m pytest -q tests/test_generation.py`` (tiny models, CPU, well under a minute).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers.generation.streamers import BaseStreamer
from variants import CACHED_MEMORY_VARIANTS as MEMORY_VARIANTS
from variants import CACHED_MIXER_VARIANTS as MIXER_VARIANTS
from variants import TINY_NO_CTX as TINY
from variants import wake_memory_read

from modeling_memmix import MemoryMixerConfig, MemoryMixerForCausalLM, MixerConfig, MixerForCausalLM
from modeling_memmix.generation_memmix import MemmixCache, sliding_keep

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def mixer(variant: str = "flat", n_ctx: int = 16, seed: int = 0) -> MixerForCausalLM:
    torch.manual_seed(seed)
    return MixerForCausalLM(MixerConfig(**TINY, n_ctx=n_ctx, **MIXER_VARIANTS[variant])).eval()


def memory_model(variant: str = "past_fixed", seed: int = 0) -> MemoryMixerForCausalLM:
    torch.manual_seed(seed)
    settings = {**TINY, "n_ctx": 8, "max_memories": 2, **MEMORY_VARIANTS[variant]}
    return wake_memory_read(MemoryMixerForCausalLM(MemoryMixerConfig(**settings)).eval())


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 100, (batch, length), generator=torch.Generator().manual_seed(seed))


def incremental_logits(model, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """Prefill ``prompt`` tokens, then feed the rest one token at a time through the returned cache."""
    output = model(ids[:, :prompt], use_cache=True, logits_to_keep=1)
    parts, cache = [output.logits], output.cache
    for column in range(prompt, ids.shape[1]):
        output = model(ids[:, column : column + 1], cache=cache)
        assert output.cache is cache
        parts.append(output.logits)
    return torch.cat(parts, dim=1)


def left_pad(prompts: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def greedy(model, ids, **kwargs) -> torch.Tensor:
    return model.generate(ids, do_sample=False, pad_token_id=0, **kwargs)


# ----- 1. cache correctness ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", MIXER_VARIANTS)
@torch.no_grad()
def test_mixer_cached_logits_equal_full_forward(variant):
    model = mixer(variant)
    ids = random_ids(3, 16)
    full = model(ids).logits
    cached = incremental_logits(model, ids, prompt=5)
    torch.testing.assert_close(cached, full[:, 4:], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", MEMORY_VARIANTS)
@torch.no_grad()
def test_memory_cached_logits_equal_full_forward_across_chunks(variant):
    model = memory_model(variant)
    ids = random_ids(2, model.config.max_sequence_length)
    full = model(ids).logits
    cached = incremental_logits(model, ids, prompt=5)  # crosses every chunk boundary one token at a time
    torch.testing.assert_close(cached, full[:, 4:], atol=2e-5, rtol=1e-5)
    cut = ids.shape[1] - 5  # a prompt over more than one chunk: its earlier chunks are encoded at once
    prefill = model(ids[:, :cut], use_cache=True, logits_to_keep=1).logits
    torch.testing.assert_close(prefill[:, 0], full[:, cut - 1], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["flat", "heads_conv2", "transformer"])
@torch.no_grad()
def test_mixer_greedy_with_and_without_cache_identical(variant):
    model = mixer(variant)
    ids = random_ids(2, 4)
    with_cache = greedy(model, ids, max_new_tokens=12)
    assert with_cache.shape == (2, 16)
    assert torch.equal(with_cache, greedy(model, ids, max_new_tokens=12, use_cache=False))


@pytest.mark.parametrize("variant", ["past_fixed", "recurrent", "transformer_decoder"])
@torch.no_grad()
def test_memory_greedy_across_chunk_boundaries_equals_training_forward(variant):
    model = memory_model(variant)
    prompt = random_ids(2, 5)
    new = model.config.max_sequence_length - 5  # crosses two chunk boundaries while generating
    generated = greedy(model, prompt, max_new_tokens=new)
    assert torch.equal(generated, greedy(model, prompt, max_new_tokens=new, use_cache=False))
    # every generated token is the argmax of the training-time forward of the whole sequence
    logits = model(generated).logits
    assert torch.equal(logits[:, 4:-1].argmax(-1), generated[:, 5:])


class ForwardCounter:
    """Records the length of every input the model's forward sees and the cache it is given."""

    def __init__(self, model):
        self.lengths, self.caches = [], []
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.lengths.append(ids.shape[1])
        assert "past_key_values" not in kwargs
        self.caches.append(kwargs.get("cache"))


@pytest.mark.parametrize("build", [lambda: mixer("flat"), lambda: memory_model("past_fixed")])
@torch.no_grad()
def test_generate_reuses_the_cache(build):
    """Fails if the cache is not handed back (e.g. under the pre-5.24 name `past_key_values`): then each step
    would re-run the whole window (full-length inputs) or get no cache."""
    model = build()
    counter = ForwardCounter(model)
    greedy(model, random_ids(2, 6), max_new_tokens=10)
    counter.handle.remove()
    assert counter.lengths == [6] + [1] * 9  # one full-window forward (the prefill), then one token per step
    assert counter.caches[0] is None
    assert all(isinstance(cache, MemmixCache) for cache in counter.caches[1:])
    assert all(cache is counter.caches[1] for cache in counter.caches[1:])


# ----- 2. ragged batches ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [lambda: mixer("flat"), lambda: mixer("heads_conv2"), lambda: mixer("transformer"),
                                   lambda: memory_model("past_fixed"), lambda: memory_model("recurrent"),
                                   lambda: memory_model("past_variable")],
                         ids=["flat", "heads_conv2", "transformer", "mem_past", "mem_recurrent", "mem_variable"])
@torch.no_grad()
def test_ragged_batch_equals_single_prompts(build):
    model = build()
    limit = model.config.max_sequence_length
    prompts = [random_ids(1, n, seed=n)[0] for n in (3, 11, 7)]
    ids, mask = left_pad(prompts)
    new = min(limit - ids.shape[1], 10)
    batched = greedy(model, ids, attention_mask=mask, max_new_tokens=new)
    for row, prompt in enumerate(prompts):
        alone = greedy(model, prompt[None], max_new_tokens=new)
        assert torch.equal(batched[row, ids.shape[1] :], alone[0, len(prompt) :]), f"row {row} differs"
    assert torch.equal(batched, greedy(model, ids, attention_mask=mask, max_new_tokens=new, use_cache=False))


@torch.no_grad()
def test_left_padded_forward_runs_rows_from_position_zero():
    model = mixer("flat")
    prompts = [random_ids(1, 4, seed=4)[0], random_ids(1, 9, seed=9)[0]]
    ids, mask = left_pad(prompts)
    logits = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(logits[0, -4:], model(prompts[0][None]).logits[0], atol=2e-5, rtol=1e-5)


@torch.no_grad()
def test_right_padding_is_refused_for_generation():
    model = mixer("flat")
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="left padding"):
        model(random_ids(2, 4), attention_mask=mask, use_cache=True)


# ----- generate modes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [dict(do_sample=True, temperature=0.8), dict(do_sample=True, top_k=5),
                                      dict(do_sample=True, top_p=0.7)], ids=["temperature", "top_k", "top_p"])
@torch.no_grad()
def test_sampling_with_cache_equals_sampling_without(settings):
    model = mixer("flat")
    ids = random_ids(2, 3)
    torch.manual_seed(7)
    cached = model.generate(ids, max_new_tokens=10, num_return_sequences=2, pad_token_id=0, **settings)
    torch.manual_seed(7)
    uncached = model.generate(ids, max_new_tokens=10, num_return_sequences=2, pad_token_id=0, use_cache=False,
                              **settings)
    assert cached.shape == (4, 13)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("build", [lambda: mixer("heads_conv2"), lambda: mixer("transformer"),
                                   lambda: memory_model("past_fixed")], ids=["mixer", "transformer", "memory"])
@torch.no_grad()
def test_beam_search_reorders_the_cache(build):
    model = build()
    ids = random_ids(2, 4)
    settings = dict(num_beams=3, num_return_sequences=2, max_new_tokens=8, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, **settings)
    assert torch.equal(cached, model.generate(ids, use_cache=False, **settings))


@torch.no_grad()
def test_cache_batch_expansion_and_selection():
    model = mixer("heads")
    ids = random_ids(2, 6)
    cache = model(ids[:, :5], use_cache=True).cache
    cache.batch_repeat_interleave(2)
    expanded = ids.repeat_interleave(2, dim=0)
    step = model(expanded[:, 5:6], cache=cache).logits
    torch.testing.assert_close(step[:, 0], model(expanded).logits[:, 5], atol=2e-5, rtol=1e-5)
    cache.batch_select_indices(torch.tensor([3, 0]))
    assert cache.batch_size == 2 and cache.positions.tolist() == [6, 6]


class Collector(BaseStreamer):
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.reshape(-1))

    def end(self):
        self.ended = True


@torch.no_grad()
def test_eos_min_new_tokens_streamer_and_scores():
    model = mixer("flat")
    ids = random_ids(1, 4)
    free = greedy(model, ids, max_new_tokens=8)
    eos = int(free[0, 5])  # the second generated token
    stopped = greedy(model, ids, max_new_tokens=8, eos_token_id=eos)
    assert stopped.shape[1] == 6 and int(stopped[0, -1]) == eos
    held = greedy(model, ids, max_new_tokens=8, eos_token_id=eos, min_new_tokens=4)
    assert held.shape[1] >= 8 and eos not in held[0, 4:8].tolist()
    streamer = Collector()
    out = model.generate(ids, max_new_tokens=6, do_sample=False, streamer=streamer, pad_token_id=0,
                         return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert streamer.ended and torch.equal(torch.cat(streamer.chunks), out.sequences[0])
    assert len(out.scores) == 6 and out.scores[0].shape == (1, 100)
    assert isinstance(out.cache, MemmixCache)
    full = model(out.sequences).logits
    torch.testing.assert_close(torch.stack(out.logits, 1), full[:, 3:-1], atol=2e-5, rtol=1e-5)


# ----- 5. length limits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("build,limit", [(lambda: mixer("flat"), 16), (lambda: memory_model("past_fixed"), 24)])
@torch.no_grad()
def test_too_long_request_fails_before_any_work(build, limit):
    model = build()
    counter = ForwardCounter(model)
    with pytest.raises(ValueError, match=f"limit of {limit} tokens.*max_new_tokens <= {limit - 5}"):
        greedy(model, random_ids(1, 5), max_new_tokens=limit)
    with pytest.raises(ValueError, match=f"at most {limit}"):
        greedy(model, random_ids(1, limit + 1), max_new_tokens=1)
    assert counter.lengths == []
    counter.handle.remove()
    default = model.generate(random_ids(1, limit - 3), do_sample=False, pad_token_id=0)  # no length asked for
    assert default.shape[1] == limit


@torch.no_grad()
def test_oracle_memory_model_refuses_to_generate():
    torch.manual_seed(0)
    model = MemoryMixerForCausalLM(MemoryMixerConfig(**TINY, n_ctx=8, memory_mode="oracle")).eval()
    with pytest.raises(ValueError, match="oracle"):
        model.generate(random_ids(1, 4), max_new_tokens=2)


@torch.no_grad()
def test_mixer_sliding_window_restarts_on_newest_half():
    model = mixer("flat", n_ctx=8)
    prompt = random_ids(1, 6)
    generated = greedy(model, prompt, max_new_tokens=14, sliding_window=True)
    assert generated.shape == (1, 20)
    # reference: uncached forward of the documented window (restart on the newest n_ctx // 2 tokens when full)
    sequence, window_start = prompt[0].tolist(), 0
    while len(sequence) < 20:
        if len(sequence) - window_start > 8:
            window_start = len(sequence) - sliding_keep(8)
        logits = model(torch.tensor([sequence[window_start:]])).logits
        sequence.append(int(logits[0, -1].argmax()))
    assert generated[0].tolist() == sequence


@torch.no_grad()
def test_memory_sliding_window_drops_oldest_memory():
    model = memory_model("past_fixed")
    out = model.generate(random_ids(2, 30), max_new_tokens=12, do_sample=False, pad_token_id=0,
                         sliding_window=True, return_dict_in_generate=True)
    assert out.sequences.shape == (2, 42)  # 5 full chunks + 2 tokens, far past the 24-token limit
    assert out.cache.memory_counts.tolist() == [2, 2]
    assert out.cache.positions.max() <= model.config.decoder_n_ctx


# ----- 4. pipeline from a saved folder, without modeling_memmix --------------------------------------------------


def tiny_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=100, special_tokens=["<pad>", "<eos>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:60])
    tokenizer.train_from_iterator(["the cat sat on the mat", "a dog ran", "hello world"] * 20, trainer=trainer)
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left")
    fast.save_pretrained(folder)
    return fast


def test_pipeline_from_saved_folder_without_memmix_installed(tmp_path):
    folder = tmp_path / "checkpoint"
    tokenizer = tiny_tokenizer(folder)
    model = MixerForCausalLM(MixerConfig(**{**TINY, "vocab_size": len(tokenizer)}, n_ctx=32,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=None)).eval()
    model.save_pretrained(folder)
    prompts = ["the cat", "hello world a dog"]
    expected = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False)
        expected.append(prompt + tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["modeling_memmix"] = None  # even where memmix is installed, only the remote code may run
        from transformers import pipeline
        generator = pipeline("text-generation", model={str(folder)!r}, trust_remote_code=True)
        assert type(generator.model).__module__.startswith("transformers_modules"), type(generator.model)
        out = generator({prompts!r}, max_new_tokens=6, do_sample=False, batch_size=2)
        print(json.dumps([item[0]["generated_text"] for item in out]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_transformer_stack_with_a_cache_and_several_new_tokens_attends_to_all_earlier_keys():
    """SDPA's ``is_causal`` aligns to the top left; several new tokens after cached keys need the
    bottom-right-aligned mask the stack builds itself (error 0.67 against the full forward without it)."""
    from transformers import DynamicCache

    from modeling_memmix.mixer_layers import TransformerStack

    torch.manual_seed(0)
    stack = TransformerStack(32, 2, 16, True, MixerConfig(**TINY, n_ctx=16, block_type="transformer")).eval()
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        full = stack(x)
        cache = DynamicCache(config=stack.llama_config)
        parts = [stack(x[:, :4], cache=cache), stack(x[:, 4:9], cache=cache), stack(x[:, 9:], cache=cache)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
