"""Load what a memmix report evaluates: a saved model with its tokenizer, and packed evaluation windows.

- `load_model_and_tokenizer(source)`: a local folder or a Hub id; the model through ``AutoModel`` /
  ``AutoModelForCausalLM`` with ``trust_remote_code=True`` and the tokenizer from the same folder.
  Clear errors for a folder without tokenizer, a tokenizer whose vocabulary is larger than the
  model's ``vocab_size``, and a Hub id while the Hub cannot be reached (`memmix_hub.HubUnreachableError`).
  The family is looked up in `modeling_memmix.families` (``"mixer"``, ``"autoencoder"``, ``"memory"``).
  An evaluated window is ``config.max_sequence_length`` tokens (``n_ctx``; memory models:
  ``n_ctx * (max_memories + 1)``).
- `load_evaluation_data(...)`: the held-out (or train, or every) document of a corpus spec, packed into
  full windows exactly as training packs them (`memmix_data`), plus the training text used to prime the
  compressors (none with ``split="all"``: no document is left out to prime with).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from memmix_data import (
    PackedWindows,
    check_train_fraction,
    keep_fraction,
    load_documents,
    pack_documents,
    split_documents,
)
from memmix_hub import (
    HubUnreachableError,
    hub_is_offline,
    hub_unreachable,
    is_connection_error,
    looks_like_hub_id,
)
from modeling_memmix.families import family_of

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
RUN_CONFIG_FILE = "run_config.json"
# Every document is followed by the end-of-text token when packed; that token stands for b"\n".
DOCUMENT_SEPARATOR = b"\n"
EVALUATION_SPLITS = ("validation", "train", "all")


@dataclass
class LoadedModel:
    """A model ready for evaluation (eval mode, on its device) and what the report needs to know about it."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    family: str  # a name of modeling_memmix.families: "mixer" | "autoencoder" | "memory"
    source: str
    local_folder: Path | None
    run_config: dict | None = None


@dataclass
class EvaluationData:
    """Documents and windows to score and the training-side text that primes the compressors.

    `windows` is None when the data was loaded for document scoring only (``pack=False``); `primer` is
    empty for ``split="all"``.
    """

    windows: PackedWindows | None
    primer: bytes
    spec: str
    split: str
    settings: dict = field(default_factory=dict)
    documents: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Model and tokenizer
# ---------------------------------------------------------------------------------------------


def _hub_unreachable(source: str, reason: str) -> HubUnreachableError:
    return hub_unreachable(
        f"Cannot load the model {source!r} (not a local folder)", reason,
        "Pass the path of a saved model folder instead (save_pretrained output).",
    )


def resolve_model_source(source: str) -> Path | None:
    """The local folder `source` names, or None for a Hub id; raises before any download is tried.

    FileNotFoundError for a path-like source that does not exist (or is a file), HubUnreachableError
    for a Hub id while offline mode is set.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"--model {source!r} is a file; give the folder a model was saved to")
    if not looks_like_hub_id(source):  # Hub ids are ``org/name``; anything else is meant as a folder
        raise FileNotFoundError(f"Model folder not found: {source!r}")
    if hub_is_offline():
        raise _hub_unreachable(source, "offline mode is set by HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE")
    return None


def check_tokenizer_files(folder: Path) -> None:
    """Raise ValueError when a local model folder holds no tokenizer files."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"Model folder {str(folder)!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "save it next to the model with tokenizer.save_pretrained(folder), or pass --tokenizer PATH"
        )


def check_vocabulary(tokenizer: PreTrainedTokenizerBase, vocab_size: int, tokenizer_source: str) -> None:
    """Raise ValueError when the tokenizer can emit ids the model has no row for."""
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer from {tokenizer_source!r} has {len(tokenizer)} tokens, more than the model's "
            f"vocab_size={vocab_size}: ids >= {vocab_size} would be out of range. Use the tokenizer the "
            "model was trained with."
        )


def read_run_config(folder: Path | None) -> dict | None:
    """The training run configuration saved next to an exported model (run_config.json), if any."""
    if folder is None or not (folder / RUN_CONFIG_FILE).is_file():
        return None
    return json.loads((folder / RUN_CONFIG_FILE).read_text(encoding="utf-8"))


def _load_pretrained(loader, source: str, **kwargs):
    try:
        return loader.from_pretrained(source, **kwargs)
    except Exception as error:
        if is_connection_error(error):
            raise _hub_unreachable(source, f"{type(error).__name__}: {error}") from error
        raise


def load_model_and_tokenizer(
    source: str, tokenizer_source: str | None = None, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Load a saved memmix model (local folder or Hub id) and its tokenizer for evaluation.

    The tokenizer comes from the model's folder unless `tokenizer_source` names another one. The
    model is loaded in float32 (exact cross-entropies), put in eval mode and moved to `device`.
    """
    folder = resolve_model_source(source)
    tokenizer_from = tokenizer_source or source
    if tokenizer_source is None and folder is not None:
        check_tokenizer_files(folder)
    config = _load_pretrained(AutoConfig, source, trust_remote_code=True)
    family = family_of(config)
    try:
        tokenizer = _load_pretrained(AutoTokenizer, tokenizer_from)
    except (OSError, ValueError) as error:
        if isinstance(error, HubUnreachableError):
            raise
        raise ValueError(f"Cannot load a tokenizer from {tokenizer_from!r}: {error}") from error
    check_vocabulary(tokenizer, config.vocab_size, tokenizer_from)
    auto_class = getattr(transformers, family.auto_class)
    model = _load_pretrained(auto_class, source, trust_remote_code=True, dtype=torch.float32)
    model.to(device).eval()
    return LoadedModel(model, tokenizer, family.name, source, folder, read_run_config(folder))


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def split_settings_for(spec: str, run_config: dict | None) -> dict:
    """Split settings (validation_fraction, split_seed, train_fraction) of the training run when it used the
    same corpus.

    A model exported by the training script stores its data settings; evaluating on the same corpus
    with the same settings puts exactly the training run's held-out documents in the validation split, and
    exactly the documents it trained on (its share ``train_fraction``) in the train split.
    """
    settings = {"validation_fraction": 0.05, "split_seed": 0, "train_fraction": 1.0}
    data = (run_config or {}).get("data", {})
    if data.get("corpus") == spec:
        for key in settings:
            if data.get(key) is not None:
                settings[key] = data[key]
    return settings


def primer_from_documents(documents: list[str], max_bytes: int | None) -> bytes:
    """The training text as the compressors should see it: each document then b"\\n" (its end-of-text
    token), keeping only the last `max_bytes` bytes (documents are read from the end, so a 1 MB primer
    of a huge corpus costs 1 MB of work)."""
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_primer_bytes must be > 0 or None, got {max_bytes}")
    pieces: list[bytes] = []
    total = 0
    for document in reversed(documents):
        piece = document.encode("utf-8") + DOCUMENT_SEPARATOR
        pieces.append(piece)
        total += len(piece)
        if max_bytes is not None and total >= max_bytes:
            break
    primer = b"".join(reversed(pieces))
    return primer if max_bytes is None else primer[-max_bytes:]


def load_evaluation_data(
    spec: str,
    tokenizer: PreTrainedTokenizerBase,
    window: int,
    split: str = "validation",
    validation_fraction: float = 0.05,
    split_seed: int = 0,
    text_column: str = "text",
    hub_split: str = "train",
    max_documents: int | None = None,
    max_windows: int | None = None,
    max_primer_bytes: int | None = 1_000_000,
    pack: bool = True,
    train_fraction: float = 1.0,
) -> EvaluationData:
    """The documents of one side of corpus `spec`, packed into full `window`-token windows, and the train
    side's last bytes as primer.

    ``split="validation"`` / ``"train"``: one side of `split_documents` (the training run's split); the train
    side (scored, and the primer) keeps the share `train_fraction` of its documents that a run with
    ``data.train_fraction`` trained on (`keep_fraction`, the same documents);
    ``split="all"``: every document, no split (`validation_fraction` and `split_seed` are not used, and the
    primer is empty: there is no training side left). Documents are packed with `pack_documents`
    (drop_remainder: every window is full), exactly as training does; ``pack=False`` skips packing (for
    document scoring, which needs no windows). `max_windows` keeps the first windows only.
    Raises ValueError when the evaluated documents give fewer tokens than one window (with ``pack``).
    """
    if split not in EVALUATION_SPLITS:
        raise ValueError(f"split must be one of {EVALUATION_SPLITS}, got {split!r}")
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be >= 1 or None, got {max_windows}")
    if max_windows is not None and not pack:
        raise ValueError(f"max_windows={max_windows} limits packed windows; with document scoring use max_documents")
    check_train_fraction(train_fraction)
    documents = load_documents(spec, text_column=text_column, split=hub_split, max_documents=max_documents)
    if split == "all":
        train_docs, evaluated = [], documents
    else:
        train_docs, validation_docs = split_documents(documents, validation_fraction, seed=split_seed)
        train_docs = keep_fraction(train_docs, train_fraction, seed=split_seed)
        evaluated = validation_docs if split == "validation" else train_docs
    windows = None
    if pack:
        try:
            windows = pack_documents(evaluated, tokenizer, window)
        except ValueError as error:
            larger = "" if split == "all" else " a larger --validation_fraction,"
            raise ValueError(
                f"Dataset {spec!r} is too small to evaluate: its {split} split ({len(evaluated)} documents) "
                f"does not fill one window of {window} tokens ({error}). Use a larger corpus,{larger} a model "
                "with a shorter window, or --scoring documents (no windows to fill)."
            ) from error
        if max_windows is not None and len(windows) > max_windows:
            windows = PackedWindows(
                input_ids=windows.input_ids[:max_windows],
                num_bytes=windows.num_bytes[:max_windows],
                num_tokens=windows.num_tokens[:max_windows],
                window=window,
            )
    settings = {
        "validation_fraction": None if split == "all" else validation_fraction,
        "split_seed": None if split == "all" else split_seed,
        "train_fraction": None if split == "all" else train_fraction,
        "text_column": text_column,
        "hub_split": hub_split,
        "max_documents": max_documents,
        "max_windows": max_windows,
        "max_primer_bytes": max_primer_bytes,
        "documents_evaluated": len(evaluated),
        "train_documents": len(train_docs),
    }
    primer = primer_from_documents(train_docs, max_primer_bytes) if train_docs else b""
    return EvaluationData(windows, primer, spec, split, settings, list(evaluated))
