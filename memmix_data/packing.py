"""Train/validation split by document and packing of token streams into fixed windows, with a disk cache.

Documents are tokenized, each followed by the end-of-text token, concatenated and cut into
consecutive non-overlapping windows. Every window carries its exact byte count (from
`token_byte_lengths`), which is what bits per byte divides by. For the memory model the caller
picks `window = n_ctx * (max_memories + 1)`.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import itertools
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from .corpus import BUILTIN_SPEC, builtin_fingerprint, load_documents
from .tokenizer import token_byte_lengths, token_bytes

SPLITS = ("train", "validation")
_TOKENIZE_BATCH_DOCUMENTS = 1000
_CACHE_FORMAT_VERSION = "1"


# ---------------------------------------------------------------------------------------------
# Split by document
# ---------------------------------------------------------------------------------------------


def _document_position(document: str, seed: int | str) -> float:
    """A number in [0, 1) fixed by the document text and the seed."""
    digest = hashlib.sha256(f"{seed}\x00{document}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_documents(
    documents: Iterable[str], validation_fraction: float = 0.05, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split documents into (train, validation) by a hash of their text; order is kept on each side.

    Identical documents always land on the same side, so no text is in both. When the hash puts
    every document on one side, the one closest to the boundary moves over, so each side gets at
    least one document. Needs at least two distinct documents.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be strictly between 0 and 1, got {validation_fraction}")
    documents = list(documents)
    positions = {doc: _document_position(doc, seed) for doc in documents}
    if len(positions) < 2:
        raise ValueError(
            f"Need at least 2 distinct documents to split into train and validation, got {len(positions)}"
        )
    validation_texts = {doc for doc, pos in positions.items() if pos < validation_fraction}
    if not validation_texts:
        validation_texts = {min(positions, key=positions.get)}
    elif len(validation_texts) == len(positions):
        validation_texts.remove(max(positions, key=positions.get))
    train = [doc for doc in documents if doc not in validation_texts]
    validation = [doc for doc in documents if doc in validation_texts]
    return train, validation


def keep_fraction(documents: Iterable[str], fraction: float, seed: int = 0) -> list[str]:
    """The share `fraction` of `documents` picked by a hash of their text (salted apart from the split's).

    For data-scaling runs: the subsets are nested (every document kept at 0.25 is kept at 0.5), and
    the pick is independent of which side of the split a document is on. Order is kept; at least
    one document is kept. `fraction=1` returns every document.
    """
    check_train_fraction(fraction)
    documents = list(documents)
    if fraction == 1.0 or not documents:
        return documents
    positions = [_document_position(doc, f"keep-{seed}") for doc in documents]
    kept = [doc for doc, pos in zip(documents, positions) if pos < fraction]
    return kept or [documents[min(range(len(documents)), key=positions.__getitem__)]]


def check_train_fraction(fraction: float) -> None:
    """Refuse a share of training documents outside (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"train_fraction={fraction!r} must be a share of the training documents in (0, 1]")


# ---------------------------------------------------------------------------------------------
# Packed windows
# ---------------------------------------------------------------------------------------------


class TooLittleTextError(ValueError):
    """The documents give fewer tokens than one window (callers can add advice for this case only)."""


@dataclasses.dataclass
class PackedWindows:
    """Fixed-length token windows and the exact number of text bytes each one stands for.

    `input_ids` (N, window); `num_bytes` (N,); `num_tokens` (N,) real tokens per window: equal
    to `window` except for a padded last window (`drop_remainder=False`). `from_cache` tells
    whether the tensors were read from the disk cache. Items are dicts with `input_ids`, `labels`
    (the ids, -100 on padding) and `num_bytes`, so the default DataLoader collate works.
    """

    input_ids: torch.Tensor
    num_bytes: torch.Tensor
    num_tokens: torch.Tensor
    window: int
    from_cache: bool = False

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, index: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """Window ``index`` (ids, labels with -100 past its tokens, byte count); a 1-D tensor of indices gives
        the batch of those windows in one indexing op."""
        input_ids = self.input_ids[index]
        positions = torch.arange(self.window)
        beyond = positions >= self.num_tokens[index].unsqueeze(-1)  # (window,) or (B, window)
        labels = input_ids.masked_fill(beyond, -100)
        return {"input_ids": input_ids, "labels": labels, "num_bytes": self.num_bytes[index]}

    @property
    def total_bytes(self) -> int:
        return int(self.num_bytes.sum())

    @property
    def total_tokens(self) -> int:
        return int(self.num_tokens.sum())


def _token_stream(documents: Iterable[str], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """All documents' ids, each document followed by the end-of-text id, as one 1-D tensor."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("The tokenizer has no eos_token; packing needs it to mark document ends")
    pieces: list[int] = []
    iterator = iter(documents)
    while batch := list(itertools.islice(iterator, _TOKENIZE_BATCH_DOCUMENTS)):
        # split_special_tokens: a literal "<|endoftext|>" inside a document is plain text, not a boundary.
        encoded = tokenizer(batch, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        for ids in encoded:
            pieces.extend(ids)
            pieces.append(eos)
    return torch.tensor(pieces, dtype=torch.long)


def pack_documents(
    documents: Iterable[str], tokenizer: PreTrainedTokenizerBase, window: int, drop_remainder: bool = True
) -> PackedWindows:
    """Tokenize, join (each document then end-of-text) and cut into non-overlapping `window`-token windows.

    With `drop_remainder=False` the last partial window is kept, padded with the pad token; its
    padding counts zero bytes and gets label -100.
    """
    if window < 1:
        raise ValueError(f"window must be a positive number of tokens, got {window}")
    stream = _token_stream(documents, tokenizer)
    if stream.numel() < window:
        raise TooLittleTextError(
            f"Too little text: the documents give {stream.numel()} tokens (end-of-text tokens included), "
            f"one window needs {window}"
        )
    byte_lengths = token_byte_lengths(tokenizer)[stream]
    num_windows, remainder = divmod(stream.numel(), window)
    num_tokens = torch.full((num_windows,), window, dtype=torch.long)
    if drop_remainder or remainder == 0:
        stream, byte_lengths = stream[: num_windows * window], byte_lengths[: num_windows * window]
    else:
        padding = window - remainder
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        stream = torch.cat([stream, torch.full((padding,), pad_id, dtype=torch.long)])
        byte_lengths = torch.cat([byte_lengths, torch.zeros(padding, dtype=torch.long)])
        num_tokens = torch.cat([num_tokens, torch.tensor([remainder])])
    return PackedWindows(
        input_ids=stream.view(-1, window),
        num_bytes=byte_lengths.view(-1, window).sum(dim=1),
        num_tokens=num_tokens,
        window=window,
    )


def window_text_bytes(
    tokenizer: PreTrainedTokenizerBase, input_ids_row: Sequence[int] | torch.Tensor
) -> bytes:
    """The raw bytes one window stands for (same as `token_bytes`), for the compressor baselines."""
    return token_bytes(tokenizer, input_ids_row)


# ---------------------------------------------------------------------------------------------
# Disk cache
# ---------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the tokenizer's full definition (the content of tokenizer.json)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def _files_fingerprint(files: list[str], digest) -> None:
    for path in files:
        digest.update(os.path.abspath(path).encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)


def corpus_fingerprint(spec: str | list[str]) -> str:
    """sha256 naming a corpus: the built-in text, the content of local files, or a Hub id as written.

    A Hub dataset is named only by its spec string; a changed Hub dataset needs a fresh cache_dir.
    """
    digest = hashlib.sha256()
    for one in [spec] if isinstance(spec, str) else spec:
        digest.update(b"\x00spec\x00" + one.encode())
        if one == BUILTIN_SPEC:
            digest.update(builtin_fingerprint().encode())
        elif glob.has_magic(one) or os.path.isfile(one):
            _files_fingerprint(
                sorted(glob.glob(one, recursive=True)) if glob.has_magic(one) else [one], digest
            )
    return digest.hexdigest()


def _cache_key(**parts) -> str:
    text = "\n".join(f"{name}={value}" for name, value in sorted(parts.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _save_windows_atomically(windows: PackedWindows, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a valid-looking file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "input_ids": windows.input_ids,
        "num_bytes": windows.num_bytes,
        "num_tokens": windows.num_tokens,
    }
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            tmp_name,
            metadata={"window": str(windows.window)},
        )
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _load_windows(path: Path) -> PackedWindows:
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        window = int(handle.metadata()["window"])
    return PackedWindows(window=window, from_cache=True, **tensors)


def load_or_build_windows(
    documents_spec: str | list[str],
    tokenizer: PreTrainedTokenizerBase,
    window: int,
    split: str,
    cache_dir: str | os.PathLike,
    validation_fraction: float = 0.05,
    seed: int = 0,
    text_column: str = "text",
    hub_split: str = "train",
    max_documents: int | None = None,
    train_fraction: float = 1.0,
) -> PackedWindows:
    """Packed windows of one side ("train" or "validation") of a corpus, cached on disk.

    The corpus is loaded with `load_documents`, split by `split_documents` and packed with
    `pack_documents`; the train side keeps only the share `train_fraction` of its documents
    (`keep_fraction`), the validation side is never cut. The result is saved under `cache_dir` with a key made of the corpus
    fingerprint, the tokenizer fingerprint, the window, the split and the split settings; the next
    call with the same key reads the file (`from_cache=True`) instead of tokenizing again.
    `hub_split` is the split of a Hub dataset to read the documents from.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    check_train_fraction(train_fraction)
    key = _cache_key(
        version=_CACHE_FORMAT_VERSION,
        corpus=corpus_fingerprint(documents_spec),
        tokenizer=tokenizer_fingerprint(tokenizer),
        window=window,
        split=split,
        validation_fraction=validation_fraction,
        seed=seed,
        text_column=text_column,
        hub_split=hub_split,
        max_documents=max_documents,
        **({"train_fraction": train_fraction} if split == "train" and train_fraction != 1.0 else {}),
    )
    path = Path(cache_dir) / f"windows-{split}-{window}-{key}.safetensors"
    if path.is_file():
        return _load_windows(path)
    documents = load_documents(
        documents_spec, text_column=text_column, split=hub_split, max_documents=max_documents
    )
    train_docs, validation_docs = split_documents(
        documents, validation_fraction=validation_fraction, seed=seed
    )
    if split == "train":
        train_docs = keep_fraction(train_docs, train_fraction, seed=seed)
    windows = pack_documents(train_docs if split == "train" else validation_docs, tokenizer, window)
    _save_windows_atomically(windows, path)
    return windows
