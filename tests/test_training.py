"""Tests of train_accelerate.py and memmix_train: presets and overrides resolve to a checked RunConfig, short runs
of each family export loadable folders, bits per byte count exactly the scored bytes, a resumed run repeats the
uninterrupted losses, a time-sized schedule anneals within its budget, an interrupted save never looks valid, a NaN loss stops the run, pushing offline fails
before training, and mismatched settings fail with errors that name them.

Every run uses a tiny model (hidden 32, 2 layers, n_ctx 16) on ~150 built-in documents with a 300-token
tokenizer, for a handful of steps.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pytest
import torch
from helpers import (
    TINY_MODEL,
    TINY_TRAIN,
    builtin_data,
    fresh_accelerate_state,  # noqa: F401  (autouse fixture)
    read_log,
    tiny_preset,
    train_losses,
    train_small_tokenizer,
)
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

from memmix_data import load_or_build_windows, token_byte_lengths
from memmix_hub import HubUnreachableError
from memmix_train import checkpointing, loop
from memmix_train.batches import WindowBatches
from memmix_train.checkpointing import complete_checkpoints, latest_checkpoint
from memmix_train.config import apply_overrides, load_preset, resolve_config
from memmix_train.export import push_folder_to_hub
from memmix_train.loop import NonFiniteLossError
from modeling_memmix.families import get_family
from train_accelerate import main, run_training

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configuration").glob("*.json"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, str]:
    """A small tokenizer folder and a window cache shared by every run in this file."""
    return train_small_tokenizer(tmp_path_factory.mktemp("shared"))


def tiny_config(shared, output_dir, family="mixer", model=None, **train):
    """A tiny run that evaluates and saves every 3 of its 6 steps."""
    train = {"eval_every": 3, "save_every": 3, "eval_batches": 4, **train}
    return resolve_config(tiny_preset(family, {**TINY_MODEL, **(model or {})}, builtin_data(shared), output_dir,
                                      **train))


# --- presets and overrides ------------------------------------------------------------------------


def test_every_preset_resolves_and_builds_its_model_config():
    assert {p.stem.split("_")[0] for p in PRESETS} >= {"mixer", "autoencoder", "memory"}
    for preset in PRESETS:
        config = load_preset(preset)
        model_config = get_family(config.family).config_class(**{"vocab_size": 8000, **config.model})
        assert model_config.hidden_size > 0, preset
        assert config.train.mixed_precision in ("no", "bf16", "fp16")


def test_overrides_are_typed_and_bare_keys_resolve_to_their_section():
    config = load_preset(REPO / "configuration" / "mixer_tiny.json")
    changed = apply_overrides(config, ["lr=1e-3", "model.hidden_size=64", "train.betas=[0.8, 0.9]",
                                       "data.corpus=docs/*.txt", "max_minutes=null"])
    assert changed.train.lr == 1e-3 and changed.model["hidden_size"] == 64
    assert changed.train.betas == [0.8, 0.9] and changed.data.corpus == "docs/*.txt"
    assert changed.train.max_minutes is None
    assert config.train.lr != 1e-3  # the original is untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hiden_size=64", "model has no key 'hiden_size'"),
        ("nonsense=1", "no section has this key"),
        ("vocab_size=100", "ambiguous"),
        ("optim.lr=1", "unknown section 'optim'"),
        ("train.lr", "must look like section.key=value"),
        ("train.mixed_precision=fp8", "mixed_precision='fp8'"),
        ("train.batch_size=0", "train.batch_size=0 must be a positive integer"),
        ("train.warmup_steps=-1", "warmup_steps=-1 must be an integer >= 0"),
        ("data.train_fraction=1.5", "data.train_fraction=1.5 must be a share of the training documents in (0, 1]"),
        ("family=rnn", "family='rnn' is not supported"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    config = load_preset(REPO / "configuration" / "mixer_tiny.json")
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(config, [override])


def test_cli_flags_map_onto_the_config(capsys):
    main(["--preset", str(REPO / "configuration" / "autoencoder_tiny.json"), "--max_steps", "70",
          "--output_dir", "somewhere", "--set", "model.hidden_size=48", "--print_config"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["family"] == "autoencoder" and printed["train"]["max_steps"] == 70
    assert printed["train"]["output_dir"] == "somewhere" and printed["model"]["hidden_size"] == 48
    with pytest.raises(FileNotFoundError, match="no_such_preset.json"):
        main(["--preset", "no_such_preset.json", "--print_config"])


# --- short runs of each family ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def autoencoder_run(shared, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("autoencoder")
    metrics = run_training(tiny_config(shared, output_dir, "autoencoder", tensorboard=True))
    return output_dir, metrics


def check_export(export_dir: Path, auto_class, metrics: dict, causal: bool) -> None:
    model = auto_class.from_pretrained(export_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    assert (export_dir / "model.safetensors").is_file()
    assert any(export_dir.glob("modeling_*.py")), "remote code must travel with the export"
    assert (export_dir / "generation_config.json").is_file() == causal
    ids = tokenizer("def add(a, b): return a + b, said the docstring", return_tensors="pt")["input_ids"]
    ids = ids[:, :16]
    if not causal:
        ids = torch.nn.functional.pad(ids, (0, 16 - ids.shape[1]), value=tokenizer.pad_token_id)
    output = model(input_ids=ids, labels=ids)
    assert torch.isfinite(output.loss)
    card = (export_dir / "README.md").read_text()
    front_matter = card.split("---")[1]
    assert "model-index:" in front_matter and "type: bits_per_byte" in front_matter
    assert f"value: {metrics['val_bits_per_byte']:.4f}" in front_matter
    assert json.loads((export_dir / "run_config.json").read_text())["family"] in ("mixer", "autoencoder", "memory")


def test_autoencoder_run_exports_logs_and_plots(autoencoder_run):
    output_dir, metrics = autoencoder_run
    check_export(output_dir / "export", AutoModel, metrics, causal=False)
    records = read_log(output_dir)
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val_bits_per_byte" in r] == [3, 6]
    assert (output_dir / "loss_curve.png").stat().st_size > 1000
    assert any((output_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert [p.name for p in complete_checkpoints(output_dir)] == ["step_000003", "step_000006"]
    saved = json.loads((output_dir / "checkpoints" / "step_000006" / "run_config.json").read_text())
    assert saved["family"] == "autoencoder" and saved["model"]["hidden_size"] == 32


def test_the_step_scaling_script_scores_runs_of_two_schedule_lengths(shared, autoencoder_run, tmp_path):
    """benchmarks/findings/autoencoder_step_scaling.py scores a 6-step and a 12-step run of the same text on one
    held-out set and writes its files; a run on another share of the text is refused by name."""
    import importlib.util

    short_dir, _ = autoencoder_run
    long_dir = tmp_path / "long"
    run_training(tiny_config(shared, long_dir, "autoencoder", max_steps=12))
    spec = importlib.util.spec_from_file_location("step_scaling", REPO / "benchmarks" / "findings"
                                                  / "autoencoder_step_scaling.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "steps"
    assert script.main([str(short_dir), str(long_dir), "--held_out", "builtin", "--seen_windows", "8",
                        "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    assert [entry["max_steps"] for entry in results["schedules"]] == [6, 12]
    assert [row["steps"] for row in results["runs"]] == [6, 12]
    assert all(row["steps_per_second"] > 0 and 0 <= row["held_out_accuracy"] <= 1 for row in results["runs"])
    assert results["verdict"].startswith("inconclusive (no schedule has two seeds")
    assert "| 12 |" in out.with_suffix(".md").read_text() and out.with_suffix(".png").stat().st_size > 1000
    other = tmp_path / "other_share"
    other.mkdir()
    config = json.loads((long_dir / "run_config.json").read_text())
    config["data"]["train_fraction"] = 0.5
    (other / "run_config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="other_share trains on other text"):
        script.check_same_text([short_dir, other])


def assert_report_reads_the_share_the_run_trained_on(half_dir, full_dir, shared) -> None:
    """`evaluation.report --split train` scores the documents a data.train_fraction run trained on (its
    run_config.json's share), the held-out split is untouched, and an explicit --train_fraction wins."""
    from evaluation.options import ReportOptions
    from evaluation.reporting import load_inputs

    def inputs(run_dir, **options):
        return load_inputs(ReportOptions(model=str(run_dir / "export"), progress=False, **options))[1]

    half, full = inputs(half_dir, split="train"), inputs(full_dir, split="train")
    assert (half.settings["train_fraction"], full.settings["train_fraction"]) == (0.5, 1.0)
    assert 0.2 * full.settings["documents_evaluated"] < half.settings["documents_evaluated"] \
        < 0.8 * full.settings["documents_evaluated"]
    assert set(half.documents) < set(full.documents)
    assert inputs(half_dir, split="train", train_fraction=1.0).documents == full.documents
    assert inputs(half_dir).documents == inputs(full_dir).documents
    with pytest.raises(ValueError, match=r"train_fraction=0 must be a share"):
        ReportOptions(model=str(half_dir / "export"), train_fraction=0)


def test_a_share_of_the_training_documents_trains_and_the_data_scaling_script_reads_it(shared, autoencoder_run,
                                                                                         tmp_path):
    """data.train_fraction=0.5 trains on fewer windows with the same held-out windows, and
    benchmarks/findings/autoencoder_data_scaling.py scores both runs, pools them by share and writes its files."""
    import importlib.util

    full_dir, _ = autoencoder_run
    half_dir = tmp_path / "half"
    preset = tiny_preset("autoencoder", TINY_MODEL, {**builtin_data(shared), "train_fraction": 0.5}, half_dir,
                         eval_every=3, save_every=3, eval_batches=4)
    run_training(resolve_config(preset))
    assert json.loads((half_dir / "run_config.json").read_text())["data"]["train_fraction"] == 0.5
    assert "trained on 50% of the training documents" in (half_dir / "export" / "README.md").read_text()
    assert "% of the training documents" not in (full_dir / "export" / "README.md").read_text()
    assert_report_reads_the_share_the_run_trained_on(half_dir, full_dir, shared)
    spec = importlib.util.spec_from_file_location("data_scaling", REPO / "benchmarks" / "findings"
                                                  / "autoencoder_data_scaling.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "scaling"
    assert script.main([str(full_dir), str(half_dir), "--seen_windows", "8", "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    half, full = sorted(results["runs"], key=lambda row: row["train_fraction"])
    assert (half["train_fraction"], full["train_fraction"]) == (0.5, 1.0)
    assert 0.2 * full["train_tokens"] < half["train_tokens"] < 0.8 * full["train_tokens"]
    assert half["held_out_windows"] == full["held_out_windows"] > 0 and half["own_held_out"] and full["own_held_out"]
    assert results["logged_step"] == 6 and set(results["logged_held_out_accuracy"]) == {"0.5 of builtin",
                                                                                         "1 of builtin"}
    assert half["steps"] == full["steps"] == 6 and all(0 <= row["seen_accuracy"] <= 1 for row in results["runs"])
    assert results["verdict"].startswith("inconclusive (no share has two seeds")
    assert "| 0.5 of builtin |" in out.with_suffix(".md").read_text() and out.with_suffix(".png").stat().st_size > 1000


def test_mixer_run_exports_a_causal_lm(shared, tmp_path):
    metrics = run_training(tiny_config(shared, tmp_path, "mixer", mixed_precision="bf16", grad_accum=2))
    check_export(tmp_path / "export", AutoModelForCausalLM, metrics, causal=True)
    assert metrics["step"] == 6 and metrics["train_windows"] == 6 * 4 * 2
    # the exported generation config sets no length, so an ordinary generate(max_new_tokens=...) does not warn
    # that max_length is set too (the model's own limit is enforced before any work)
    assert "max_length" not in json.loads((tmp_path / "export" / "generation_config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export", trust_remote_code=True)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    generation_logger = logging.getLogger("transformers.generation.utils")
    generation_logger.addHandler(handler)
    try:
        out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
    finally:
        generation_logger.removeHandler(handler)
    assert out.shape == (1, 6)
    assert not [message for message in messages if "max_length" in message], messages


def test_memory_model_from_frozen_autoencoder_encoder(shared, autoencoder_run, tmp_path):
    ae_dir = autoencoder_run[0] / "export"
    config = tiny_config(shared, tmp_path, "memory", model={"max_memories": 2}, init_from_autoencoder=str(ae_dir),
                         max_steps=3, eval_every=3)
    config.data.tokenizer = None  # the autoencoder's tokenizer is reused
    metrics = run_training(config)
    check_export(tmp_path / "export", AutoModelForCausalLM, metrics, causal=True)
    memory = AutoModelForCausalLM.from_pretrained(tmp_path / "export", trust_remote_code=True)
    autoencoder = AutoModel.from_pretrained(ae_dir, trust_remote_code=True)
    assert memory.config.freeze_encoder
    for name, tensor in autoencoder.encoder.state_dict().items():  # frozen: unchanged by training
        torch.testing.assert_close(memory.encoder.state_dict()[name], tensor, rtol=0, atol=0)


def test_the_memory_recall_script_scores_recall_trained_runs_by_source(shared, autoencoder_run, tmp_path):
    """benchmarks/findings/memory_recall.py scores a run trained to copy any earlier chunk, one trained to copy
    the first and one with a content-addressed read, on one held-out set, groups them by source and read, gives
    both verdicts and where the read looks, and writes its files; an autoencoder run is refused."""
    import importlib.util

    ae_dir = autoencoder_run[0] / "export"
    runs = []
    for name, source, read in (("any", "any", "slots"), ("first", "first", "slots"), ("read", "any", "attention")):
        config = tiny_config(shared, tmp_path / name, "memory", model={"max_memories": 2, "memory_read": read},
                             init_from_autoencoder=str(ae_dir), max_steps=2, eval_every=2, random_offsets=True,
                             repeat_chunks=1.0, repeat_source=source)
        config.data.tokenizer = None  # the autoencoder's tokenizer is reused
        run_training(config)
        runs.append(str(tmp_path / name))
    spec = importlib.util.spec_from_file_location("memory_recall", REPO / "benchmarks" / "findings"
                                                  / "memory_recall.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "recall"
    assert script.main([*runs, "--windows", "6", "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    searching, first = "repeat_source=any, 2-block decoder", "repeat_source=first, 2-block decoder"
    read_group = f"{searching}, memory_read=attention before block 0"
    assert [score["group"] for score in results["scores"]] == [searching, first, read_group]
    assert all(len(score["pairs"]) == 3 and score["windows"] == 6 for score in results["scores"])
    slot, read, selective = results["comparisons"]
    assert (slot["treated"], read["treated"]) == (first, read_group) and read["control"] == searching
    assert selective["treated"] == read_group and selective["measured"] == "selectivity"
    assert all(len(c["effects"]) == 1 and c["verdict"] in ("reproduced", "refuted", "inconclusive")
               for c in (slot, read, selective))
    assert [s["read_weights"] is None for s in results["scores"]] == [True, True, False]
    report = out.with_suffix(".md").read_text()
    assert f"| {first} | 0 |" in report and "## Where the content-addressed read looks" in report
    assert out.with_suffix(".png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="chunk recall needs memory-family runs"):
        script.main([runs[0], str(autoencoder_run[0]), "--windows", "6", "--out", str(out)])


@pytest.mark.parametrize("family", ["mixer", "autoencoder"])
def test_bits_per_byte_counts_exactly_the_scored_bytes(shared, tmp_path, family):
    """Causal models skip the first token of every window; the autoencoder scores every byte."""
    metrics = run_training(tiny_config(shared, tmp_path, family, max_steps=1, eval_batches=None))
    tokenizer = AutoTokenizer.from_pretrained(shared["tokenizer"])
    windows = load_or_build_windows("builtin", tokenizer, window=16, split="validation", cache_dir=shared["cache_dir"],
                                    validation_fraction=0.1, max_documents=150)
    first_bytes = int(token_byte_lengths(tokenizer)[windows.input_ids[:, 0]].sum())
    expected = windows.total_bytes - (first_bytes if family == "mixer" else 0)
    assert metrics["val_bytes"] == expected
    assert metrics["val_tokens"] == len(windows) * (15 if family == "mixer" else 16)
    nats = metrics["val_loss"] * metrics["val_tokens"]
    assert metrics["val_bits_per_byte"] == pytest.approx(nats / (math.log(2) * expected), rel=1e-9)


def test_autoencoder_validation_reports_the_exported_models_token_accuracy(shared, tmp_path):
    """val_token_accuracy is the fraction of validation tokens the exported model's argmax regenerates."""
    metrics = run_training(tiny_config(shared, tmp_path, "autoencoder", max_steps=3, eval_batches=None))
    tokenizer = AutoTokenizer.from_pretrained(shared["tokenizer"])
    windows = load_or_build_windows("builtin", tokenizer, window=16, split="validation", cache_dir=shared["cache_dir"],
                                    validation_fraction=0.1, max_documents=150)
    model = AutoModel.from_pretrained(tmp_path / "export", trust_remote_code=True).eval()
    with torch.no_grad():
        predicted = model(input_ids=windows.input_ids).logits.argmax(-1)
    assert metrics["val_token_accuracy"] == pytest.approx(float((predicted == windows.input_ids).float().mean()),
                                                          abs=1e-9)
    assert "val_token_accuracy" not in run_training(tiny_config(shared, tmp_path / "mixer", "mixer", max_steps=1))


# --- resume, interrupted save, NaN ------------------------------------------------------------------


def test_resumed_run_repeats_the_uninterrupted_losses(shared, tmp_path):
    whole = run_training(tiny_config(shared, tmp_path / "whole", save_every=2))
    first = run_training(tiny_config(shared, tmp_path / "split", save_every=2, stop_after_steps=3))
    assert first["step"] == 3 and latest_checkpoint(tmp_path / "split").name == "step_000003"
    resumed = run_training(tiny_config(shared, tmp_path / "split", save_every=2))
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "whole")
    assert len(train_losses(tmp_path / "whole")) == 6
    assert resumed["val_bits_per_byte"] == whole["val_bits_per_byte"]


def fake_loop_clock(monkeypatch, seconds_per_step: float) -> None:
    """Make every step of the training loop take ``seconds_per_step`` by the budget's clock (counted per run)."""
    calls = []

    def seconds_everywhere(started, accelerator):
        calls.append(started)
        return seconds_per_step * sum(1 for call in calls if call == started)

    monkeypatch.setattr(loop, "seconds_everywhere", seconds_everywhere)


def test_time_schedule_anneals_within_the_budget_and_the_budget_spans_resumes(shared, tmp_path, monkeypatch):
    """lr_schedule='time' decays the learning rate over max_minutes when that runs out before max_steps: with
    12 s a step and a 1-minute budget, step k's rate is the cosine at the budget's share after step k - 1, and
    the run stops at step 5. The spent budget is saved, so a resumed run takes no step; the step schedule, by
    contrast, keeps its rate and gives a resumed run a new budget."""
    fake_loop_clock(monkeypatch, 12.0)
    settings = {"max_steps": 1000, "max_minutes": 1, "warmup_steps": 2, "save_every": 3, "eval_every": 100}
    timed = run_training(tiny_config(shared, tmp_path / "time", lr_schedule="time", **settings))
    records = [r for r in read_log(tmp_path / "time") if "lr" in r]
    assert timed["step"] == 5 and [r["step"] for r in records] == [1, 2, 3, 4, 5]
    lr = TINY_TRAIN["lr"]
    expected = [lr / 2] + [lr * 0.5 * (1 + math.cos(math.pi * (k - 1) / 5)) for k in range(2, 6)]
    assert [r["lr"] for r in records] == pytest.approx(expected)
    assert [p.name for p in complete_checkpoints(tmp_path / "time")][-1] == "step_000005"
    state = json.loads((latest_checkpoint(tmp_path / "time") / "trainer_state.json").read_text())
    assert state["train_seconds"] == pytest.approx(60.0)
    again = run_training(tiny_config(shared, tmp_path / "time", lr_schedule="time", **settings))
    assert again["step"] == 5 and max(r["step"] for r in read_log(tmp_path / "time")) == 5

    stepped = run_training(tiny_config(shared, tmp_path / "steps", **settings))
    assert stepped["step"] == 5
    assert all(r["lr"] > 0.99 * lr for r in read_log(tmp_path / "steps") if "lr" in r and r["step"] > 2)
    resumed = run_training(tiny_config(shared, tmp_path / "steps", **settings))
    assert resumed["step"] == 10  # a new invocation, a new budget


def test_time_schedule_is_the_step_cosine_until_the_budget_runs_ahead():
    """While the budget's share lags the steps', lr_schedule='time' is transformers' warmup + cosine exactly;
    ahead of them it decays earlier, and a spent budget gives 0 after the warmup."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = get_cosine_schedule_with_warmup(optimizer, 3, 20).lr_lambdas[0]
    lagging, ahead, spent = loop.BudgetClock(0.0), loop.BudgetClock(0.5), loop.BudgetClock(1.0)
    for step in range(21):
        assert loop.budget_cosine_factor(step, 3, 20, lagging) == pytest.approx(cosine(step))
        assert loop.budget_cosine_factor(step, 3, 20, ahead) <= cosine(step) + 1e-12
        assert loop.budget_cosine_factor(step, 3, 20, spent) == (pytest.approx(cosine(step)) if step < 3 else 0.0)
    assert loop.budget_cosine_factor(5, 3, 20, ahead) == pytest.approx(0.5)


def test_budget_and_schedule_settings_are_checked():
    for train, message in (({"lr_schedule": "cosine"}, "train.lr_schedule='cosine'; choose one of"),
                           ({"lr_schedule": "time"}, "needs train.max_minutes"),
                           ({"max_minutes": 0}, "train.max_minutes=0 must be a positive number"),
                           ({"max_minutes": "20"}, "train.max_minutes='20' must be a positive number")):
        with pytest.raises(ValueError, match=re.escape(message)):
            resolve_config({"family": "mixer", "model": {}, "data": {}, "train": train})


def test_interrupted_save_never_looks_valid(shared, tmp_path, monkeypatch):
    real_marker, calls = checkpointing._write_marker, []

    def crash_on_second_save(path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed while saving")
        real_marker(path)

    monkeypatch.setattr(checkpointing, "_write_marker", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_config(shared, tmp_path, save_every=2))
    root = tmp_path / "checkpoints"
    assert (root / ".tmp-step_000004").is_dir() and not (root / "step_000004").exists()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000002"]
    monkeypatch.setattr(checkpointing, "_write_marker", real_marker)
    run_training(tiny_config(shared, tmp_path, save_every=2))
    assert not (root / ".tmp-step_000004").exists()
    assert latest_checkpoint(tmp_path).name == "step_000006"
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        checkpointing.load_checkpoint(None, tmp_path)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(shared, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"nan at step 5.*step_000004"):
        run_training(tiny_config(shared, tmp_path, save_every=2, debug_nan_at_step=5))
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000002", "step_000004"]
    assert not (tmp_path / "export").exists()


# --- Hub and clear errors ---------------------------------------------------------------------------


def test_push_to_hub_offline_fails_clearly_before_training(shared, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="offline mode is on"):
        run_training(tiny_config(shared, tmp_path, push_to_hub="someone/tiny-mixer"))
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(HubUnreachableError, match=r"folder .* is kept"):
        push_folder_to_hub(tmp_path, "someone/tiny-mixer")


@pytest.mark.parametrize(
    ("family", "model", "train", "message"),
    [
        ("mixer", {"vocab_size": 100}, {}, "model.vocab_size=100 is smaller than the tokenizer's"),
        ("mixer", {"n_ctx": 100000}, {}, "Cannot build train windows of 100000 tokens"),
        ("mixer", {}, {"batch_size": 100000}, "fewer than one global micro-batch"),
        ("autoencoder", {}, {"init_from_autoencoder": "x"}, "needs family='memory'"),
        ("mixer", {}, {"mixed_precision": "fp16", "cpu": True}, "fp16' needs a GPU"),
    ],
)
def test_mismatched_data_and_model_errors_are_clear(shared, tmp_path, family, model, train, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run_training(tiny_config(shared, tmp_path, family, model=model, **train))


def test_resume_refuses_a_checkpoint_of_another_model(shared, tmp_path):
    run_training(tiny_config(shared, tmp_path, max_steps=2, eval_every=2, save_every=2))
    with pytest.raises(ValueError, match="Cannot resume from .*step_000002: its model settings differ"):
        run_training(tiny_config(shared, tmp_path, model={"hidden_size": 64}))
    run_training(tiny_config(shared, tmp_path, model={"hidden_size": 64}, resume="never", max_steps=2,
                             eval_every=2, save_every=2))
    assert latest_checkpoint(tmp_path).name == "step_000002"


def test_random_offsets_deal_shifted_windows_of_the_stream_alike_on_any_number_of_processes(shared):
    """Every shifted window is a contiguous slice of the packed stream; two processes with batch B see exactly what
    one process with batch 2B sees; the same step gives the same batch (resume); fixed windows stay the default."""
    tokenizer = AutoTokenizer.from_pretrained(shared["tokenizer"])
    windows = load_or_build_windows("builtin", tokenizer, window=16, split="train", cache_dir=shared["cache_dir"],
                                    validation_fraction=0.1, max_documents=150)
    stream = windows.input_ids.reshape(-1)
    one = WindowBatches(windows, 8, 0, 1, seed=3, random_offsets=True)
    halves = [WindowBatches(windows, 4, rank, 2, seed=3, random_offsets=True) for rank in (0, 1)]
    shifted = 0
    for step in range(5):
        batch = one.batch(step)
        assert torch.equal(batch["input_ids"], torch.cat([half.batch(step)["input_ids"] for half in halves]))
        assert torch.equal(batch["input_ids"], one.batch(step)["input_ids"]) and torch.equal(batch["labels"],
                                                                                             batch["input_ids"])
        fixed = WindowBatches(windows, 8, 0, 1, seed=3).batch(step)["input_ids"]
        for row, fixed_row in zip(batch["input_ids"], fixed):
            starts = [s for s in range(stream.numel() - 15) if torch.equal(stream[s : s + 16], row)]
            assert starts, "a shifted window must be a slice of the token stream"
            shifted += not torch.equal(row, fixed_row)
    assert shifted > 30  # almost every window moved (offset 0 is one chance in 16)
    padded = load_or_build_windows("builtin", tokenizer, window=16, split="train", cache_dir=shared["cache_dir"],
                                   validation_fraction=0.1, max_documents=150)
    padded.num_tokens[-1] = 5
    with pytest.raises(ValueError, match="full packed windows"):
        WindowBatches(padded, 8, 0, 1, seed=3, random_offsets=True)


def test_repeat_chunks_copy_an_earlier_chunk_into_a_later_one_in_about_that_fraction_of_windows(shared):
    """Recall training: with repeat_chunks=p about p of the windows have chunk c >= 1 overwritten by chunk c' < c,
    the others are left as dealt; labels follow the ids; two processes see what one sees; a resumed step repeats."""
    tokenizer = AutoTokenizer.from_pretrained(shared["tokenizer"])
    windows = load_or_build_windows("builtin", tokenizer, window=16, split="train", cache_dir=shared["cache_dir"],
                                    validation_fraction=0.1, max_documents=150)
    one = WindowBatches(windows, 8, 0, 1, seed=3, random_offsets=True, repeat_chunks=0.5, chunk=4)
    halves = [WindowBatches(windows, 4, rank, 2, seed=3, random_offsets=True, repeat_chunks=0.5, chunk=4)
              for rank in (0, 1)]
    plain = WindowBatches(windows, 8, 0, 1, seed=3, random_offsets=True)
    changed = 0
    for step in range(8):
        batch, dealt = one.batch(step), plain.batch(step)["input_ids"]
        assert torch.equal(batch["input_ids"], torch.cat([half.batch(step)["input_ids"] for half in halves]))
        assert torch.equal(batch["input_ids"], one.batch(step)["input_ids"])
        assert torch.equal(batch["labels"], batch["input_ids"])
        for row, dealt_row in zip(batch["input_ids"], dealt):
            different = [c for c in range(4) if not torch.equal(row[4 * c : 4 * c + 4], dealt_row[4 * c : 4 * c + 4])]
            assert len(different) <= 1 and 0 not in different  # at most one chunk, never the first, is rewritten
            if different:
                target = different[0]
                assert any(torch.equal(row[4 * target : 4 * target + 4], dealt_row[4 * s : 4 * s + 4])
                           for s in range(target))
                changed += 1
    assert 16 <= changed <= 48  # of 64 windows, about half (a copy of an identical chunk would not show)
    with pytest.raises(ValueError, match="whole chunks"):
        WindowBatches(windows, 8, 0, 1, seed=3, repeat_chunks=0.5, chunk=5)
    windows.num_tokens[-1] = 5
    with pytest.raises(ValueError, match="full packed windows"):
        WindowBatches(windows, 8, 0, 1, seed=3, repeat_chunks=0.5, chunk=4)
    with pytest.raises(ValueError, match="repeat_chunks=1.5"):
        tiny_config(shared, Path("unused"), family="memory", repeat_chunks=1.5)
    with pytest.raises(ValueError, match="family='memory'"):
        tiny_config(shared, Path("unused"), family="mixer", repeat_chunks=0.25)


@pytest.mark.parametrize("source", ["first", "previous"])
def test_repeat_source_fixes_which_earlier_chunk_is_copied(shared, source):
    """repeat_source='first' always copies chunk 0 (the memory in slot 0), 'previous' the chunk just before; the
    windows and rewritten chunks are the ones 'any' picks, so only the source differs."""
    tokenizer = AutoTokenizer.from_pretrained(shared["tokenizer"])
    windows = load_or_build_windows("builtin", tokenizer, window=16, split="train", cache_dir=shared["cache_dir"],
                                    validation_fraction=0.1, max_documents=150)
    fixed = WindowBatches(windows, 8, 0, 1, seed=3, random_offsets=True, repeat_chunks=1.0, chunk=4,
                          repeat_source=source)
    plain = WindowBatches(windows, 8, 0, 1, seed=3, random_offsets=True)
    checked = 0
    for step in range(6):
        for row, dealt in zip(fixed.batch(step)["input_ids"], plain.batch(step)["input_ids"]):
            chunks, dealt_chunks = row.view(4, 4), dealt.view(4, 4)
            different = [c for c in range(4) if not torch.equal(chunks[c], dealt_chunks[c])]
            assert len(different) <= 1
            if different:
                target = different[0]
                assert torch.equal(chunks[target], dealt_chunks[0 if source == "first" else target - 1])
                checked += 1
    assert checked >= 30  # of 48 windows (a copy of an identical chunk would not show)
    with pytest.raises(ValueError, match="repeat_source='last'"):
        WindowBatches(windows, 8, 0, 1, seed=3, repeat_chunks=1.0, chunk=4, repeat_source="last")
    with pytest.raises(ValueError, match="needs train.repeat_chunks > 0"):
        tiny_config(shared, Path("unused"), family="memory", repeat_source="first")
