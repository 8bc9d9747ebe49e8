"""memmix_codec: exact round trips for any bytes, payload equal to the model's bits, determinism across thread
counts and processes, clear errors (and no output file) for corrupt, truncated or foreign streams, and the
embedding-augmented mode's size accounting.

The models are tiny and trained here: a byte-level BPE tokenizer on standard-library docstrings (built into
every Python, nothing downloaded), a causal mixer (hidden 32, 2 layers, n_ctx 32) trained for a few dozen steps
so its predictions are far from uniform, an untrained mixer with the same config (the "wrong model"), a memory
model in ``past`` mode and one in ``oracle`` mode (the embedding-augmented coder), each saved like an export.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import io
import json
import math
import os
import pathlib
import random
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from memmix_codec import (
    CodecModel,
    CodecStats,
    CorruptStreamError,
    cli,
    compress_bytes,
    compress_file,
    decompress_bytes,
    decompress_file,
    load_codec_model,
    read_header,
)
from memmix_codec.codec import compress_stream
from memmix_codec.predictors import bos_id, lane_lengths
from memmix_codec.stream_format import BlockRecord, StreamReader
from memmix_codec.tokens import bytes_to_ids
from memmix_data import train_tokenizer
from modeling_memmix import MemoryMixerConfig, MemoryMixerForCausalLM, MixerConfig, MixerForCausalLM

REPO = pathlib.Path(__file__).resolve().parents[1]


def documents() -> list[str]:
    """Docstrings of a few standard-library modules and their members (deterministic for a Python version)."""
    docs = []
    for module in (argparse, collections, json, re, textwrap, pathlib, inspect):
        docs.append(inspect.getdoc(module) or "")
        for _, member in sorted(vars(module).items()):
            doc = inspect.getdoc(member) if callable(member) else None
            if doc and len(doc) > 80:
                docs.append(doc)
    return [doc for doc in docs if doc]


def token_stream(tokenizer, docs: list[str]) -> torch.Tensor:
    ids = []
    for doc in docs:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    return torch.tensor(ids)


def train(model, stream: torch.Tensor, window: int, steps: int, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, stream.numel() - window, (16,), generator=generator)
        batch = torch.stack([stream[s : s + window] for s in starts.tolist()])
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def build_models(root: pathlib.Path, steps: int = 120) -> dict[str, pathlib.Path]:
    """Save the tokenizer, a trained causal mixer, a second mixer (other weights) and an oracle memory model."""
    docs = documents()
    tokenizer = train_tokenizer(docs, vocab_size=400, save_dir=str(root / "tokenizer"))
    stream = token_stream(tokenizer, docs)
    torch.manual_seed(0)
    paths = {}
    mixer = MixerForCausalLM(MixerConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, n_ctx=32,
                                         intermediate_size=64))
    train(mixer, stream, 32, steps)
    other = MixerForCausalLM(mixer.config)  # same config and tokenizer, other (untrained) weights
    memory_config = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, n_ctx=16,
                         intermediate_size=64, max_memories=1, memory_dim=8, embedding_format="int8")
    oracle = MemoryMixerForCausalLM(MemoryMixerConfig(memory_mode="oracle", **memory_config))
    train(oracle, stream, 32, steps // 2)
    past = MemoryMixerForCausalLM(MemoryMixerConfig(memory_mode="past", **{**memory_config, "max_memories": 2}))
    for name, model in (("mixer", mixer), ("other", other), ("oracle", oracle), ("past", past)):
        folder = root / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        paths[name] = folder
    paths["docs"] = root / "docs.txt"
    paths["docs"].write_text("\n\n".join(docs))
    return paths


# ----- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, pathlib.Path]:
    return build_models(tmp_path_factory.mktemp("codec_models"))


@pytest.fixture(scope="module")
def mixer(models) -> CodecModel:
    return load_codec_model(models["mixer"])


@pytest.fixture(scope="module")
def text(models) -> bytes:
    return models["docs"].read_bytes()


def round_trip(data: bytes, codec, **options) -> bytes:
    stream = compress_bytes(data, codec, progress=False, **options)
    assert decompress_bytes(stream, codec, progress=False) == data
    return stream


# ----- 1. exact round trip ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["empty", "one byte", "random binary", "invalid utf-8", "multi-byte utf-8",
                                  "special token text", "control bytes"])
def test_round_trip_is_exact(mixer, case):
    data = {
        "empty": b"",
        "one byte": b"x",
        "random binary": bytes(random.Random(0).randrange(256) for _ in range(1500)),
        "invalid utf-8": b"ok \xff\xfe caf\xc3 \xe9t\xc3\xa9 \xed\xa0\x80 surrogate, \xf0\x9f\x98 cut",
        "multi-byte utf-8": "Grüße, 東京, Ελληνικά, emoji 🙂🚀, ∑ x² — «quotes»\n".encode() * 3,
        "special token text": b"before <|endoftext|> after <|endoftext|>",
        "control bytes": b"\x00\x01\r\n\t\x7f" * 20,
    }[case]
    round_trip(data, mixer)


def test_invalid_utf8_is_coded_byte_by_byte(mixer):
    data = b"text \xff\xfe more text"
    stats = CodecStats()
    out = io.BytesIO()
    stats = compress_stream(io.BytesIO(data), out, mixer, len(data), progress=False)
    assert stats.raw_bytes == 2
    assert decompress_bytes(out.getvalue(), mixer) == data


class LowercasingTokenizer:
    """A tokenizer that does not spell its input (it lowercases first), like one with a normalizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, **kwargs):
        return self.tokenizer(text.lower(), **kwargs)


def test_text_the_tokenizer_cannot_spell_falls_back_to_bytes(mixer):
    data = b"all lowercase line\nA Line With Capitals\nlowercase again\n"
    counters: dict = {}
    ids = bytes_to_ids(LowercasingTokenizer(mixer.tokenizer), mixer.table, data, counters)
    assert mixer.table.spell(ids) == data
    assert counters["fallback_bytes"] == len(b"A Line With Capitals\n")


def test_text_many_times_the_context_and_several_blocks(mixer, text):
    data = text[:6000]
    assert len(mixer.tokenizer(data.decode())["input_ids"]) > 20 * mixer.model.config.n_ctx
    stream = round_trip(data, mixer, lane_tokens=200)
    header = read_header(io.BytesIO(stream))
    assert header.original_length == len(data)
    out = io.BytesIO()
    stats = compress_stream(io.BytesIO(data), out, mixer, len(data), block_size=1000, progress=False)
    assert stats.blocks >= 6
    assert decompress_bytes(out.getvalue(), mixer) == data


def test_memory_model_carries_memories_across_chunks(models, text):
    past = load_codec_model(models["past"])
    data = text[:3000]  # many chunks of 16 tokens: memories are stored, and the oldest dropped past max_memories
    round_trip(data, past, lane_tokens=400)


def test_files_and_cli_round_trip(models, text, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(text[:2000])
    stats = compress_file(source, tmp_path / "c.mmx", models["mixer"], progress=False)
    assert stats.stream_bytes == (tmp_path / "c.mmx").stat().st_size
    decompress_file(tmp_path / "c.mmx", tmp_path / "out.txt")  # model folder read from the stream
    assert (tmp_path / "out.txt").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mmx", "in.txt", "out.txt"]  # no temporary left


# ----- 2. the payload is the model's bits --------------------------------------------------------------------------


def test_payload_matches_the_models_bits(mixer, text):
    data = text[:4000]
    out = io.BytesIO()
    stats = compress_stream(io.BytesIO(data), out, mixer, len(data), lane_tokens=10**6, progress=False)
    assert stats.lanes == 1
    assert stats.stream_bytes == len(out.getvalue())
    assert stats.stream_bytes == stats.header_bytes + stats.record_overhead_bytes + stats.coded_bytes
    assert abs(8 * stats.coded_bytes - stats.model_bits) <= 0.01 * stats.model_bits
    # independently: the model's full forward over [BOS, ids] (no cache) gives the same -log2 p for a window
    ids = bytes_to_ids(mixer.tokenizer, mixer.table, data)
    n_ctx = mixer.model.config.n_ctx
    piece = mixer.table.spell(ids[: n_ctx - 1])
    piece_ids = bytes_to_ids(mixer.tokenizer, mixer.table, piece)
    assert len(piece_ids) <= n_ctx - 1
    window = torch.tensor([[bos_id(mixer.model), *piece_ids]])
    with torch.no_grad():
        logits = mixer.model(window).logits[0, :-1].masked_fill(~mixer.table.allowed, -math.inf)
    scored = torch.log_softmax(logits.double(), -1)[torch.arange(len(piece_ids)), window[0, 1:]]
    small = compress_stream(io.BytesIO(piece), io.BytesIO(), mixer, len(piece), progress=False)
    assert small.model_bits == pytest.approx(float(-scored.sum() / math.log(2)), rel=1e-4)


def test_model_is_far_from_uniform(mixer, text):
    data = text[:3000]
    stats = compress_stream(io.BytesIO(data), io.BytesIO(), mixer, len(data), progress=False)
    uniform_bits = stats.tokens * math.log2(int(mixer.table.allowed.sum()))
    assert stats.model_bits < 0.8 * uniform_bits


# ----- 3. determinism ------------------------------------------------------------------------------------------


def test_thread_count_does_not_change_streams_or_output(mixer, text):
    data = text[:2500]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = compress_bytes(data, mixer, lane_tokens=100)
        torch.set_num_threads(2)
        two = compress_bytes(data, mixer, lane_tokens=100)
        assert one == two
        assert decompress_bytes(one, mixer) == data
        torch.set_num_threads(1)
        assert decompress_bytes(two, mixer) == data
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before


def test_compress_and_decompress_in_two_fresh_processes(models, text, tmp_path):
    source = tmp_path / "doc.txt"
    source.write_bytes(text[:3000] + b"\xff tail")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "memmix_codec"]
    subprocess.run([*command, "compress", str(source), str(tmp_path / "doc.mmx"), "--model", str(models["mixer"]),
                    "--no-progress"], check=True, env=env, cwd=tmp_path)
    result = subprocess.run([*command, "decompress", str(tmp_path / "doc.mmx"), str(tmp_path / "back.txt"),
                             "--stats", "--no-progress"], check=True, env=env, cwd=tmp_path, capture_output=True,
                            text=True)
    assert (tmp_path / "back.txt").read_bytes() == source.read_bytes()
    assert "bits per byte" in result.stdout


# ----- 4. errors, never garbage ----------------------------------------------------------------------------------


def _fail_to_file(tmp_path, stream: bytes, model, match: str) -> None:
    (tmp_path / "bad.mmx").write_bytes(stream)
    with pytest.raises(CorruptStreamError, match=match):
        decompress_file(tmp_path / "bad.mmx", tmp_path / "out.txt", model, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mmx"]  # no output, no temporary file


def test_corrupted_byte_gives_an_error_and_no_file(mixer, text, tmp_path):
    stream = compress_bytes(text[:2000], mixer)
    for offset in (10, len(stream) // 2, len(stream) - 5):
        bad = bytearray(stream)
        bad[offset] ^= 0x40
        _fail_to_file(tmp_path, bytes(bad), mixer, "corrupt|checksum|not a memmix")


def test_corrupted_coded_words_behind_a_valid_crc_fail_the_checksum(mixer, text, tmp_path):
    """Even when the record's crc is recomputed (a corruption the framing cannot see), the decoded bytes fail
    the block checksum: wrong output is never reported as success."""
    stream = compress_bytes(text[:2000], mixer)
    reader = StreamReader(io.BytesIO(stream))
    header = reader.header()
    start = reader.offset
    record = reader.next_record()
    words = bytearray(record.words)
    words[len(words) // 3] ^= 0x10
    forged = BlockRecord(record.raw_len, record.tokens, record.lanes, record.raw_crc, record.embedding, bytes(words))
    bad = stream[:start] + forged.to_bytes() + stream[reader.offset :]
    assert header.original_length == 2000 and bad != stream
    _fail_to_file(tmp_path, bad, mixer, "checksum|corrupt")


def test_truncated_stream_gives_an_error_and_no_file(mixer, text, tmp_path):
    stream = compress_bytes(text[:2000], mixer)
    for keep in (0, 5, 40, len(stream) // 2, len(stream) - 1):
        _fail_to_file(tmp_path, stream[:keep], mixer, "truncated|not a memmix")


def test_wrong_model_gives_an_error(models, mixer, text, tmp_path):
    stream = compress_bytes(text[:500], mixer)
    _fail_to_file(tmp_path, stream, models["other"], "different model")


def test_wrong_tokenizer_gives_an_error(models, mixer, text, tmp_path):
    other_tokenizer = train_tokenizer(documents()[:40], vocab_size=300)
    wrong = CodecModel.wrap(mixer.model, other_tokenizer)
    stream = compress_bytes(text[:500], mixer)
    _fail_to_file(tmp_path, stream, wrong, "different tokenizer")


def test_cli_reports_errors_with_exit_status_1(models, mixer, text, tmp_path):
    stream = compress_bytes(text[:500], mixer)
    (tmp_path / "s.mmx").write_bytes(stream[:-3])
    code = cli.main(["decompress", str(tmp_path / "s.mmx"), str(tmp_path / "o.txt"), "--model",
                     str(models["mixer"]), "--no-progress"])
    assert code == 1 and not (tmp_path / "o.txt").exists()


# ----- 5. the embedding-augmented mode ---------------------------------------------------------------------------


def test_embedding_augmented_stream_is_embeddings_plus_coded_tokens(models, text):
    oracle = load_codec_model(models["oracle"])
    data = text[:3000]
    out = io.BytesIO()
    stats = compress_stream(io.BytesIO(data), out, oracle, len(data), lane_tokens=300, progress=False)
    stream = out.getvalue()
    assert decompress_bytes(stream, oracle) == data
    assert stats.mode == "embedding"
    assert len(stream) == stats.header_bytes + stats.record_overhead_bytes + stats.embedding_bytes + stats.coded_bytes
    # the stored embedding bits are exactly the QuantizedEmbedding sizes of every chunk of every lane
    ids = bytes_to_ids(oracle.tokenizer, oracle.table, data)
    chunk = oracle.model.config.n_ctx
    lengths = lane_lengths(len(ids), stats.lanes)
    expected_bits, offset = 0, 0
    with torch.no_grad():
        for length in lengths:
            lane = ids[offset : offset + length]
            for start in range(0, length, chunk):
                piece = torch.tensor(lane[start : start + chunk])[None, None]
                expected_bits += oracle.model.quantized_memories(piece, "int8").num_bits
            offset += length
    assert 8 * stats.embedding_bytes == expected_bits
    assert abs(8 * stats.coded_bytes - stats.model_bits) <= 0.01 * stats.model_bits + 64


@pytest.mark.parametrize("embedding_format", ["int4", "e4m3"])
def test_embedding_formats_round_trip(models, text, embedding_format):
    oracle = load_codec_model(models["oracle"])
    round_trip(text[:700], oracle, embedding_format=embedding_format)


def test_embedding_format_needs_an_oracle_model(mixer):
    with pytest.raises(ValueError, match="oracle"):
        compress_bytes(b"abc", mixer, embedding_format="int8")
