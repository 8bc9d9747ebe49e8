"""Stored chunk embeddings of the embedding-augmented mode: compute, serialize, read back.

Each chunk of ``n_ctx`` tokens of a lane (a shorter last chunk: its real tokens only, as the oracle model is
trained) is embedded by the memory model's encoder and quantized with ``model.quantized_memories`` in the
chosen format (int8, int4, e4m3, ...). What is stored is exactly the format's codes and, for integer formats,
the bfloat16 scale: ``QuantizedEmbedding.num_bits`` bits per chunk, nothing else. Compression reads its own
bytes back through `read_embeddings`, the function decompression uses, so both sides give the decoder the same
dequantized vectors.
"""

from __future__ import annotations

import math

import torch

from modeling_memmix.quantization import QuantizedEmbedding, quantize_embedding


def _layout(embedding_format: str, dim: int) -> tuple[torch.dtype, int, int, bool]:
    """(codes dtype, codes per vector, bytes per vector, has scale) of ``embedding_format``."""
    probe = quantize_embedding(torch.zeros(1, dim), embedding_format)
    per_vector = probe.num_bits // 8
    return probe.codes.dtype, probe.codes.shape[-1], per_vector, probe.scale is not None


def bytes_per_vector(embedding_format: str, dim: int) -> int:
    return _layout(embedding_format, dim)[2]


def _to_bytes(q: QuantizedEmbedding) -> torch.Tensor:
    """``q`` of ``n`` vectors -> ``(n, bytes per vector)`` uint8: codes then scale."""
    codes = q.codes.reshape(-1, q.codes.shape[-1]).contiguous().view(torch.uint8)
    if q.scale is None:
        return codes
    return torch.cat([codes, q.scale.reshape(-1, 1).contiguous().view(torch.uint8)], dim=1)


def chunk_spans(lengths: list[int], chunk: int) -> list[tuple[int, int, int, int]]:
    """(lane, chunk number, start, end) of every chunk, lane after lane; start/end index the block's tokens."""
    spans, offset = [], 0
    for lane, length in enumerate(lengths):
        for number in range(math.ceil(length / chunk)):
            start = offset + number * chunk
            spans.append((lane, number, start, min(start + chunk, offset + length)))
        offset += length
    return spans


def store_embeddings(model, ids: list[int], lengths: list[int], embedding_format: str) -> bytes:
    """The stored embedding bytes of every chunk of every lane (``ids``: the block's tokens, lane after lane)."""
    spans = chunk_spans(lengths, model.config.n_ctx)
    rows: list[torch.Tensor | None] = [None] * len(spans)
    by_length: dict[int, list[int]] = {}
    for index, (_, _, start, end) in enumerate(spans):
        by_length.setdefault(end - start, []).append(index)
    for indices in by_length.values():  # one encoder call per chunk length (full chunks all at once)
        chunks = torch.tensor([ids[spans[i][2] : spans[i][3]] for i in indices], dtype=torch.long)[None]  # (1,n,L)
        stored = _to_bytes(model.quantized_memories(chunks, embedding_format))
        for row, index in enumerate(indices):
            rows[index] = stored[row]
    return torch.stack(rows).numpy().tobytes() if rows else b""


def read_embeddings(data: bytes, lengths: list[int], chunk: int, dim: int, embedding_format: str) -> torch.Tensor:
    """Stored bytes -> dequantized memories ``(R, n_max, dim)`` float32 (zeros where a lane has fewer chunks)."""
    spans = chunk_spans(lengths, chunk)
    dtype, per_codes, per_vector, has_scale = _layout(embedding_format, dim)
    if len(data) != per_vector * len(spans):
        raise ValueError(f"embedding section has {len(data)} bytes, expected {per_vector} x {len(spans)} chunks")
    most = max((number + 1 for _, number, _, _ in spans), default=0)
    memories = torch.zeros(len(lengths), most, dim)
    if not spans:
        return memories
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(len(spans), per_vector)
    code_bytes = per_vector - (2 if has_scale else 0)
    codes = raw[:, :code_bytes].contiguous().view(dtype)
    scale = raw[:, code_bytes:].contiguous().view(torch.bfloat16) if has_scale else None
    assert codes.shape[-1] == per_codes
    values = QuantizedEmbedding(codes, scale, embedding_format, torch.Size((len(spans), dim)),
                                torch.float32).dequantize()
    lanes = torch.tensor([s[0] for s in spans])
    numbers = torch.tensor([s[1] for s in spans])
    memories[lanes, numbers] = values
    return memories


__all__ = ["bytes_per_vector", "chunk_spans", "read_embeddings", "store_embeddings"]
