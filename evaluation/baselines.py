"""Classical-compressor baselines on exactly the bytes a report scores the model on.

Window scoring: the raw bytes of each window's scored tokens (tokens ``1 .. T-1`` for causal families, all
tokens for the autoencoder), checked against the byte counts the model's bits per byte divide by. Document
scoring: each document's UTF-8 text. The compressors themselves are in evaluation/compressors.py; here they
are primed with the training split's last bytes, unless ``--split all`` (no training text is left out) or
``max_primer_bytes`` is 0.
"""

from __future__ import annotations

import torch

from evaluation.compressors import compress_windows
from evaluation.loading import EvaluationData, LoadedModel
from evaluation.measures import first_scored_position, scored_token_bytes
from evaluation.options import EvaluatorOptions
from memmix_data import token_bytes

NO_PRIMER_WITH_SPLIT_ALL = "off: --split all scores every document, so no training text is left to prime with"


def scored_window_bytes(tokenizer, input_ids: torch.Tensor, start: int, expected: torch.Tensor) -> list[bytes]:
    """The raw bytes of each window's scored tokens; checked against the byte counts the model is scored on."""
    windows = [token_bytes(tokenizer, row[start:]) for row in input_ids]
    for index, (window, count) in enumerate(zip(windows, expected.tolist())):
        if len(window) != count:
            raise RuntimeError(f"window {index}: {len(window)} bytes of text but {count} bytes scored")
    return windows


def compress_pieces(pieces: list[bytes], data: EvaluationData, options: EvaluatorOptions, unit: str = "window") -> dict:
    """The compressors on `pieces` (windows or documents), primed unless --split all or no primer bytes."""
    primer = data.primer if options.max_primer_bytes and data.split != "all" else None
    results = compress_windows(pieces, primer=primer, methods=list(options.compressors), progress=options.progress)
    if unit != "window":
        results = {method: {key.replace("per_window", f"per_{unit}"): value for key, value in settings.items()}
                   for method, settings in results.items()}
    if primer:
        source = f"last bytes of the {'train' if data.split == 'validation' else 'same'} split"
    elif data.split == "all":
        source = NO_PRIMER_WITH_SPLIT_ALL
    else:
        source = None
    return {
        "bits_per_byte": results,
        "bytes": sum(len(piece) for piece in pieces),
        "unit": unit,
        "primer_bytes": len(primer) if primer else 0,
        "primer_source": source,
    }


def compressor_baselines(
    loaded: LoadedModel, data: EvaluationData, input_ids: torch.Tensor, options: EvaluatorOptions
) -> dict:
    """The compressors on the scored bytes of every window."""
    start = first_scored_position(loaded.family)
    expected = scored_token_bytes(loaded.tokenizer, input_ids, start).sum(dim=1)
    windows = scored_window_bytes(loaded.tokenizer, input_ids, start, expected)
    return compress_pieces(windows, data, options)


def document_compressor_baselines(data: EvaluationData, options: EvaluatorOptions) -> dict:
    """The compressors on exactly the bytes document mode scores: each document's UTF-8 text."""
    return compress_pieces([document.encode("utf-8") for document in data.documents], data, options,
                           unit="document")


__all__ = [
    "NO_PRIMER_WITH_SPLIT_ALL",
    "compress_pieces",
    "compressor_baselines",
    "document_compressor_baselines",
    "scored_window_bytes",
]
