"""The memmix_codec stream format (version 1): a header, one record per block, a trailer. Little-endian.

Header::

    b"MMXCODEC"                8   magic
    version                    u16 (1)
    mode                       u8  0 = causal, 1 = embedding-augmented (oracle memory model)
    embedding format           u8 length + ASCII ("" in causal mode)
    weights / config / tokenizer fingerprints   3 x 8 bytes (model_bundle.py)
    code-path fingerprint      8   (codec.CODE_PATH: how probabilities are computed and coded)
    original length            u64
    info                       u16 length + UTF-8 JSON (model folder, torch version, CPU capability; advisory)
    header crc32               u32 of all bytes above

Block record (``raw_len`` bytes of the original)::

    b"B", raw_len u32, tokens u32, lanes u32, embedding bytes u32, coded words u32, crc32 of the raw bytes u32,
    crc32 of these 25 bytes u32, then the embedding bytes (stored codes and scales of every chunk, lane after
    lane), the coded uint32 words, and a crc32 of both.

Trailer: ``b"E"``, total length u64, sha256 of the original bytes (32), crc32 of these 41 bytes.

Every length is checked while reading; a short read is a truncated stream, a crc mismatch a corrupt one
(`CorruptStreamError` with the offset), before anything is decoded.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from .predictors import CorruptStreamError

MAGIC = b"MMXCODEC"
VERSION = 1
MODES = {"causal": 0, "embedding": 1}
_BLOCK = struct.Struct("<cIIIIII")
_TRAILER = struct.Struct("<cQ32s")


@dataclass
class Header:
    mode: str
    embedding_format: str
    weights_fp: bytes
    config_fp: bytes
    tokenizer_fp: bytes
    code_fp: bytes
    original_length: int
    info: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        fmt = self.embedding_format.encode("ascii")
        info = json.dumps(self.info, sort_keys=True).encode()
        body = (MAGIC + struct.pack("<HB", VERSION, MODES[self.mode]) + bytes([len(fmt)]) + fmt + self.weights_fp
                + self.config_fp + self.tokenizer_fp + self.code_fp + struct.pack("<QH", self.original_length,
                                                                                   len(info)) + info)
        return body + struct.pack("<I", zlib.crc32(body))


@dataclass
class BlockRecord:
    raw_len: int
    tokens: int
    lanes: int
    raw_crc: int
    embedding: bytes
    words: bytes  # the coded uint32 words, as bytes

    def to_bytes(self) -> bytes:
        fixed = _BLOCK.pack(b"B", self.raw_len, self.tokens, self.lanes, len(self.embedding), len(self.words) // 4,
                            self.raw_crc)
        body = self.embedding + self.words
        return fixed + struct.pack("<I", zlib.crc32(fixed)) + body + struct.pack("<I", zlib.crc32(body))

    @property
    def overhead(self) -> int:
        """Bytes of this record that are neither embedding codes nor coded tokens."""
        return _BLOCK.size + 8


def trailer_bytes(total_length: int, sha256: bytes) -> bytes:
    body = _TRAILER.pack(b"E", total_length, sha256)
    return body + struct.pack("<I", zlib.crc32(body))


TRAILER_SIZE = _TRAILER.size + 4


class StreamReader:
    """Reads a stream from a binary file, raising `CorruptStreamError` for anything short or malformed."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.offset = handle, 0

    def read(self, size: int, what: str) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise CorruptStreamError(
                f"truncated stream: {what} needs {size} bytes at offset {self.offset}, only {len(data)} left"
            )
        self.offset += size
        return data

    def header(self) -> Header:
        start = self.read(len(MAGIC), "the magic")
        if start != MAGIC:
            raise CorruptStreamError(f"not a memmix_codec stream (magic {start!r}, expected {MAGIC!r})")
        version, mode = struct.unpack("<HB", self.read(3, "the header"))
        if version != VERSION:
            raise CorruptStreamError(f"stream format version {version}; this memmix_codec reads version {VERSION}")
        fmt_len = self.read(1, "the header")[0]
        fmt = self.read(fmt_len, "the header")
        fps = self.read(32, "the fingerprints")
        original_length, info_len = struct.unpack("<QH", self.read(10, "the header"))
        info = self.read(info_len, "the header")
        (crc,) = struct.unpack("<I", self.read(4, "the header checksum"))
        body = MAGIC + struct.pack("<HB", version, mode) + bytes([fmt_len]) + fmt + fps + struct.pack(
            "<QH", original_length, info_len) + info
        if zlib.crc32(body) != crc:
            raise CorruptStreamError("corrupt stream: the header checksum does not match")
        modes = {v: k for k, v in MODES.items()}
        if mode not in modes:
            raise CorruptStreamError(f"corrupt stream: unknown mode {mode}")
        return Header(modes[mode], fmt.decode("ascii"), fps[:8], fps[8:16], fps[16:24], fps[24:32],
                      original_length, json.loads(info))

    def next_record(self) -> BlockRecord | tuple[int, bytes]:
        """The next block record, or ``(total_length, sha256)`` from the trailer."""
        start = self.offset
        tag = self.read(1, "a block or the trailer")
        if tag == b"E":
            rest = self.read(TRAILER_SIZE - 1, "the trailer")
            _, total, digest = _TRAILER.unpack(tag + rest[:-4])
            if zlib.crc32(tag + rest[:-4]) != struct.unpack("<I", rest[-4:])[0]:
                raise CorruptStreamError(f"corrupt stream: the trailer at offset {start} fails its checksum")
            return total, digest
        if tag != b"B":
            raise CorruptStreamError(f"corrupt stream: expected a block at offset {start}, found tag {tag!r}")
        fixed = tag + self.read(_BLOCK.size - 1, "a block header")
        (crc,) = struct.unpack("<I", self.read(4, "a block header checksum"))
        if zlib.crc32(fixed) != crc:
            raise CorruptStreamError(f"corrupt stream: the block header at offset {start} fails its checksum")
        _, raw_len, tokens, lanes, emb_len, n_words, raw_crc = _BLOCK.unpack(fixed)
        body = self.read(emb_len + 4 * n_words, "a block body")
        (body_crc,) = struct.unpack("<I", self.read(4, "a block checksum"))
        if zlib.crc32(body) != body_crc:
            raise CorruptStreamError(f"corrupt stream: the block at offset {start} fails its checksum")
        if lanes == 0 or lanes > max(tokens, 1) or tokens > raw_len:
            raise CorruptStreamError(f"corrupt stream: block at offset {start} has {tokens} tokens in {lanes} lanes")
        return BlockRecord(raw_len, tokens, lanes, raw_crc, body[:emb_len], body[emb_len:])

    def expect_end(self) -> None:
        if self.handle.read(1):
            raise CorruptStreamError(f"corrupt stream: extra bytes after the trailer at offset {self.offset}")


__all__ = ["BlockRecord", "Header", "MAGIC", "StreamReader", "TRAILER_SIZE", "VERSION", "trailer_bytes"]
