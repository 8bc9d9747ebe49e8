"""Byte-level BPE tokenizer for memmix, and exact byte accounting of token ids.

One special token, `<|endoftext|>` (id 0), serves as end of document, beginning of sequence and
padding, as in GPT-2. Every other token stands for a fixed string of raw bytes, written with the
GPT-2 byte-to-unicode table. `token_byte_lengths` and `token_bytes` undo that table exactly, so
bits per byte and the classical-compressor baselines count the very same bytes: the special token
stands for a document boundary and counts as one byte, b"\\n".
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from collections.abc import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = [END_OF_TEXT]
SPECIAL_TOKEN_BYTES = b"\n"
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
_TRAIN_BATCH_DOCUMENTS = 1000


@functools.lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table (printable bytes map to themselves, the rest shifted)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    byte_values, code_points = list(printable), list(printable)
    shift = 0
    for byte in range(256):
        if byte not in printable:
            byte_values.append(byte)
            code_points.append(256 + shift)
            shift += 1
    return {chr(code): byte for byte, code in zip(byte_values, code_points)}


def _batches(documents: Iterable[str], size: int) -> Iterable[list[str]]:
    iterator = iter(documents)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def train_tokenizer(
    documents: Iterable[str], vocab_size: int = 8000, save_dir: str | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (specials first: `<|endoftext|>` is id 0).

    Deterministic for the same documents in the same order. The vocabulary may come out smaller
    than `vocab_size` when the corpus has too few distinct pairs to merge. When `save_dir` is given
    the tokenizer is saved there and loads back with `AutoTokenizer.from_pretrained(save_dir)`.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + specials), got {vocab_size}"
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_batches(documents, _TRAIN_BATCH_DOCUMENTS), trainer=trainer)
    # left padding: batched prompts of different lengths end at the same column, which is what generate()
    # expects (the mixers then run each row at its own absolute positions from 0)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT, pad_token=END_OF_TEXT,
        padding_side="left",
    )
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


def load_or_train_tokenizer(
    path: str | None, documents: Iterable[str], vocab_size: int = 8000
) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved in folder `path` if there is one, else train it (and save it there)."""
    if path is not None and os.path.isfile(os.path.join(path, "tokenizer.json")):
        tokenizer = AutoTokenizer.from_pretrained(path)
        if len(tokenizer) > vocab_size:
            warnings.warn(
                f"Reusing the tokenizer in {path} with {len(tokenizer)} tokens, more than vocab_size={vocab_size}",
                stacklevel=2,
            )
        return tokenizer
    return train_tokenizer(documents, vocab_size=vocab_size, save_dir=path)


def _bytes_of_tokens(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[bytes]:
    """Raw bytes of each id: the special tokens give b"\\n", every other token undoes the byte table."""
    special_ids = set(tokenizer.all_special_ids)
    table = _unicode_to_byte()
    pieces = []
    for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(list(ids))):
        if token_id in special_ids:
            pieces.append(SPECIAL_TOKEN_BYTES)
        else:
            pieces.append(bytes(table[char] for char in token))
    return pieces


def _as_id_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    return ids.reshape(-1).tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]


def token_byte_lengths(tokenizer: PreTrainedTokenizerBase) -> torch.LongTensor:
    """Number of UTF-8 bytes each token id stands for, shape (len(tokenizer),); specials count 1."""
    lengths = [len(piece) for piece in _bytes_of_tokens(tokenizer, range(len(tokenizer)))]
    return torch.tensor(lengths, dtype=torch.long)


def token_bytes(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int] | torch.Tensor) -> bytes:
    """The exact raw bytes a sequence of ids stands for (special tokens give b"\\n")."""
    return b"".join(_bytes_of_tokens(tokenizer, _as_id_list(ids)))
