"""Tests for the model-independent evaluation: measures, `evaluate` modules, compressors and plots.

Run from the repository root: ``python -m pytest -q tests/test_eval_metrics.py`` (about 15 s on 2 CPUs).
"""

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation import metrics
from evaluation.compressors import (
    COMPRESS_FUNCTIONS,
    COMPRESSORS,
    DECOMPRESS_FUNCTIONS,
    compress_windows,
    last_primer_bytes,
)
from evaluation.plots import plot_bits_per_byte, plot_chunk_losses, plot_training_curves

REPO_ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2.0)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- hand computations (plain functions)


def test_uniform_over_256_values_costs_exactly_8_bits_per_byte():
    # A "model" with probability 1/256 on each of 10 one-byte tokens: nll = 10 * ln 256.
    assert metrics.bits_per_byte([10 * math.log(256)], [10]) == pytest.approx(8.0, abs=1e-12)


def test_probability_one_half_per_byte_costs_one_bit_per_byte():
    nll_per_sequence = [7 * LN2, 3 * LN2]  # 7 and 3 bytes, each predicted with p = 1/2
    assert metrics.bits_per_byte(nll_per_sequence, [7, 3]) == pytest.approx(1.0, abs=1e-12)


def test_bits_per_byte_pools_sums_rather_than_averaging_sequences():
    # 1 bit over 1 byte and 0 bits over 9 bytes: 1 bit / 10 bytes, not mean(1.0, 0.0) = 0.5.
    assert metrics.bits_per_byte([LN2, 0.0], [1, 9]) == pytest.approx(0.1)


def test_multibyte_utf8_text_is_measured_in_bytes_not_characters():
    text = "東京"
    num_bytes = len(text.encode("utf-8"))
    assert len(text) == 2 and num_bytes == 6
    # One token per character, each given probability 2**-12: 24 bits for the text.
    nll = 2 * 12 * LN2
    bpb = metrics.bits_per_byte(nll, num_bytes)
    assert bpb == pytest.approx(4.0)  # 24 bits / 6 bytes
    assert bpb != pytest.approx(24 / len(text))  # 12 "bits per character" would be wrong


def test_cross_entropy_and_bytes_per_token_are_pooled_ratios():
    assert metrics.cross_entropy_per_token([6.0, 2.0], [3, 1]) == pytest.approx(2.0)
    assert metrics.bytes_per_token([10, 6], [3, 1]) == pytest.approx(4.0)


def test_bits_per_byte_matches_mission_formula_from_cross_entropy():
    nll, tokens, num_bytes = [30.0, 12.5], [10, 5], [41, 19]
    ce = metrics.cross_entropy_per_token(nll, tokens)
    tokens_per_byte = sum(tokens) / sum(num_bytes)  # L_t / L_b
    assert metrics.bits_per_byte(nll, num_bytes) == pytest.approx(tokens_per_byte * ce / LN2)


def test_normalized_loss_against_hand_calculation():
    # 512 values at 8 bits per 512-token window, 4 bytes per token:
    # bpb_emb = 4096 / (512 * 4) = 2 bits per byte; L_o = 2 * ln 2 * 4 = 8 ln 2 nats per token.
    bpb_emb = metrics.embedding_bits_per_byte(512, 8, 512, 4.0)
    assert bpb_emb == pytest.approx(2.0)
    assert metrics.loss_offset(bpb_emb, 4.0) == pytest.approx(8 * LN2)
    assert metrics.normalized_loss(2.0, 512, 8, 512, 4.0) == pytest.approx(2.0 + 8 * LN2)
    assert metrics.normalized_loss_from_size(2.0, 4096, 512, 4.0) == pytest.approx(2.0 + 8 * LN2)
    assert metrics.embedding_bits_per_byte_from_size(4096, 512, 4.0) == pytest.approx(bpb_emb)


def test_normalized_loss_in_bits_per_byte_is_model_plus_embedding_cost():
    ce, bytes_per_token = 2.7, 3.3
    loss = metrics.normalized_loss(ce, 1024, 4, 256, bytes_per_token)
    bpb_emb = metrics.embedding_bits_per_byte(1024, 4, 256, bytes_per_token)
    assert loss / (LN2 * bytes_per_token) == pytest.approx(ce / (LN2 * bytes_per_token) + bpb_emb)


def test_information_retained_endpoints_and_midpoint():
    assert metrics.information_retained(math.log(100), 100) == pytest.approx(0.0)
    assert metrics.information_retained(0.0, 100) == pytest.approx(1.0)
    assert metrics.information_retained(math.log(100) / 2, 100) == pytest.approx(0.5)


def test_hamming_accuracy_ignores_padding_and_accepts_tensors():
    torch = pytest.importorskip("torch")
    predicted = [[1, 2, 3, 4], [5, 6, 7, 8]]
    target = [[1, 9, 3, -100], [5, 6, -100, -100]]
    assert metrics.hamming_accuracy(predicted, target) == pytest.approx(4 / 5)
    assert metrics.hamming_accuracy(torch.tensor(predicted), torch.tensor(target)) == pytest.approx(4 / 5)


def test_autoencoder_total_bits_per_byte_hand_calculation():
    # 1 bit per token for 100 tokens, plus 2 windows x 800 bits, over 400 bytes: 1700 / 400.
    total = metrics.autoencoder_total_bits_per_byte(LN2, 100, 400, 800, 2)
    assert total == pytest.approx(4.25)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.bits_per_byte([-1.0], [3]), "nll_nats must be >= 0"),
        (lambda: metrics.bits_per_byte([1.0], [0]), "num_bytes must be >= 1"),
        (lambda: metrics.bits_per_byte([1.0, 2.0], [3]), "nll_nats has 2 values but num_bytes has 1"),
        (lambda: metrics.bits_per_byte([1.0], [2.5]), "whole numbers"),
        (lambda: metrics.bits_per_byte([], []), "empty"),
        (lambda: metrics.bits_per_byte([float("nan")], [3]), "non-finite"),
        (lambda: metrics.cross_entropy_per_token([1.0], [0]), "num_tokens must be >= 1"),
        (lambda: metrics.embedding_bits_per_byte(0, 8, 512, 4.0), "n_values"),
        (lambda: metrics.embedding_bits_per_byte(8, 8, 0, 4.0), "n_ctx"),
        (lambda: metrics.loss_offset(1.0, 0.0), "bytes_per_token"),
        (lambda: metrics.information_retained(1.0, 1), "vocab_size must be >= 2"),
        (lambda: metrics.hamming_accuracy([1, 2], [1]), "shape"),
        (lambda: metrics.hamming_accuracy([1], [-100]), "no positions to score"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- `evaluate` modules


@pytest.fixture(scope="module")
def evaluate_in_repo_root():
    """`evaluate`, with the working directory at the repository root so relative module paths resolve."""
    evaluate = pytest.importorskip("evaluate")
    previous = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        yield evaluate
    finally:
        os.chdir(previous)


def _random_sequences(seed: int, count: int = 7):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, 200, size=count)
    num_bytes = tokens * rng.uniform(1.0, 6.0, size=count)
    nll = tokens * rng.uniform(0.5, 5.0, size=count)
    return nll.tolist(), tokens.tolist(), np.ceil(num_bytes).astype(int).tolist()


def test_bits_per_byte_module_agrees_with_plain_functions(evaluate_in_repo_root, tmp_path):
    metric = evaluate_in_repo_root.load("evaluation/bits_per_byte", cache_dir=str(tmp_path))
    nll, tokens, num_bytes = _random_sequences(seed=0)
    result = metric.compute(nll=nll, num_bytes=num_bytes, num_tokens=tokens)
    assert result["bits_per_byte"] == pytest.approx(metrics.bits_per_byte(nll, num_bytes), rel=1e-12)
    assert result["cross_entropy"] == pytest.approx(metrics.cross_entropy_per_token(nll, tokens), rel=1e-12)
    assert result["bytes_per_token"] == pytest.approx(metrics.bytes_per_token(num_bytes, tokens), rel=1e-12)
    assert result["num_bytes"] == sum(num_bytes) and result["num_tokens"] == sum(tokens)


def test_bits_per_byte_module_exact_case_and_optional_token_counts(evaluate_in_repo_root, tmp_path):
    metric = evaluate_in_repo_root.load("evaluation/bits_per_byte", cache_dir=str(tmp_path))
    result = metric.compute(nll=[10 * math.log(256)], num_bytes=[10])
    assert result["bits_per_byte"] == pytest.approx(8.0, abs=1e-12)
    assert "cross_entropy" not in result
    # Accumulating batches gives the pooled answer, not a mean of batch answers.
    metric.add_batch(nll=[LN2], num_bytes=[1])
    metric.add_batch(nll=[0.0, 0.0], num_bytes=[4, 5])
    assert metric.compute()["bits_per_byte"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="nll\\[0\\] must be a finite number >= 0"):
        metric.compute(nll=[-1.0], num_bytes=[3])
    with pytest.raises(ValueError, match="num_tokens is missing for some sequences"):
        metric.compute(nll=[1.0, 1.0], num_bytes=[3, 3], num_tokens=[None, 2])


def test_normalized_loss_module_agrees_with_plain_functions(evaluate_in_repo_root, tmp_path):
    metric = evaluate_in_repo_root.load("evaluation/normalized_loss", cache_dir=str(tmp_path))
    nll, tokens, num_bytes = _random_sequences(seed=1)
    result = metric.compute(
        nll=nll, num_tokens=tokens, num_bytes=num_bytes, n_values=256, bits_per_value=4, n_ctx=128
    )
    ce = metrics.cross_entropy_per_token(nll, tokens)
    bpt = metrics.bytes_per_token(num_bytes, tokens)
    bpb_emb = metrics.embedding_bits_per_byte(256, 4, 128, bpt)
    assert result["cross_entropy"] == pytest.approx(ce, rel=1e-12)
    assert result["embedding_bits_per_byte"] == pytest.approx(bpb_emb, rel=1e-12)
    assert result["loss_offset"] == pytest.approx(metrics.loss_offset(bpb_emb, bpt), rel=1e-12)
    assert result["normalized_loss"] == pytest.approx(
        metrics.normalized_loss(ce, 256, 4, 128, bpt), rel=1e-12
    )
    assert result["bits_per_byte"] == pytest.approx(metrics.bits_per_byte(nll, num_bytes), rel=1e-12)
    assert result["total_bits_per_byte"] == pytest.approx(
        metrics.bits_per_byte(nll, num_bytes) + bpb_emb, rel=1e-12
    )
    by_size = metric.compute(nll=nll, num_tokens=tokens, num_bytes=num_bytes, embedding_bits=1024, n_ctx=128)
    assert by_size["normalized_loss"] == pytest.approx(
        metrics.normalized_loss_from_size(ce, 1024, 128, bpt), rel=1e-12
    )


def test_normalized_loss_module_hand_calculation_and_errors(evaluate_in_repo_root, tmp_path):
    metric = evaluate_in_repo_root.load("evaluation/normalized_loss", cache_dir=str(tmp_path))
    result = metric.compute(
        nll=[2.0 * 512], num_tokens=[512], num_bytes=[2048], n_values=512, bits_per_value=8, n_ctx=512
    )
    assert result["embedding_bits_per_byte"] == pytest.approx(2.0)
    assert result["normalized_loss"] == pytest.approx(2.0 + 8 * LN2)
    with pytest.raises(ValueError, match="not both"):
        metric.compute(
            nll=[1.0], num_tokens=[1], num_bytes=[1], n_values=4, bits_per_value=8, embedding_bits=32, n_ctx=8
        )
    with pytest.raises(ValueError, match="n_ctx"):
        metric.compute(nll=[1.0], num_tokens=[1], num_bytes=[1], embedding_bits=32)


def test_modules_load_from_repo_root_in_offline_mode():
    """A fresh interpreter with the Hub switched off loads both modules by their relative path."""
    pytest.importorskip("evaluate")
    script = (
        "import json, math, evaluate\n"
        "bpb = evaluate.load('evaluation/bits_per_byte')\n"
        "nl = evaluate.load('evaluation/normalized_loss')\n"
        "print(json.dumps([bpb.compute(nll=[10 * math.log(2)], num_bytes=[10])['bits_per_byte'],\n"
        "    nl.compute(nll=[1024.0], num_tokens=[512], num_bytes=[2048], embedding_bits=4096,\n"
        "               n_ctx=512)['embedding_bits_per_byte']]))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    bits, embedding_bpb = json.loads(completed.stdout.strip().splitlines()[-1])
    assert bits == pytest.approx(1.0) and embedding_bpb == pytest.approx(2.0)


# ---------------------------------------------------------------- compressors


def _pseudo_text(seed: int, num_words: int) -> bytes:
    """Deterministic word salad with some multi-byte characters: compressible, but not trivially."""
    words = (
        "the of and memory model window token byte mixer layer embedding loss chunk train "
        "evaluate compress stream primer 東京 café naïve Ωmega data value signal"
    ).split()
    rng = random.Random(seed)
    return " ".join(rng.choice(words) + str(rng.randrange(100)) for _ in range(num_words)).encode("utf-8")


@pytest.fixture(scope="module")
def repeated_text_results():
    text = _pseudo_text(seed=0, num_words=1200)  # about 10 kB
    novel = _pseudo_text(seed=1, num_words=60)
    stream = text + novel
    windows = [stream[start : start + 1024] for start in range(0, len(stream), 1024)]
    return windows, compress_windows(windows, primer=text, progress=False)


@pytest.mark.parametrize("method", sorted(COMPRESSORS))
def test_compressed_data_round_trips_and_size_is_its_length(method):
    data = _pseudo_text(seed=2, num_words=300)
    compressed = COMPRESS_FUNCTIONS[method](data)
    assert DECOMPRESS_FUNCTIONS[method](compressed) == data
    assert COMPRESSORS[method](data) == len(compressed) < len(data)


def test_every_method_reports_three_positive_settings(repeated_text_results):
    _, results = repeated_text_results
    assert set(results) == set(COMPRESSORS)
    for method, settings in results.items():
        assert set(settings) == {"per_window", "stream", "primed"}, method
        for setting, bpb in settings.items():
            assert 0 < bpb < 8, (method, setting, bpb)


def test_stream_equals_size_of_real_compressed_stream(repeated_text_results):
    windows, results = repeated_text_results
    stream = b"".join(windows)
    for method, settings in results.items():
        compressed = COMPRESS_FUNCTIONS[method](stream)
        assert DECOMPRESS_FUNCTIONS[method](compressed) == stream
        assert settings["stream"] == pytest.approx(8 * len(compressed) / len(stream))


def test_windows_alone_cost_more_and_priming_with_the_same_text_costs_much_less(repeated_text_results):
    _, results = repeated_text_results
    for method, settings in results.items():
        assert settings["per_window"] > settings["stream"], method
        assert settings["primed"] < 0.5 * settings["stream"], method


def test_max_primer_bytes_keeps_the_end_of_the_primer():
    assert last_primer_bytes(b"abcdef", 2) == b"ef"
    assert last_primer_bytes(b"abcdef", None) == b"abcdef"
    text = _pseudo_text(seed=3, num_words=600)
    filler = _pseudo_text(seed=4, num_words=300)
    windows = [text[:2048], text[2048:4096]]
    full = compress_windows(windows, primer=text + filler, methods=["zstd"], progress=False)
    cut = compress_windows(
        windows, primer=text + filler, methods=["zstd"], max_primer_bytes=len(filler), progress=False
    )
    assert full["zstd"]["primed"] < 0.5 * cut["zstd"]["primed"]  # the useful part was cut away


def test_no_primer_means_no_primed_setting():
    results = compress_windows([b"hello world " * 20], methods=["gzip"], progress=False)
    assert set(results["gzip"]) == {"per_window", "stream"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"windows": []}, "windows is empty"),
        ({"windows": ["text"]}, "expected bytes"),
        ({"windows": [b""]}, "windows\\[0\\] is empty"),
        ({"windows": [b"abc"], "methods": ["lz4"]}, "unknown compression method"),
        ({"windows": [b"abc"], "primer": b"x", "max_primer_bytes": 0}, "max_primer_bytes must be > 0"),
    ],
)
def test_compress_windows_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress_windows(**kwargs)


# ---------------------------------------------------------------- plots


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_plot_functions_write_png_files(tmp_path):
    bars = plot_bits_per_byte(
        {"memmix": 1.2, "xz (stream)": 2.3, "gzip (stream)": 2.9}, tmp_path / "a/bpb.png"
    )
    _assert_png(bars)
    chunks = plot_chunk_losses(
        {"with memory": [3.1, 2.6, 2.4], "without memory": [3.1, 3.0, 3.0]}, tmp_path / "chunks.png"
    )
    _assert_png(chunks)
    log = tmp_path / "log.jsonl"
    lines = [{"step": step, "train_loss": 5.0 - step / 100} for step in range(0, 100, 10)]
    lines += [{"step": 50, "val_loss": 4.6, "val_bits_per_byte": 1.7}, {"step": 99, "val_loss": 4.1}]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    _assert_png(plot_training_curves(log, tmp_path / "train.png"))


def test_plots_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="results is empty"):
        plot_bits_per_byte({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="must be a finite number"):
        plot_bits_per_byte({"m": float("nan")}, tmp_path / "x.png")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"step": 1, "train_loss": 2.0}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.jsonl:2 is not valid JSON"):
        plot_training_curves(broken, tmp_path / "x.png")
    no_loss = tmp_path / "no_loss.jsonl"
    no_loss.write_text('{"step": 1, "lr": 0.001}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="no 'train_loss' or 'val_loss'"):
        plot_training_curves(no_loss, tmp_path / "x.png")
