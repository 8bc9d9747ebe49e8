"""Compression and decompression: files (streamed in blocks, written atomically) and bytes.

Pipeline per block (at most ``block_size`` bytes, cut after a newline near the end when there is one):
bytes -> token ids (`tokens.py`) -> lanes -> the lockstep loop of `predictors.py` with a range coder
(`coding.py`) -> a block record (`stream_format.py`). In the embedding-augmented mode each lane's chunks
are first embedded and stored (`embeddings.py`). Decompression runs the same loop with a decoder and spells the
ids back into bytes; every block's crc32 and, at the end, the length and sha256 of the whole output are checked
before success is reported.

Determinism: all model computation runs in float32 on the CPU with one intra-op thread (`deterministic`),
whatever the caller's ``torch.set_num_threads``; the lanes of a block are batched instead. What is
guaranteed: compress and decompress give bit-identical probabilities on the same machine type and software
(same CPU instruction set as reported by ``torch.backends.cpu.get_cpu_capability()``, same torch/MKL build).
Across other machines the floats of the model may differ in the last bits; the stream records torch's version
and the CPU capability, decompression warns when they differ, and a divergence is caught by the checksums (an
error, never a wrong output).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import constriction
import numpy as np
import torch
from tqdm.auto import tqdm

from .coding import PRECISION_BITS, BlockDecoder, BlockEncoder
from .embeddings import read_embeddings, store_embeddings
from .model_bundle import CodecModel, load_codec_model
from .predictors import CausalPredictor, CorruptStreamError, OraclePredictor, code_block, lane_lengths
from .stream_format import TRAILER_SIZE, BlockRecord, Header, StreamReader, trailer_bytes
from .tokens import bytes_to_ids

CODE_PATH = (
    "memmix_codec/1: float32 cpu, 1 intra-op thread; lanes = even split, lockstep one token per step; causal: "
    "BOS prefill then model(ids, cache, sliding_window=True); embedding: decoder.start on the chunk's stored "
    "embedding then decoder.step, uniform first token; softmax float32, counts floor(p*(2^24-n))+1 for codable "
    f"ids as float32; constriction Categorical(perfect=False) RangeEncoder, precision {PRECISION_BITS}"
)
CODE_FINGERPRINT = hashlib.sha256(CODE_PATH.encode()).digest()[:8]
DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_MAX_LANES = 512
PROGRESS_MIN_BYTES = 1 << 18


@dataclass
class CodecStats:
    """What one compression or decompression did (`--stats`)."""

    original_bytes: int = 0
    stream_bytes: int = 0
    tokens: int = 0
    blocks: int = 0
    lanes: int = 0
    header_bytes: int = 0
    record_overhead_bytes: int = 0
    embedding_bytes: int = 0
    coded_bytes: int = 0
    model_bits: float = 0.0
    raw_bytes: int = 0
    fallback_bytes: int = 0
    seconds: float = 0.0
    mode: str = "causal"
    extra: dict = field(default_factory=dict)

    @property
    def bits_per_byte(self) -> float:
        return 8 * self.stream_bytes / self.original_bytes if self.original_bytes else float("nan")

    @property
    def model_bits_per_byte(self) -> float:
        return self.model_bits / self.original_bytes if self.original_bytes else float("nan")

    @property
    def coder_overhead_bytes(self) -> float:
        """Coded bytes beyond the model's own -log2 p (quantization, range-coder flush)."""
        return self.coded_bytes - self.model_bits / 8

    @property
    def kilobytes_per_second(self) -> float:
        return self.original_bytes / 1000 / self.seconds if self.seconds else float("nan")

    def report(self) -> str:
        lines = [
            f"mode                 {self.mode}",
            f"original             {self.original_bytes} bytes, {self.tokens} tokens in {self.blocks} block(s), "
            f"{self.lanes} lane(s)",
            f"stream               {self.stream_bytes} bytes = {self.bits_per_byte:.4f} bits per byte",
            f"model's prediction   {self.model_bits_per_byte:.4f} bits per byte ({self.model_bits / 8:.0f} bytes)",
            f"coded tokens         {self.coded_bytes} bytes (coder overhead {self.coder_overhead_bytes:+.1f} bytes)",
            f"stored embeddings    {self.embedding_bytes} bytes",
            f"header + records     {self.header_bytes} + {self.record_overhead_bytes} bytes",
            f"byte-coded input     {self.raw_bytes} invalid-UTF-8 bytes, {self.fallback_bytes} tokenizer-fallback bytes",
            f"throughput           {self.kilobytes_per_second:.1f} KB/s ({self.seconds:.2f} s)",
        ]
        return "\n".join(lines)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """One intra-op thread and no autograd for the model computation; the caller's thread count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(threads)


def _as_codec_model(model: str | os.PathLike | CodecModel) -> CodecModel:
    return model if isinstance(model, CodecModel) else load_codec_model(model)


def _blocks(handle: BinaryIO, block_size: int) -> Iterator[bytes]:
    """Blocks of at most ``block_size`` bytes, each cut after the last newline in its final 1/16 if any."""
    carry = b""
    while True:
        data = carry + handle.read(block_size - len(carry))
        if not data:
            return
        if len(data) == block_size:
            cut = data.rfind(b"\n", block_size - block_size // 16)
            if cut >= 0:
                data, carry = data[: cut + 1], data[cut + 1 :]
            else:
                carry = b""
        else:
            carry = b""
        yield data


def default_lane_tokens(model) -> int:
    """Tokens per lane by default: the most context the model reads at once (a causal mixer's ``n_ctx``, a
    memory model's ``n_ctx * (max_memories + 1)``). Longer lanes give more tokens a full context but batch fewer
    lanes per step; for the tiny and small presets 2x longer lanes save only ~0.5 % and halve the speed."""
    return int(getattr(model.config, "max_sequence_length", None) or model.config.n_ctx)


def _choose_lanes(tokens: int, lane_tokens: int, max_lanes: int) -> int:
    if lane_tokens < 1 or max_lanes < 1:
        raise ValueError(f"lane_tokens and max_lanes must be >= 1, got {lane_tokens} and {max_lanes}")
    return max(1, min(max_lanes, tokens // lane_tokens))


def _predictor(codec: CodecModel, lengths: list[int], embedding_format: str, embedding: bytes):
    if codec.mode == "causal":
        return CausalPredictor(codec.model, len(lengths))
    config = codec.model.config
    memories = read_embeddings(embedding, lengths, config.n_ctx, config.memory_dim, embedding_format)
    return OraclePredictor(codec.model, memories)


def embedding_format_of(codec: CodecModel, embedding_format: str | None) -> str:
    if codec.mode == "causal":
        if embedding_format:
            raise ValueError("embedding_format is for an oracle memory model; this model codes causally")
        return ""
    chosen = embedding_format or codec.model.config.embedding_format or "int8"
    if chosen == "fp32":
        raise ValueError("store embeddings in a quantized format (int8, int4, e4m3, ...), not fp32")
    return chosen


def compress_stream(src: BinaryIO, dst: BinaryIO, model: str | os.PathLike | CodecModel, original_length: int,
                    block_size: int = DEFAULT_BLOCK_SIZE, lane_tokens: int | None = None,
                    max_lanes: int = DEFAULT_MAX_LANES, embedding_format: str | None = None,
                    progress: bool | None = None) -> CodecStats:
    """Compress ``original_length`` bytes read from ``src`` into ``dst``; returns the stats.

    Each block is split into ``tokens // lane_tokens`` lanes (at least 1, at most ``max_lanes``) that are coded
    in one batch: more lanes are faster, longer lanes give more tokens their full context. ``lane_tokens``
    defaults to `default_lane_tokens`. The decoder reads the lane count from the stream."""
    if not 1 <= block_size < 1 << 32:
        raise ValueError(f"block_size must be between 1 and 2**32 - 1, got {block_size}")
    codec = _as_codec_model(model)
    fmt = embedding_format_of(codec, embedding_format)
    lane_tokens = lane_tokens or default_lane_tokens(codec.model)
    started = time.perf_counter()
    header = Header(codec.mode, fmt, codec.weights_fp, codec.config_fp, codec.tokenizer_fp, CODE_FINGERPRINT,
                    original_length, _info(codec)).to_bytes()
    dst.write(header)
    stats = CodecStats(original_bytes=original_length, header_bytes=len(header) + TRAILER_SIZE, mode=codec.mode)
    digest, seen = hashlib.sha256(), 0
    show = progress if progress is not None else (original_length > PROGRESS_MIN_BYTES and None)
    bar = tqdm(total=original_length, desc="compress", unit="B", unit_scale=True, disable=show is False)
    with deterministic(), bar:
        for data in _blocks(src, block_size):
            digest.update(data)
            seen += len(data)
            counters: dict = {}
            ids = bytes_to_ids(codec.tokenizer, codec.table, data, counters)
            lengths = lane_lengths(len(ids), _choose_lanes(len(ids), lane_tokens, max_lanes))
            embedding = store_embeddings(codec.model, ids, lengths, fmt) if fmt else b""
            encoder = BlockEncoder()
            if ids:
                _, bits = code_block(_predictor(codec, lengths, fmt, embedding), lengths, encoder, codec.table.allowed,
                                     codec.table.byte_ids[10], ids=ids, progress=show)
            else:  # cannot happen for non-empty data (every byte has a token), kept for safety
                bits = 0.0
            words = encoder.finish().astype("<u4").tobytes()
            record = BlockRecord(len(data), len(ids), len(lengths), zlib.crc32(data), embedding, words)
            dst.write(record.to_bytes())
            stats.blocks += 1
            stats.tokens += len(ids)
            stats.lanes += len(lengths)
            stats.model_bits += bits
            stats.embedding_bytes += len(embedding)
            stats.coded_bytes += len(words)
            stats.record_overhead_bytes += record.overhead
            stats.raw_bytes += counters.get("raw_bytes", 0)
            stats.fallback_bytes += counters.get("fallback_bytes", 0)
            bar.update(len(data))
    if seen != original_length:
        raise ValueError(f"the input changed while compressing: read {seen} bytes, expected {original_length}")
    dst.write(trailer_bytes(seen, digest.digest()))
    stats.stream_bytes = stats.header_bytes + stats.record_overhead_bytes + stats.embedding_bytes + stats.coded_bytes
    stats.seconds = time.perf_counter() - started
    return stats


def _info(codec: CodecModel) -> dict:
    return {"model": codec.source, "torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
            "constriction": getattr(constriction, "__version__", "0.5")}


def check_model(header: Header, codec: CodecModel) -> None:
    """Refuse a stream made by another model, tokenizer or code path, with a message saying which."""
    if header.code_fp != CODE_FINGERPRINT:
        raise CorruptStreamError(
            f"the stream was written by another memmix_codec code path (fingerprint {header.code_fp.hex()}, this "
            f"version {CODE_FINGERPRINT.hex()}); decompress it with the memmix_codec version that wrote it"
        )
    if header.tokenizer_fp != codec.tokenizer_fp:
        raise CorruptStreamError(
            f"different tokenizer: the stream was compressed with tokenizer {header.tokenizer_fp.hex()}, "
            f"{codec.source or 'this model'} has tokenizer {codec.tokenizer_fp.hex()}"
        )
    if header.weights_fp != codec.weights_fp or header.config_fp != codec.config_fp:
        raise CorruptStreamError(
            f"different model: the stream was compressed with weights {header.weights_fp.hex()} / config "
            f"{header.config_fp.hex()} ({header.info.get('model', '?')}), {codec.source or 'this model'} has "
            f"{codec.weights_fp.hex()} / {codec.config_fp.hex()}"
        )
    if header.mode != codec.mode:  # implied by the config, checked for a clear message anyway
        raise CorruptStreamError(f"the stream is in {header.mode} mode, this model codes in {codec.mode} mode")
    here = _info(codec)
    for key in ("torch", "cpu"):
        if header.info.get(key) not in (None, here[key]):
            warnings.warn(
                f"stream written with {key} {header.info[key]!r}, decompressing with {here[key]!r}: bit-identical "
                "probabilities are only guaranteed on the same machine type and software; checksums will tell",
                stacklevel=3,
            )


def read_header(src: BinaryIO) -> Header:
    return StreamReader(src).header()


def decompress_stream(src: BinaryIO, dst: BinaryIO, model: str | os.PathLike | CodecModel | None = None,
                      progress: bool | None = None) -> CodecStats:
    """Decompress ``src`` into ``dst``; raises `CorruptStreamError` (nothing is reported as success) when any
    check fails. ``model`` defaults to the folder recorded in the stream."""
    started = time.perf_counter()
    reader = StreamReader(src)
    header = reader.header()
    if model is None:
        model = header.info.get("model") or ""
        if not model or not os.path.isdir(model):
            raise FileNotFoundError(f"the stream names model folder {model!r}, which does not exist; pass --model")
    codec = _as_codec_model(model)
    check_model(header, codec)
    stats = CodecStats(original_bytes=header.original_length, mode=codec.mode, header_bytes=reader.offset + TRAILER_SIZE)
    digest, written = hashlib.sha256(), 0
    show = progress if progress is not None else (header.original_length > PROGRESS_MIN_BYTES and None)
    bar = tqdm(total=header.original_length, desc="decompress", unit="B", unit_scale=True, disable=show is False)
    with deterministic(), bar:
        while True:
            record = reader.next_record()
            if isinstance(record, tuple):
                total, expected = record
                break
            data = _decode_block(codec, header, record, stats, show)
            if written + len(data) > header.original_length:
                raise CorruptStreamError("corrupt stream: blocks hold more bytes than the header's original length")
            digest.update(data)
            dst.write(data)
            written += len(data)
            bar.update(len(data))
    reader.expect_end()
    if total != written or written != header.original_length:
        raise CorruptStreamError(
            f"corrupt or truncated stream: decoded {written} bytes, header says {header.original_length}, trailer {total}"
        )
    if digest.digest() != expected:
        raise CorruptStreamError("decoded bytes fail the stream's sha256 checksum")
    stats.stream_bytes = reader.offset
    stats.seconds = time.perf_counter() - started
    return stats


def _decode_block(codec: CodecModel, header: Header, record: BlockRecord, stats: CodecStats, show) -> bytes:
    lengths = lane_lengths(record.tokens, record.lanes)
    try:
        predictor = _predictor(codec, lengths, header.embedding_format, record.embedding)
    except ValueError as error:
        raise CorruptStreamError(f"corrupt stream: {error}") from None
    decoder = BlockDecoder(np.frombuffer(record.words, dtype="<u4").astype(np.uint32))
    try:
        ids, bits = code_block(predictor, lengths, decoder, codec.table.allowed, codec.table.byte_ids[10],
                               progress=show) if record.tokens else ([], 0.0)
        data = codec.table.spell(ids)
    except CorruptStreamError:
        raise
    except (ValueError, RuntimeError, AssertionError) as error:  # constriction reports exhausted/invalid words
        raise CorruptStreamError(f"corrupt stream: the coded tokens of a block cannot be decoded ({error})") from None
    if len(data) != record.raw_len or zlib.crc32(data) != record.raw_crc:
        raise CorruptStreamError(
            "decoded block fails its checksum: the stream is corrupt, or this machine computes the model's "
            "probabilities differently from the one that compressed it"
        )
    stats.blocks += 1
    stats.tokens += record.tokens
    stats.lanes += record.lanes
    stats.model_bits += bits
    stats.embedding_bytes += len(record.embedding)
    stats.coded_bytes += len(record.words)
    stats.record_overhead_bytes += record.overhead
    return data


# ----- bytes and files --------------------------------------------------------------------------------------------


def compress_bytes(data: bytes, model: str | os.PathLike | CodecModel, **options) -> bytes:
    """Compress ``data`` with the model in folder ``model`` (or a loaded `CodecModel`); see `compress_stream`."""
    out = io.BytesIO()
    compress_stream(io.BytesIO(data), out, model, len(data), **options)
    return out.getvalue()


def decompress_bytes(stream: bytes, model: str | os.PathLike | CodecModel | None = None, **options) -> bytes:
    """Decompress a stream made by `compress_bytes` / `compress_file`; raises `CorruptStreamError` on any failure."""
    out = io.BytesIO()
    decompress_stream(io.BytesIO(stream), out, model, **options)
    return out.getvalue()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A temporary file next to ``path`` that replaces ``path`` only if the block exits without an error."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part",
                                         delete=False)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise


def compress_file(src: str | os.PathLike, dst: str | os.PathLike, model: str | os.PathLike | CodecModel,
                  **options) -> CodecStats:
    """Compress file ``src`` into ``dst`` (written atomically), streaming block by block."""
    with open(src, "rb") as handle, atomic_output(dst) as out:
        return compress_stream(handle, out, model, os.fstat(handle.fileno()).st_size, **options)


def decompress_file(src: str | os.PathLike, dst: str | os.PathLike,
                    model: str | os.PathLike | CodecModel | None = None, **options) -> CodecStats:
    """Decompress file ``src`` into ``dst``; ``dst`` appears only after every checksum has passed."""
    with open(src, "rb") as handle, atomic_output(dst) as out:
        return decompress_stream(handle, out, model, **options)


__all__ = ["CODE_FINGERPRINT", "CODE_PATH", "CodecStats", "atomic_output", "compress_bytes", "compress_file",
           "compress_stream", "decompress_bytes", "decompress_file", "decompress_stream", "deterministic",
           "read_header"]
