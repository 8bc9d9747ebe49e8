"""memmix data pipeline: corpora (built-in, local files, Hub), byte-level BPE tokenizer, packed windows.

Typical use::

    documents = load_documents("builtin")
    tokenizer = load_or_train_tokenizer("runs/tokenizer", documents, vocab_size=8000)
    train = load_or_build_windows("builtin", tokenizer, window=512, split="train", cache_dir="runs/cache")
"""

from memmix_hub import HubUnreachableError  # the one "Hub cannot be reached" error, re-exported

from .corpus import (
    builtin_documents,
    builtin_fingerprint,
    check_local_files,
    check_utf8,
    load_documents,
    package_docstrings,
)
from .packing import (
    PackedWindows,
    TooLittleTextError,
    check_train_fraction,
    corpus_fingerprint,
    keep_fraction,
    load_or_build_windows,
    pack_documents,
    split_documents,
    tokenizer_fingerprint,
    window_text_bytes,
)
from .tokenizer import (
    END_OF_TEXT,
    load_or_train_tokenizer,
    token_byte_lengths,
    token_bytes,
    train_tokenizer,
)

__all__ = [
    "END_OF_TEXT",
    "HubUnreachableError",
    "PackedWindows",
    "TooLittleTextError",
    "builtin_documents",
    "builtin_fingerprint",
    "check_local_files",
    "check_train_fraction",
    "check_utf8",
    "corpus_fingerprint",
    "keep_fraction",
    "load_documents",
    "load_or_build_windows",
    "load_or_train_tokenizer",
    "pack_documents",
    "package_docstrings",
    "split_documents",
    "token_byte_lengths",
    "token_bytes",
    "tokenizer_fingerprint",
    "train_tokenizer",
    "window_text_bytes",
]
