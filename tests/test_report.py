"""Tests for the evaluation report (`python -m evaluation.report`): exact numbers, exact bytes, clear errors.

Run from the repository root: ``python -m pytest -q tests/test_report.py`` (about 30 s on 2 CPUs, most of
it reading the built-in corpus once). Tiny models are built here; the tokenizer is trained here on a slice
of the built-in corpus, and the causal model gets 60 plain torch steps so it is better than uniform.
"""

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evaluation.compressors import compress_windows
from evaluation.evaluators import evaluate_mixer
from evaluation.loading import LoadedModel, load_model_and_tokenizer
from evaluation.model_card import update_model_card
from evaluation.report import main, run_report, scored_window_bytes
from evaluation.scoring import repeated_chunk_ids
from memmix_data import (
    HubUnreachableError,
    builtin_documents,
    pack_documents,
    split_documents,
    token_byte_lengths,
    token_bytes,
    train_tokenizer,
)
from modeling_memmix import (
    MemoryMixerConfig,
    MemoryMixerForCausalLM,
    MixerAutoencoder,
    MixerAutoencoderConfig,
    MixerConfig,
    MixerForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
VOCAB = 300
N_CTX = 16
FAST = {"compressors": ["gzip", "zstd"], "max_primer_bytes": 20_000, "progress": False}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def documents():
    return builtin_documents()[:300]


@pytest.fixture(scope="module")
def tokenizer(documents):
    return train_tokenizer(documents, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def corpus_file(documents, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in documents), encoding="utf-8")
    return str(path)


def validation_windows(documents, tokenizer, window):
    """The held-out windows, built straight from memmix_data (independently of the report's loader)."""
    _, validation = split_documents(documents, validation_fraction=0.05, seed=0)
    return pack_documents(validation, tokenizer, window).input_ids


def save(model, tokenizer, folder):
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def trained_causal_folder(documents, tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    model = MixerForCausalLM(MixerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, n_ctx=N_CTX))
    train, _ = split_documents(documents, validation_fraction=0.05, seed=0)
    windows = pack_documents(train[:150], tokenizer, N_CTX).input_ids
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        batch = windows[torch.randint(0, len(windows), (16,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save(model, tokenizer, tmp_path_factory.mktemp("causal") / "model")


@pytest.fixture(scope="module")
def causal_report(trained_causal_folder, corpus_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "train.jsonl"
    log.write_text('{"step": 1, "train_loss": 5.0}\n{"step": 2, "val_loss": 4.5, "val_bits_per_byte": 3.0}\n')
    out = tmp_path_factory.mktemp("report")
    report = run_report(trained_causal_folder, corpus_file, out, max_windows=12, training_log=str(log), **FAST)
    return report, out


class ConstantLogits(torch.nn.Module):
    """A 'model' giving every token the same logit: probability 1/V everywhere, CE = ln V exactly."""

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab_size))


# ---------------------------------------------------------------- (1) exact numbers on a known model


def test_constant_logits_give_ln_v_and_bits_per_byte_from_the_scored_bytes(documents, tokenizer):
    input_ids = validation_windows(documents, tokenizer, N_CTX)[:10]
    loaded = LoadedModel(ConstantLogits(VOCAB), tokenizer, "mixer", "stub", None)
    summary = evaluate_mixer(loaded, input_ids, {"batch_size": 4, "progress": False})["summary"]
    scored_bytes = sum(len(token_bytes(tokenizer, row[1:])) for row in input_ids)
    scored_tokens = input_ids.shape[0] * (N_CTX - 1)
    assert summary["tokens"] == scored_tokens and summary["bytes"] == scored_bytes
    assert summary["cross_entropy"] == pytest.approx(math.log(VOCAB), rel=1e-6)  # float32 log-softmax
    expected = math.log(VOCAB) * scored_tokens / (math.log(2) * scored_bytes)
    assert summary["bits_per_byte"] == pytest.approx(expected, rel=1e-6)


def test_report_numbers_agree_with_the_evaluate_module(causal_report, documents, tokenizer, trained_causal_folder):
    evaluate = pytest.importorskip("evaluate")
    input_ids = validation_windows(documents, tokenizer, N_CTX)[:12]
    model = MixerForCausalLM.from_pretrained(trained_causal_folder).eval()
    with torch.no_grad():
        output = model(input_ids=input_ids, labels=input_ids)
    nll = output.token_losses.sum(dim=1).tolist()
    num_bytes = token_byte_lengths(tokenizer)[input_ids[:, 1:]].sum(dim=1).tolist()
    previous = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        metric = evaluate.load("evaluation/bits_per_byte")
    finally:
        os.chdir(previous)
    result = metric.compute(nll=nll, num_bytes=num_bytes, num_tokens=[N_CTX - 1] * len(nll))
    summary = causal_report[0]["results"]["summary"]
    assert result["bits_per_byte"] == pytest.approx(summary["bits_per_byte"], rel=1e-5)
    assert result["cross_entropy"] == pytest.approx(summary["cross_entropy"], rel=1e-5)


# ---------------------------------------------------------------- (2) bytes, not characters


def test_multibyte_utf8_text_is_scored_per_byte_and_compressors_read_the_same_bytes(tokenizer):
    text = "Tōkyō 東京 naïve café — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ümlaut ß " * 3
    ids = pack_documents([text], tokenizer, window=1, drop_remainder=True).input_ids.view(1, -1)
    loaded = LoadedModel(ConstantLogits(VOCAB), tokenizer, "mixer", "stub", None)
    summary = evaluate_mixer(loaded, ids, {"batch_size": 1, "progress": False})["summary"]
    full = (text + "\n").encode("utf-8")  # the document, then its end-of-text token (one b"\n")
    first_token_bytes = len(token_bytes(tokenizer, ids[0, :1]))
    assert summary["bytes"] == len(full) - first_token_bytes
    assert summary["bytes"] > len(text) + 1 - first_token_bytes  # more bytes than characters
    expected = math.log(VOCAB) * (ids.shape[1] - 1) / (math.log(2) * summary["bytes"])
    assert summary["bits_per_byte"] == pytest.approx(expected, rel=1e-6)
    windows = scored_window_bytes(tokenizer, ids, 1, torch.tensor([summary["bytes"]]))
    assert windows == [full[first_token_bytes:]]


# ---------------------------------------------------------------- (3) report = direct forward pass


def test_causal_report_equals_the_model_forward_on_the_same_windows(causal_report, documents, tokenizer,
                                                                    trained_causal_folder):
    report, out = causal_report
    input_ids = validation_windows(documents, tokenizer, N_CTX)[:12]
    model = MixerForCausalLM.from_pretrained(trained_causal_folder).eval()
    with torch.no_grad():
        output = model(input_ids=input_ids, labels=input_ids)
    scored_bytes = int(token_byte_lengths(tokenizer)[input_ids[:, 1:]].sum())
    summary = report["results"]["summary"]
    assert summary["tokens"] == int(output.num_tokens) and summary["bytes"] == scored_bytes
    assert summary["cross_entropy"] == pytest.approx(float(output.loss), rel=1e-5)
    assert summary["bits_per_byte"] == pytest.approx(float(output.loss_sum) / (math.log(2) * scored_bytes), rel=1e-5)
    assert summary["cross_entropy"] < math.log(VOCAB) - 0.5  # the 60 steps taught it something
    trivial = report["trivial_encoding"]
    assert trivial["random_ids_loss"] > trivial["in_distribution_loss"] + 0.5

    windows = [token_bytes(tokenizer, row[1:]) for row in input_ids]
    assert report["compressors"]["bytes"] == scored_bytes
    expected = compress_windows(windows, primer=None, methods=["gzip", "zstd"])
    for method, settings in expected.items():
        for setting, value in settings.items():
            assert report["compressors"]["bits_per_byte"][method][setting] == pytest.approx(value, rel=1e-12)
    assert report["compressors"]["primer_bytes"] == 20_000

    saved = json.loads((out / "report.json").read_text())
    assert saved["bits_per_byte"]["memmix causal LM"] == summary["bits_per_byte"]
    markdown = (out / "report.md").read_text()
    assert f"{summary['bits_per_byte']:.4f}" in markdown and "gzip (primed)" in markdown
    for name in ("bits_per_byte.png", "training_curves.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")


def test_autoencoder_report_equals_encode_decode(documents, tokenizer, corpus_file, tmp_path):
    torch.manual_seed(1)
    config = MixerAutoencoderConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, n_ctx=N_CTX,
                                    embedding_dim=16)
    folder = save(MixerAutoencoder(config), tokenizer, tmp_path / "ae")
    report = run_report(folder, corpus_file, tmp_path / "out", max_windows=6, embedding_formats=["int8", "int4"],
                        **FAST)
    input_ids = validation_windows(documents, tokenizer, N_CTX)[:6]
    model = MixerAutoencoder.from_pretrained(folder).eval()
    with torch.no_grad():
        output = model(input_ids=input_ids, labels=input_ids)
    formats = report["results"]["formats"]
    num_bytes = int(token_byte_lengths(tokenizer)[input_ids].sum())
    assert formats["fp32"]["cross_entropy"] == pytest.approx(float(output.loss), rel=1e-5)
    accuracy = float((output.logits.argmax(-1) == input_ids).float().mean())
    assert formats["fp32"]["hamming_accuracy"] == pytest.approx(accuracy)
    # per position (the configured format, fp32 here): the forward's accuracy and loss at each window position
    profile = report["results"]["per_position"]
    hits = (output.logits.argmax(-1) == input_ids).double().mean(0)
    losses = torch.nn.functional.cross_entropy(output.logits.transpose(1, 2), input_ids, reduction="none").mean(0)
    assert profile["token_accuracy"] == pytest.approx(hits.tolist())
    assert profile["cross_entropy"] == pytest.approx(losses.tolist(), rel=1e-5)
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| positions | 1-" in markdown and "window_positions.png" in report["plots"]
    assert (tmp_path / "out" / "window_positions.png").read_bytes().startswith(b"\x89PNG")
    # int8: 16 one-byte codes + one 16-bit scale per window, charged on top of the residual
    assert formats["int8"]["bits_per_vector"] == 16 * 8 + 16
    residual_bits = formats["int8"]["cross_entropy"] * input_ids.numel() / math.log(2)
    assert formats["int8"]["total_bits_per_byte"] == pytest.approx((residual_bits + 6 * 144) / num_bytes, rel=1e-9)
    assert report["results"]["embedding_bits_per_byte_formula"]["4"] == pytest.approx(
        16 * 4 * input_ids.numel() / (N_CTX * num_bytes), rel=1e-9)


def test_memory_report_equals_forward_and_first_chunk_is_unchanged_without_memories(
    documents, tokenizer, corpus_file, tmp_path
):
    torch.manual_seed(2)
    config = MemoryMixerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, n_ctx=8, max_memories=3)
    folder = save(MemoryMixerForCausalLM(config), tokenizer, tmp_path / "memory")
    report = run_report(folder, corpus_file, tmp_path / "out", max_windows=5, copy_windows=3, **FAST)
    input_ids = validation_windows(documents, tokenizer, 32)[:5]
    model = MemoryMixerForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        output = model(input_ids=input_ids, labels=input_ids)
    results = report["results"]
    assert results["summary"]["cross_entropy"] == pytest.approx(float(output.loss), rel=1e-5)
    chunks = results["per_chunk"]
    assert len(chunks["with_memories"]) == 4
    # chunk 1 has no memories either way, so removing them changes nothing there
    assert chunks["with_memories"][0]["cross_entropy"] == pytest.approx(chunks["memories_removed"][0]["cross_entropy"])
    first_chunk = output.token_losses[:, :8]
    assert chunks["with_memories"][0]["cross_entropy"] == pytest.approx(float(first_chunk.mean()), rel=1e-5)
    assert {"first_half_loss", "second_half_loss"} <= set(results["copy_task"])
    assert (tmp_path / "out" / "chunk_losses.png").is_file()
    # chunk recall: every (earlier, later) pair, scored on the repeated tokens the later chunk's own pass predicts
    recall = results["chunk_recall"]
    assert [(pair["source"], pair["target"]) for pair in recall["pairs"]] == [
        (0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    pair = recall["pairs"][2]  # chunk 3 (index 2) repeats chunk 2 (index 1)
    repeated = input_ids[:3].clone()
    repeated[:, 16:24] = input_ids[:3, 8:16]
    with torch.no_grad():
        repeat_losses = model(input_ids=repeated, labels=repeated).token_losses
        alone_losses = model(input_ids=input_ids[:3], labels=input_ids[:3], without_memories=True).token_losses
    assert pair["repeat_loss"] == pytest.approx(float(repeat_losses[:, 16:23].mean()), rel=1e-5)
    assert pair["alone_loss"] == pytest.approx(float(alone_losses[:, 8:15].mean()), rel=1e-5)
    assert pair["recall_gain"] == pytest.approx(pair["alone_loss"] - pair["repeat_loss"])
    assert "### Chunk recall" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(ValueError, match="chunk 1 cannot repeat chunk 1"):
        repeated_chunk_ids(input_ids, 8, 1, 1)


# ---------------------------------------------------------------- (4) clear errors


def test_dataset_too_small_for_one_window(trained_causal_folder, tmp_path):
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(json.dumps({"text": "one short line"}) + "\n" + json.dumps({"text": "another"}) + "\n")
    with pytest.raises(ValueError, match="too small to evaluate.*window of 16 tokens"):
        run_report(trained_causal_folder, str(tiny), tmp_path / "out", **FAST)


def test_model_folder_without_tokenizer(tmp_path):
    folder = save(MixerForCausalLM(MixerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, n_ctx=8)),
                  None, tmp_path / "bare")
    with pytest.raises(ValueError, match="has no tokenizer"):
        load_model_and_tokenizer(folder)


def test_tokenizer_larger_than_model_vocabulary(tokenizer, tmp_path):
    model = MixerForCausalLM(MixerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, n_ctx=8))
    folder = save(model, tokenizer, tmp_path / "small_vocab")
    with pytest.raises(ValueError, match=f"has {len(tokenizer)} tokens, more than the model's vocab_size=100"):
        load_model_and_tokenizer(folder)


def test_hub_id_offline_and_missing_folder_fail_clearly(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="cannot be reached"):
        load_model_and_tokenizer("some-org/some-memmix-model")
    assert main(["--model", "./no/such/folder", "--no_progress"]) == 2
    assert "Model folder not found" in capsys.readouterr().err


# ---------------------------------------------------------------- model card


def test_model_card_update_replaces_matching_results_and_keeps_others(causal_report, tmp_path):
    report, _ = causal_report
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "README.md").write_text(
        "---\nlibrary_name: transformers\nmodel-index:\n- name: tiny\n  results:\n  - task:\n"
        "      type: text-generation\n    dataset:\n      name: docs.jsonl\n      type: text\n"
        "      split: validation\n    metrics:\n    - type: bits_per_byte\n      value: 9.99\n"
        "    - type: perplexity\n      value: 42.0\n---\n\n# tiny\n\nBody text stays.\n"
    )
    for _ in range(2):  # a second update must not duplicate entries
        update_model_card(folder, report)
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    values = {(r.metric_type, r.dataset_name): r.metric_value for r in card.data.eval_results}
    assert values[("bits_per_byte", "docs.jsonl")] == pytest.approx(report["results"]["summary"]["bits_per_byte"])
    assert values[("perplexity", "docs.jsonl")] == 42.0
    assert len(card.data.eval_results) == 3 and "Body text stays." in card.text


def test_oracle_normalized_loss_charges_the_real_stored_size(documents, tokenizer, corpus_file, tmp_path):
    torch.manual_seed(3)
    config = MemoryMixerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, n_ctx=8, max_memories=1,
                               memory_mode="oracle", memory_dim=10)
    folder = save(MemoryMixerForCausalLM(config), tokenizer, tmp_path / "oracle")
    report = run_report(folder, corpus_file, tmp_path / "out", max_windows=4, copy_windows=2,
                        embedding_formats=["int4"], **FAST)
    oracle = report["results"]["oracle"]
    input_ids = validation_windows(documents, tokenizer, 16)[:4]
    with torch.no_grad():
        output = MemoryMixerForCausalLM.from_pretrained(folder).eval()(input_ids=input_ids, labels=input_ids)
    assert oracle["fp32"]["cross_entropy"] == pytest.approx(float(output.loss), rel=1e-5)
    int4 = oracle["int4"]
    assert int4["bits_per_vector"] == 5 * 8 + 16  # 10 values in 5 packed bytes + a bfloat16 scale
    # L_o = bpb_emb * ln 2 * bytes/token = stored bits * ln 2 / n_ctx (nats per token), n_ctx = 8
    offset = int4["bits_per_vector"] * math.log(2) / 8
    assert int4["normalized_loss"] == pytest.approx(int4["cross_entropy"] + offset, rel=1e-9)
    assert int4["normalized_loss_formula"] == pytest.approx(
        int4["cross_entropy"] + 10 * 4 / 8 * math.log(2), rel=1e-9)


# ---------------------------------------------------------------- typed options


def test_report_options_are_checked_once_and_name_the_option():
    from evaluation.options import ReportOptions
    from evaluation.report import build_parser

    for bad, name in [({"split": "test"}, "split"), ({"scoring": "tokens"}, "scoring"), ({"stride": 4}, "stride"),
                      ({"batch_size": 0}, "batch_size"), ({"max_windows": 0}, "max_windows"),
                      ({"validation_fraction": 1.5}, "validation_fraction"), ({"compressors": ["lz4"]}, "compressors"),
                      ({"embedding_formats": ["int3"]}, "embedding_formats"), ({"copy_windows": 0}, "copy_windows")]:
        with pytest.raises(ValueError, match=name):
            ReportOptions(model="m", **bad)
    # the command's defaults are the options' defaults, and the flags map one to one onto fields
    from_flags = ReportOptions.from_args(build_parser().parse_args(["--model", "runs/x/export"]))
    assert from_flags == ReportOptions(model="runs/x/export")
    assert str(from_flags.output_folder) == "reports/export" and from_flags.evaluator.batch_size == 8
