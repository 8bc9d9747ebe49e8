"""memmix_codec: a lossless compressor whose file size is the model's bits per byte.

A causal memmix model (causal mixer, memory model) predicts each token; constriction's range coder stores it
in about ``-log2 p`` bits. With an oracle memory model (embedding-augmented mode) each chunk is stored as its
quantized embedding plus its tokens coded against the decoder that reads that embedding. Any bytes round-trip
exactly (invalid UTF-8 and text the tokenizer cannot spell are coded byte by byte); the stream records the
model's fingerprints and the original's sha256, and decompression checks both. Try it on a CPU::

    python -m memmix_codec compress notes.txt notes.mmx --model runs/mixer_tiny/export --stats
    python -m memmix_codec decompress notes.mmx notes.txt

    from memmix_codec import compress_bytes, decompress_bytes, load_codec_model
    codec = load_codec_model("runs/mixer_tiny/export")
    assert decompress_bytes(compress_bytes(b"hello", codec), codec) == b"hello"

Modules: ``tokens`` (bytes <-> ids), ``coding`` (integer probabilities, range coder), ``predictors`` (the
models' next-token distributions and the lockstep loop), ``embeddings`` (stored chunk embeddings),
``stream_format`` (the file format), ``model_bundle`` (loading, fingerprints), ``codec`` (the API), ``cli``.
"""

import os

# MKL's conditional numerical reproducibility: results independent of memory alignment, so the encoder and the
# decoder (different processes, different allocations) get bit-identical matrix products. Read by MKL when it
# initializes; set only if the user has not chosen a mode.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from .codec import (  # noqa: E402
    CODE_PATH,
    CodecStats,
    compress_bytes,
    compress_file,
    decompress_bytes,
    decompress_file,
    read_header,
)
from .model_bundle import CodecModel, load_codec_model  # noqa: E402
from .predictors import CorruptStreamError  # noqa: E402

__all__ = [
    "CODE_PATH",
    "CodecModel",
    "CodecStats",
    "CorruptStreamError",
    "compress_bytes",
    "compress_file",
    "decompress_bytes",
    "decompress_file",
    "load_codec_model",
    "read_header",
]
