"""A run's tokenizer and packed train / validation windows (`memmix_data`), built once per machine (the main
process first, the others then read its files) and checked against the model and the batch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from accelerate import Accelerator
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from memmix_data import (
    PackedWindows,
    TooLittleTextError,
    keep_fraction,
    load_documents,
    load_or_build_windows,
    load_or_train_tokenizer,
    split_documents,
)
from memmix_hub import looks_like_hub_id

from .config import DataConfig, RunConfig


def window_length(model_config) -> int:
    """Tokens per training window: n_ctx, or n_ctx * (max_memories + 1) for the memory model."""
    return getattr(model_config, "max_sequence_length", model_config.n_ctx)


def tokenizer_source(config: RunConfig) -> str | None:
    """Folder of an existing tokenizer to reuse: data.tokenizer, else the autoencoder's or the init_from
    checkpoint's, else None."""
    train = config.train
    return config.data.tokenizer or train.init_from_autoencoder or train.init_from


def training_documents(data: DataConfig) -> Iterator[str]:
    """The train side of the corpus (its share ``data.train_fraction``), read only when iterated (a saved tokenizer
    needs no documents)."""
    documents = load_documents(data.corpus, text_column=data.text_column, split=data.hub_split,
                               max_documents=data.max_documents)
    train = split_documents(documents, data.validation_fraction, data.split_seed)[0]
    yield from keep_fraction(train, data.train_fraction, seed=data.split_seed)


def prepare_tokenizer(config: RunConfig, accelerator: Accelerator) -> PreTrainedTokenizerBase:
    """Reuse a tokenizer folder (or the init_from Hub repo's), or train one on the training documents (main
    process first) and save it in ``<output_dir>/tokenizer``."""
    source = tokenizer_source(config)
    if source is not None and source == config.train.init_from and looks_like_hub_id(source):
        return AutoTokenizer.from_pretrained(source)
    if source is not None:
        if not os.path.isfile(os.path.join(source, "tokenizer.json")):
            raise FileNotFoundError(f"No tokenizer.json in the tokenizer folder {source!r}")
        return AutoTokenizer.from_pretrained(source)
    folder = Path(config.train.output_dir) / "tokenizer"
    with accelerator.main_process_first():
        return load_or_train_tokenizer(str(folder), training_documents(config.data), config.data.vocab_size)


def build_windows(data: DataConfig, tokenizer, window: int, split: str) -> PackedWindows:
    """Packed windows of one split exactly as a run with these data settings builds them
    (`memmix_data.load_or_build_windows`, cached under ``data.cache_dir``)."""
    try:
        return load_or_build_windows(
            data.corpus, tokenizer, window=window, split=split, cache_dir=data.cache_dir,
            validation_fraction=data.validation_fraction, seed=data.split_seed,
            text_column=data.text_column, hub_split=data.hub_split, max_documents=data.max_documents,
            train_fraction=data.train_fraction,
        )
    except TooLittleTextError as error:  # other errors (a bad file) carry their own advice
        raise ValueError(
            f"Cannot build {split} windows of {window} tokens from corpus {data.corpus!r}: {error}. "
            f"Use more text (data.max_documents={data.max_documents}, data.train_fraction={data.train_fraction}) "
            "or a shorter window (model.n_ctx)."
        ) from error


def prepare_windows(data: DataConfig, tokenizer, window: int, split: str, accelerator: Accelerator) -> PackedWindows:
    """`build_windows` on the main process first (the others then read its cache)."""
    with accelerator.main_process_first():
        return build_windows(data, tokenizer, window, split)


def check_windows_fit(windows: PackedWindows, model_config, global_batch: int, split: str) -> None:
    """Clear errors when the packed data does not match the model or the batch."""
    expected = window_length(model_config)
    if windows.window != expected:
        raise ValueError(f"{split} windows hold {windows.window} tokens but the model needs {expected}")
    top = int(windows.input_ids.max())
    if top >= model_config.vocab_size:
        raise ValueError(
            f"{split} data holds token id {top} but the model's vocab_size is {model_config.vocab_size}; "
            "the tokenizer and the model do not match"
        )
    if split == "train" and len(windows) < global_batch:
        raise ValueError(
            f"The train split has {len(windows)} windows of {windows.window} tokens, fewer than one global "
            f"micro-batch ({global_batch} = batch_size x processes); lower train.batch_size or use more data"
        )
