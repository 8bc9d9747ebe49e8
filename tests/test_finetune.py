"""Tests of fine-tuning with train_accelerate.py: ``train.init_from`` (full fine-tuning starts at the checkpoint's
loss; a checkpoint that does not match the preset fails with every mismatched field named) and the LoRA options (a
LoRA fine-tune on new text lowers its validation loss, reports its trainable parameters, exports an adapter that
loads with ``PeftModel.from_pretrained`` on a remote-code base and a merged model that equals it, and resumes
exactly).

A tiny base mixer (hidden 32, 4 heads, n_ctx 16) is trained for 200 steps (~2 s) on the built-in corpus; the
fine-tunes use a text of different words and structure written into a temporary .txt file. (After only a few dozen
steps the base is close to a unigram model, whose frozen embeddings and head leave LoRA little to work with.)
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import huggingface_hub
import pytest
import torch
from accelerate import Accelerator
from helpers import (
    builtin_data,
    fresh_accelerate_state,  # noqa: F401  (autouse fixture)
    read_log,
    reset_accelerate_state,
    tiny_preset,
    train_losses,
    train_small_tokenizer,
)
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from memmix_data import load_or_build_windows, token_byte_lengths
from memmix_peft import count_trainable_parameters, recommended_lora_config
from memmix_train.batches import WindowBatches
from memmix_train.checkpointing import latest_checkpoint
from memmix_train.config import apply_overrides, resolve_config
from memmix_train.model_builder import lora_config_for
from memmix_train.validation import evaluate
from modeling_memmix import MemoryMixerConfig, MixerForCausalLM
from modeling_memmix.families import get_family
from train_accelerate import run_training

REPO = Path(__file__).resolve().parents[1]
BASE_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "n_ctx": 16, "intermediate_size": 64, "mixer_heads": 4}
LORA = {"lora_rank": 4, "lora_alpha": 8, "lora_adapt_mixing": True, "lora_merge": True}
LORA_STEPS = 60


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a shared, busy 2-core machine two OpenMP threads spin-wait on each
    other and a step of these models takes ~1 s instead of ~2 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def new_text_documents(count: int, seed: int = 0) -> list[str]:
    """Paragraphs of a small made-up world (animals, colours, places), unlike the built-in Python documentation."""
    rng = random.Random(seed)
    animals = ["fox", "owl", "hare", "wolf", "crow", "mole"]
    colours = ["red", "grey", "white", "brown", "black"]
    places = ["meadow", "river", "forest", "hill", "barn"]
    foods = ["berries", "seeds", "apples", "worms"]
    documents = []
    for _ in range(count):
        sentences = [
            f"The {rng.choice(colours)} {rng.choice(animals)} went to the {rng.choice(places)} "
            f"and ate {rng.randint(2, 9)} {rng.choice(foods)}."
            for _ in range(4)
        ]
        documents.append(" ".join(sentences))
    return documents


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, str]:
    """Tokenizer and window cache of the base run, and the new text (a .txt file, one paragraph per document)."""
    root = tmp_path_factory.mktemp("finetune_shared")
    shared = train_small_tokenizer(root)
    new_text = root / "new_text.txt"
    new_text.write_text("\n\n".join(new_text_documents(160)) + "\n", encoding="utf-8")
    return {**shared, "new_text": str(new_text)}


def run_config(shared, output_dir, family="mixer", model=None, corpus="new", **train):
    """A tiny run: the base (builtin corpus, own tokenizer) or a fine-tune (new text, the checkpoint's tokenizer)."""
    if corpus == "builtin":
        data = builtin_data(shared, validation_fraction=0.15)
    else:
        data = {"corpus": shared["new_text"], "cache_dir": shared["cache_dir"], "validation_fraction": 0.15,
                "tokenizer": None}
    train = {"eval_every": 100, "save_every": 100, "eval_batches": 6, **train}
    return resolve_config(tiny_preset(family, model if model is not None else {}, data, output_dir, **train))


def new_text_windows(shared, tokenizer, split: str):
    return load_or_build_windows(shared["new_text"], tokenizer, window=16, split=split, cache_dir=shared["cache_dir"],
                                 validation_fraction=0.15)


def sample_ids(shared, tokenizer) -> torch.Tensor:
    return new_text_windows(shared, tokenizer, "validation").input_ids[:6]


@pytest.fixture(scope="module")
def base_export(shared, tmp_path_factory) -> Path:
    """The "published checkpoint": a tiny mixer trained for 200 steps on the built-in corpus, exported."""
    output_dir = tmp_path_factory.mktemp("base")
    reset_accelerate_state()
    run_training(run_config(shared, output_dir, model=BASE_MODEL, corpus="builtin", max_steps=200, eval_every=200,
                            save_every=200, log_every=10, lr=5e-3))
    return output_dir / "export"


@pytest.fixture(scope="module")
def lora_run(shared, base_export, tmp_path_factory) -> tuple[Path, dict]:
    """LoRA fine-tune of the base on the new text (mixing weights adapted, merged export)."""
    output_dir = tmp_path_factory.mktemp("lora")
    reset_accelerate_state()
    metrics = run_training(run_config(shared, output_dir, init_from=str(base_export), max_steps=LORA_STEPS,
                                      save_every=20, lr=2e-2, **LORA))
    return output_dir, metrics


# --- LoRA -------------------------------------------------------------------------------------------------------


def test_lora_fine_tune_lowers_new_text_loss_and_reports_trainable_parameters(base_export, lora_run):
    output_dir, metrics = lora_run
    records = read_log(output_dir)
    before = next(r for r in records if r["step"] == 0 and "val_loss" in r)  # the base on the new text
    assert metrics["step"] == LORA_STEPS
    assert metrics["val_loss"] < before["val_loss"] - 0.25, (before["val_loss"], metrics["val_loss"])
    assert metrics["val_bits_per_byte"] < before["val_bits_per_byte"]

    base = AutoModelForCausalLM.from_pretrained(base_export, trust_remote_code=True)
    expected = count_trainable_parameters(
        get_peft_model(base, recommended_lora_config(base, rank=4, alpha=8, adapt_mixing=True)))
    counted = next(r for r in records if "trainable_parameters" in r)
    assert counted["step"] == 0
    assert (counted["trainable_parameters"], counted["total_parameters"]) == expected
    assert (metrics["trainable_parameters"], metrics["total_parameters"]) == expected
    assert 0 < expected[0] < expected[1] / 5
    for folder in (output_dir / "export" / "adapter", output_dir / "export"):
        card = (folder / "README.md").read_text()
        assert f"| trainable parameters | {expected[0]:,} of {expected[1]:,}" in card, folder
        assert "LoRA rank 4" in card and str(base_export) in card
        assert json.loads((folder / "eval_results.json").read_text())["trainable_parameters"] == expected[0]
    assert "PeftModel.from_pretrained" in (output_dir / "export" / "adapter" / "README.md").read_text()


def final_model_from_checkpoint(base_export, output_dir) -> torch.nn.Module:
    """The run's final PeftModel, rebuilt from the last training checkpoint (accelerate's saved state)."""
    checkpoint = latest_checkpoint(output_dir)
    assert checkpoint.name == f"step_{LORA_STEPS:06d}"
    base = AutoModelForCausalLM.from_pretrained(base_export, trust_remote_code=True)
    model = get_peft_model(base, LoraConfig.from_pretrained(output_dir / "export" / "adapter"))
    missing, unexpected = model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=True)
    assert not missing and not unexpected
    return model.eval()


def test_adapter_folder_loads_on_a_remote_code_base_and_reproduces_the_final_model(shared, base_export, lora_run):
    output_dir, metrics = lora_run
    adapter = output_dir / "export" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "tokenizer.json").is_file()
    saved = load_file(adapter / "adapter_model.safetensors")
    assert saved and all("lora_" in name for name in saved), "the adapter folder must hold adapter weights only"

    base = AutoModelForCausalLM.from_pretrained(base_export, trust_remote_code=True)
    loaded = PeftModel.from_pretrained(base, adapter).eval()
    final = final_model_from_checkpoint(base_export, output_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    ids = sample_ids(shared, tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, final(input_ids=ids).logits, rtol=0, atol=0)
    untouched = AutoModelForCausalLM.from_pretrained(base_export, trust_remote_code=True).eval()
    with torch.no_grad():
        assert not torch.allclose(loaded(input_ids=ids).logits, untouched(input_ids=ids).logits, atol=1e-3)
    # the run's reported validation numbers are the loaded adapter model's
    val = evaluate(loaded, new_text_windows(shared, tokenizer, "validation"), Accelerator(cpu=True), batch_size=4,
                   causal=True, byte_lengths=token_byte_lengths(tokenizer), max_batches=6)
    assert val["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)
    assert val["val_bits_per_byte"] == pytest.approx(metrics["val_bits_per_byte"], rel=1e-6)


def test_merged_export_equals_the_adapter_model(shared, base_export, lora_run):
    output_dir, _ = lora_run
    export = output_dir / "export"
    assert (export / "model.safetensors").is_file() and any(export.glob("modeling_*.py"))
    assert not (export / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True).eval()
    assert not any("lora" in name for name in merged.state_dict())
    base = AutoModelForCausalLM.from_pretrained(base_export, trust_remote_code=True)
    adapted = PeftModel.from_pretrained(base, export / "adapter").eval()
    ids = sample_ids(shared, AutoTokenizer.from_pretrained(export))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, rtol=0, atol=1e-4)


def test_resumed_lora_run_repeats_the_uninterrupted_losses(shared, base_export, lora_run, tmp_path):
    whole_dir, whole = lora_run
    settings = dict(init_from=str(base_export), max_steps=LORA_STEPS, save_every=20, lr=2e-2, **LORA)
    first = run_training(run_config(shared, tmp_path, stop_after_steps=25, **settings))
    assert first["step"] == 25 and latest_checkpoint(tmp_path).name == "step_000025"
    reset_accelerate_state()
    resumed = run_training(run_config(shared, tmp_path, **settings))
    assert train_losses(tmp_path) == train_losses(whole_dir)
    assert len(train_losses(tmp_path)) == LORA_STEPS
    assert resumed["val_loss"] == whole["val_loss"]
    reset_accelerate_state()
    with pytest.raises(ValueError, match=r"trained with train.lora_rank=4, this run asks for 8"):
        run_training(run_config(shared, tmp_path, **{**settings, "lora_rank": 8}))


# --- full fine-tuning from init_from ---------------------------------------------------------------------------


def test_full_fine_tune_starts_at_the_checkpoint_loss(shared, base_export, tmp_path):
    metrics = run_training(run_config(shared, tmp_path, init_from=str(base_export), max_steps=2))
    first_loss = train_losses(tmp_path)[1]
    tokenizer = AutoTokenizer.from_pretrained(base_export)
    batch = WindowBatches(new_text_windows(shared, tokenizer, "train"), 4, 0, 1, seed=0).batch(0)
    base = AutoModelForCausalLM.from_pretrained(base_export, trust_remote_code=True)
    torch.manual_seed(0)
    fresh = MixerForCausalLM(base.config)
    with torch.no_grad():
        base_loss = base(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()
        fresh_loss = fresh(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()
    assert first_loss == pytest.approx(base_loss, abs=1e-5)
    assert first_loss < fresh_loss - 1.0, (first_loss, fresh_loss)
    assert metrics["trainable_parameters"] == metrics["total_parameters"] == sum(p.numel() for p in base.parameters())
    assert "full fine-tuning" in (tmp_path / "export" / "README.md").read_text()
    assert not (tmp_path / "export" / "adapter").exists()


def first_batch_loss(model_folder: Path, family: str, shared, window: int) -> float:
    """The checkpoint's loss on the first training batch of the new text (what step 1 of a fine-tune reports)."""
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    windows = load_or_build_windows(shared["new_text"], tokenizer, window=window, split="train",
                                    cache_dir=shared["cache_dir"], validation_fraction=0.15)
    batch = WindowBatches(windows, 4, 0, 1, seed=0).batch(0)
    model = get_family(family).model_class.from_pretrained(model_folder)
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()


@pytest.mark.parametrize("family", ["autoencoder", "memory"])
def test_other_families_fine_tune_from_their_checkpoint(shared, tmp_path, family):
    """Full fine-tuning of an autoencoder; LoRA on the memory model's decoder side only (memory_lora_config)."""
    model = {**BASE_MODEL, **({"max_memories": 2, "freeze_encoder": False} if family == "memory" else {})}
    run_training(run_config(shared, tmp_path / "base", family, model=model, corpus="builtin", max_steps=10,
                            eval_every=10, save_every=10, log_every=10))
    base_export = tmp_path / "base" / "export"
    reset_accelerate_state()
    lora = {"lora_rank": 4, "lora_decoder_only": True, "lora_merge": True} if family == "memory" else {}
    metrics = run_training(run_config(shared, tmp_path / "tune", family, init_from=str(base_export), max_steps=3,
                                      **lora))
    window = 16 * 3 if family == "memory" else 16
    assert train_losses(tmp_path / "tune")[1] == pytest.approx(first_batch_loss(base_export, family, shared, window),
                                                               abs=1e-5)
    if family == "memory":
        adapter = load_file(tmp_path / "tune" / "export" / "adapter" / "adapter_model.safetensors")
        assert any(".decoder." in name for name in adapter)
        assert not any(".encoder." in name for name in adapter), "decoder-only LoRA must leave the encoder alone"
        assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "tune" / "export", trust_remote_code=True)
        assert type(merged).__name__ == "MemoryMixerForCausalLM"
    else:
        assert metrics["trainable_parameters"] == metrics["total_parameters"]


# --- clear errors ------------------------------------------------------------------------------------------------


def test_init_from_a_mismatched_checkpoint_names_every_field(shared, base_export, tmp_path):
    config = run_config(shared, tmp_path, model={**BASE_MODEL, "hidden_size": 48, "n_ctx": 32},
                        init_from=str(base_export))
    with pytest.raises(ValueError) as error:
        run_training(config)
    message = str(error.value)
    assert "does not match the preset's model section" in message
    assert "hidden_size: checkpoint 32, preset 48" in message and "n_ctx: checkpoint 16, preset 32" in message
    assert "mixer_heads" not in message and "num_hidden_layers" not in message  # matching keys are not listed
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(ValueError, match=r"holds a 'masked_mixer' model but family='autoencoder'"):
        run_training(run_config(shared, tmp_path, family="autoencoder", init_from=str(base_export)))


def test_init_from_folders_that_are_not_exports_explain_themselves(shared, base_export, lora_run, tmp_path):
    lora_dir, _ = lora_run
    cases = [
        (str(tmp_path / "missing"), "is not a folder"),
        (str(lora_dir / "export" / "adapter"), "It is a LoRA adapter folder"),
        (str(latest_checkpoint(lora_dir)), "It is a training checkpoint: continue that run with --resume"),
        (str(base_export.parent), f"Did you mean {base_export}"),
    ]
    for source, message in cases:
        with pytest.raises(FileNotFoundError, match=re.escape(message)):
            run_training(run_config(shared, tmp_path / "run", init_from=source))


def test_init_from_a_hub_id_offline_fails_clearly(shared, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import
    with pytest.raises(FileNotFoundError, match="is not a local folder and could not be loaded from the Hugging Face"):
        run_training(run_config(shared, tmp_path, init_from="someone/memmix-tiny-never-published"))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lora_rank=8"], "train.lora_rank=8 needs train.init_from"),
        (["train.init_from=x", "train.lora_rank=0"], "train.lora_rank=0 must be a positive integer"),
        (["train.lora_merge=true"], "train.lora_merge=true needs LoRA"),
        (["train.init_from=x", "train.lora_rank=4", "train.lora_decoder_only=true"], "is for family='memory'"),
        (["train.init_from=x", "train.init_from_autoencoder=y"], "are both set"),
        (["train.init_from=x", "train.lora_rank=4", "train.lora_dropout=1.5"], "lora_dropout=1.5 must be in [0, 1)"),
    ],
)
def test_bad_fine_tuning_settings_are_refused_with_the_value(overrides, message):
    config = resolve_config({"family": "mixer"})
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(config, overrides)


def test_lora_decoder_only_uses_the_memory_recipe():
    memory = MemoryMixerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, n_ctx=16, max_memories=2,
                               freeze_encoder=False)
    config = apply_overrides(resolve_config({"family": "memory"}), ["train.init_from=x", "train.lora_rank=4"])
    everywhere = lora_config_for(config, memory).target_modules
    decoder_only = lora_config_for(apply_overrides(config, ["train.lora_decoder_only=true"]), memory).target_modules
    assert "encoder" in everywhere and "encoder" not in decoder_only and "decoder" in decoder_only


def test_lora_preset_resolves_to_a_lora_fine_tune():
    config = resolve_config(json.loads((REPO / "configuration" / "mixer_tiny_lora.json").read_text()))
    assert config.train.init_from and config.train.lora_rank
    assert config.data.tokenizer is None  # the checkpoint's tokenizer is used
