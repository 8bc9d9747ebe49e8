"""Evaluation report for a saved memmix model: bits per byte against classical compressors, and diagnostics.

Run it on a CPU (a tiny model and a few windows take seconds)::

    python -m evaluation.report --model runs/mixer/export --data builtin --out reports/mixer
    python -m evaluation.report --model runs/memory/export --max_windows 50 --training_log runs/memory/log.jsonl
    python -m evaluation.report --model runs/mixer/export --data my_text.txt --split all --scoring documents

Writes ``report.md``, ``report.json`` (every number) and PNG charts to ``--out``. ``--model`` is a local
folder written by ``save_pretrained`` (with its tokenizer) or a Hub id (which fails with a clear message
offline). ``--data`` is any corpus spec `memmix_data.load_documents` accepts; by default the held-out
validation split of the built-in corpus, with the training run's split settings when the model folder
holds the ``run_config.json`` of a run on the same corpus. ``--split all`` scores every document of
``--data`` (no train/validation split; the compressors are then not primed, since no text is left out).

Two scoring modes (``--scoring``):

- ``windows`` (default): the documents are packed into one token stream (each followed by end-of-text)
  and cut into full model windows, as in training; everything below is measured on those windows.
- ``documents``: every document scored alone, every token of it, in rolling windows of the model's
  maximum length (``--stride`` new tokens per later window), as lm-evaluation-harness's
  ``loglikelihood_rolling`` does; bits per byte divide by the documents' UTF-8 bytes. See
  evaluation/document_scoring.py. Causal and memory models only (not the autoencoder or oracle mode);
  the compressors read the same documents (``per_document`` instead of ``per_window``); the window
  diagnostics (memory per-chunk losses, copy task, trivial-encoding test) are not run.

What is measured (formulas in evaluation/metrics.py and docs/MISSION.md "Measures"):

- **Bytes**: every token stands for exact raw bytes (`memmix_data.token_byte_lengths`; the end-of-text
  token is b"\\n"). Causal and memory models predict every token of a window but the first, so their
  bits per byte divide by the bytes of tokens ``1 .. T-1`` of each window, and the compressors are fed
  exactly those bytes. The autoencoder reconstructs all ``T`` tokens: all bytes, for both.
- **causal LM**: cross-entropy (nats/token) and bits per byte.
- **autoencoder**: for the float embedding and each storage format (bf16, fp16, e4m3, e5m2, int8, int4):
  reconstruction cross-entropy, Hamming accuracy, information retained ``I_e``, the embedding's real
  stored size (codes + scales) and the formula ``n_p * b_p`` at 4 / 8 / 16 / 32 bits, and total bits per
  byte (embedding + residual cross-entropy).
- **memory model**: loss per chunk position with memories as trained and with memories removed (see
  evaluation/scoring.py: each chunk decoded like a first chunk), and in oracle mode the normalized loss of
  each storage format; the copy task (second half of a window repeats the first).
- **trivial-encoding test**: loss on uniformly random token ids against in-distribution loss.
- **compressors**: gzip -9, bzip2 -9, xz -9e, zstd -19, brotli -q 11 on each window alone, on the stream
  of all windows, and primed with the last ``--max_primer_bytes`` (default 1 MB) of the training split's
  text (each document followed by b"\\n", as packed for training); not primed with ``--split all``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from evaluation import metrics
from evaluation.compressors import ALL_METHODS, compress_windows
from evaluation.document_scoring import causal_max_length, score_documents
from evaluation.loading import (
    EVALUATION_SPLITS,
    EvaluationData,
    LoadedModel,
    evaluation_window_length,
    load_evaluation_data,
    load_model_and_tokenizer,
    split_settings_for,
)
from evaluation.scoring import (
    autoencoder_scores,
    causal_token_losses,
    chunk_slices,
    copy_task_ids,
    memory_bits_per_chunk,
    memory_token_losses_with_format,
    memory_token_losses_without_memories,
    random_token_ids,
)
from memmix_data import token_byte_lengths, token_bytes
from modeling_memmix.quantization import EMBEDDING_FORMATS, REFERENCE_FORMAT

NOMINAL_BITS_PER_VALUE = {"fp32": 32, "bf16": 16, "fp16": 16, "e4m3": 8, "e5m2": 8, "int8": 8, "int4": 4}
FORMULA_BITS_PER_VALUE = (4, 8, 16, 32)
DEFAULT_MAX_PRIMER_BYTES = 1_000_000
SCORING_MODES = ("windows", "documents")
NO_PRIMER_WITH_SPLIT_ALL = "off: --split all scores every document, so no training text is left to prime with"


# ---------------------------------------------------------------------------------------------
# Shared measures
# ---------------------------------------------------------------------------------------------


def first_scored_position(family: str) -> int:
    """Index of the first token whose prediction is scored: 1 for causal families, 0 for the autoencoder."""
    return 0 if family == "autoencoder" else 1


def scored_token_bytes(tokenizer, input_ids: torch.Tensor, start: int) -> torch.Tensor:
    """(N, T - start) byte count of each scored token (exact raw bytes, never characters)."""
    return token_byte_lengths(tokenizer)[input_ids[:, start:]]


def summarize_losses(losses: torch.Tensor, target_bytes: torch.Tensor) -> dict[str, float]:
    """Cross-entropy (nats/token) and bits per byte over every entry of `losses`, with the bytes of the
    same tokens; sums per window first, then pooled (never a mean of per-window ratios)."""
    if losses.shape != target_bytes.shape:
        raise ValueError(f"losses {tuple(losses.shape)} and target_bytes {tuple(target_bytes.shape)} differ")
    nll = losses.sum(dim=1).tolist()
    num_bytes = target_bytes.sum(dim=1).tolist()
    num_tokens = [losses.shape[1]] * losses.shape[0]
    return {
        "cross_entropy": metrics.cross_entropy_per_token(nll, num_tokens),
        "bits_per_byte": metrics.bits_per_byte(nll, num_bytes),
        "tokens": int(sum(num_tokens)),
        "bytes": int(sum(num_bytes)),
    }


def per_chunk_summaries(losses: torch.Tensor, target_bytes: torch.Tensor, chunk: int) -> list[dict[str, float]]:
    """`summarize_losses` over the predictions made by each chunk's decoder pass (see `chunk_slices`)."""
    return [summarize_losses(losses[:, part], target_bytes[:, part]) for part in chunk_slices(losses.shape[1], chunk)]


def embedding_costs(
    cross_entropy: float, bits_per_vector: float, n_values: int, bits_per_value: float, tokens_per_vector: int,
    data: dict,
) -> dict[str, float]:
    """Embedding bits per byte (real stored size and ``n_p * b_p``) and the total description length.

    `data` holds the scored ``tokens`` and ``bytes`` and ``vectors`` (embeddings stored for them).
    """
    bytes_per_token = data["bytes"] / data["tokens"]
    real = metrics.embedding_bits_per_byte_from_size(bits_per_vector, tokens_per_vector, bytes_per_token)
    formula = metrics.embedding_bits_per_byte(n_values, bits_per_value, tokens_per_vector, bytes_per_token)
    total = metrics.autoencoder_total_bits_per_byte(
        cross_entropy, data["tokens"], data["bytes"], bits_per_vector * data["vectors"] / data["windows"],
        data["windows"],
    )
    return {
        "bits_per_value": bits_per_value,
        "bits_per_vector": bits_per_vector,
        "embedding_bits_per_byte": real,
        "embedding_bits_per_byte_formula": formula,
        "normalized_loss": metrics.normalized_loss_from_size(
            cross_entropy, bits_per_vector, tokens_per_vector, bytes_per_token
        ),
        "normalized_loss_formula": metrics.normalized_loss(
            cross_entropy, n_values, bits_per_value, tokens_per_vector, bytes_per_token
        ),
        "total_bits_per_byte": total,
    }


# ---------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------


def evaluate_causal(loaded: LoadedModel, input_ids: torch.Tensor, options: dict) -> dict:
    """Cross-entropy and bits per byte of a causal LM over the scored tokens of every window."""
    losses = causal_token_losses(loaded.model, input_ids, options["batch_size"], options["progress"])
    target_bytes = scored_token_bytes(loaded.tokenizer, input_ids, 1)
    return {"losses": losses, "summary": summarize_losses(losses, target_bytes)}


def evaluate_autoencoder(loaded: LoadedModel, input_ids: torch.Tensor, options: dict) -> dict:
    """Reconstruction measures for the float embedding and each storage format."""
    model, config = loaded.model, loaded.model.config
    target_bytes = scored_token_bytes(loaded.tokenizer, input_ids, 0)
    trained_format = config.embedding_quantization or REFERENCE_FORMAT
    formats = list(dict.fromkeys([REFERENCE_FORMAT, *options["embedding_formats"], trained_format]))
    per_format = {}
    for fmt in formats:
        scores = autoencoder_scores(
            model, input_ids, None if fmt == REFERENCE_FORMAT else fmt, options["batch_size"], options["progress"]
        )
        summary = summarize_losses(scores["losses"], target_bytes)
        data = {**summary, "windows": input_ids.shape[0], "vectors": input_ids.shape[0]}
        per_format[fmt] = {
            **summary,
            "hamming_accuracy": metrics.hamming_accuracy(scores["predicted"], input_ids),
            "information_retained": metrics.information_retained(summary["cross_entropy"], config.vocab_size),
            **embedding_costs(
                summary["cross_entropy"], scores["bits_per_window"], config.embedding_dim,
                NOMINAL_BITS_PER_VALUE[fmt], config.n_ctx, data,
            ),
        }
    bytes_per_token = per_format[REFERENCE_FORMAT]["bytes"] / per_format[REFERENCE_FORMAT]["tokens"]
    formula = {
        str(bits): metrics.embedding_bits_per_byte(config.embedding_dim, bits, config.n_ctx, bytes_per_token)
        for bits in FORMULA_BITS_PER_VALUE
    }
    return {
        "summary": {**per_format[trained_format], "embedding_format": trained_format},
        "formats": per_format,
        "embedding_dim": config.embedding_dim,
        "embedding_bits_per_byte_formula": formula,
    }


def evaluate_memory(loaded: LoadedModel, input_ids: torch.Tensor, options: dict) -> dict:
    """Loss per chunk with and without memories, oracle normalized loss, and the copy task."""
    model, config = loaded.model, loaded.model.config
    with_memory = causal_token_losses(model, input_ids, options["batch_size"], options["progress"], "memory model")
    without = memory_token_losses_without_memories(model, input_ids, options["batch_size"], options["progress"])
    target_bytes = scored_token_bytes(loaded.tokenizer, input_ids, 1)
    result = {
        "losses": with_memory,
        "summary": summarize_losses(with_memory, target_bytes),
        "memories_removed": summarize_losses(without, target_bytes),
        "per_chunk": {
            "with_memories": per_chunk_summaries(with_memory, target_bytes, config.n_ctx),
            "memories_removed": per_chunk_summaries(without, target_bytes, config.n_ctx),
        },
        "memory_mode": config.memory_mode,
        "chunk_tokens": config.n_ctx,
        "num_chunks": input_ids.shape[1] // config.n_ctx,
    }
    if config.memory_mode == "oracle":
        result["oracle"] = evaluate_oracle_formats(model, input_ids, target_bytes, options)
    result["copy_task"] = evaluate_copy_task(model, input_ids[: options["copy_windows"]], options)
    return result


def evaluate_oracle_formats(model, input_ids: torch.Tensor, target_bytes: torch.Tensor, options: dict) -> dict:
    """Oracle mode: loss and normalized loss with each chunk's own embedding stored in each format."""
    config = model.config
    num_chunks = input_ids.shape[1] // config.n_ctx
    results = {}
    for fmt in [REFERENCE_FORMAT, *options["embedding_formats"]]:
        losses = memory_token_losses_with_format(model, input_ids, fmt, options["batch_size"], options["progress"])
        summary = summarize_losses(losses, target_bytes)
        data = {**summary, "windows": input_ids.shape[0], "vectors": input_ids.shape[0] * num_chunks}
        bits = memory_bits_per_chunk(model, input_ids, fmt)
        results[fmt] = {
            **summary,
            **embedding_costs(summary["cross_entropy"], bits, config.memory_dim, NOMINAL_BITS_PER_VALUE[fmt],
                              config.n_ctx, data),
        }
    return results


def evaluate_copy_task(model, input_ids: torch.Tensor, options: dict) -> dict:
    """Loss on the first half of ``[a, a]`` windows against the second half (which repeats the first)."""
    copied = copy_task_ids(input_ids)
    half = copied.shape[1] // 2
    losses = causal_token_losses(model, copied, options["batch_size"], options["progress"], "copy task")
    result = {
        "windows": copied.shape[0],
        "half_tokens": half,
        "first_half_loss": float(losses[:, : half - 1].mean()),
        "second_half_loss": float(losses[:, half - 1 :].mean()),
    }
    if copied.shape[1] % model.config.n_ctx == 0:
        without = memory_token_losses_without_memories(model, copied, options["batch_size"], options["progress"])
        result["second_half_loss_memories_removed"] = float(without[:, half - 1 :].mean())
    return result


FAMILY_EVALUATORS = {"causal": evaluate_causal, "autoencoder": evaluate_autoencoder, "memory": evaluate_memory}


def evaluate_documents(loaded: LoadedModel, documents: list[str], options: dict) -> dict:
    """Document mode: every token of every document, each document alone (evaluation/document_scoring.py)."""
    scores = score_documents(loaded.model, loaded.tokenizer, documents, stride=options.get("stride"),
                             batch_size=options["batch_size"], progress=options["progress"])
    return {"summary": scores.summary()}


def trivial_encoding_test(loaded: LoadedModel, in_distribution: torch.Tensor, options: dict) -> dict:
    """Loss on uniformly random ids over the tokenizer's vocabulary vs the same number of real windows.

    A model (or autoencoder) that learned a data-free code would score random text as well as real text.
    """
    count = min(options["trivial_windows"], in_distribution.shape[0])
    window = in_distribution.shape[1]
    random_ids = random_token_ids(count, window, len(loaded.tokenizer), seed=options["seed"])
    real_ids = in_distribution[:count]
    if loaded.family == "autoencoder":
        fmt = loaded.model.config.embedding_quantization

        def loss_of(ids):
            return float(autoencoder_scores(loaded.model, ids, fmt, options["batch_size"])["losses"].mean())
    else:

        def loss_of(ids):
            return float(causal_token_losses(loaded.model, ids, options["batch_size"]).mean())

    random_loss, real_loss = loss_of(random_ids), loss_of(real_ids)
    return {
        "windows": count,
        "random_ids_loss": random_loss,
        "in_distribution_loss": real_loss,
        "uniform_loss": math.log(len(loaded.tokenizer)),
        "ratio": random_loss / real_loss if real_loss > 0 else math.inf,
    }


# ---------------------------------------------------------------------------------------------
# Compressors
# ---------------------------------------------------------------------------------------------


def scored_window_bytes(tokenizer, input_ids: torch.Tensor, start: int, expected: torch.Tensor) -> list[bytes]:
    """The raw bytes of each window's scored tokens; checked against the byte counts the model is scored on."""
    windows = [token_bytes(tokenizer, row[start:]) for row in input_ids]
    for index, (window, count) in enumerate(zip(windows, expected.tolist())):
        if len(window) != count:
            raise RuntimeError(f"window {index}: {len(window)} bytes of text but {count} bytes scored")
    return windows


def compressor_baselines(loaded: LoadedModel, data: EvaluationData, input_ids: torch.Tensor, options: dict) -> dict:
    start = first_scored_position(loaded.family)
    expected = scored_token_bytes(loaded.tokenizer, input_ids, start).sum(dim=1)
    windows = scored_window_bytes(loaded.tokenizer, input_ids, start, expected)
    return _compress(windows, data, options)


def _compress(pieces: list[bytes], data: EvaluationData, options: dict, unit: str = "window") -> dict:
    """The compressors on `pieces` (windows or documents), primed unless --split all or no primer bytes."""
    primer = data.primer if options["max_primer_bytes"] and data.split != "all" else None
    results = compress_windows(pieces, primer=primer, methods=options["compressors"], progress=options["progress"])
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


def document_compressor_baselines(data: EvaluationData, options: dict) -> dict:
    """The compressors on exactly the bytes document mode scores: each document's UTF-8 text."""
    return _compress([document.encode("utf-8") for document in data.documents], data, options, unit="document")


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def model_bits_per_byte(family: str, result: dict) -> dict[str, float]:
    """The model's entries of the bits-per-byte comparison."""
    if family == "causal":
        return {"memmix causal LM": result["summary"]["bits_per_byte"]}
    if family == "autoencoder":
        return {f"memmix autoencoder total ({fmt})": value["total_bits_per_byte"]
                for fmt, value in result["formats"].items()}
    table = {
        "memmix memory model": result["summary"]["bits_per_byte"],
        "memmix memory model, memories removed": result["memories_removed"]["bits_per_byte"],
    }
    for fmt, value in result.get("oracle", {}).items():
        table[f"memmix oracle total ({fmt})"] = value["total_bits_per_byte"]
    return table


def _strip_tensors(result: dict) -> dict:
    return {key: value for key, value in result.items() if not isinstance(value, torch.Tensor)}


def _config_summary(config) -> dict:
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "n_ctx", "embedding_dim",
            "memory_mode", "max_memories", "memory_dim", "embedding_quantization")
    return {key: getattr(config, key) for key in keys if getattr(config, key, None) is not None}


def build_document_report(loaded: LoadedModel, data: EvaluationData, options: dict) -> dict:
    """`build_report` for ``scoring="documents"``."""
    started = time.time()
    result = evaluate_documents(loaded, data.documents, options)
    summary = result["summary"]
    report = {
        "model": loaded.source,
        "family": loaded.family,
        "config": _config_summary(loaded.model.config),
        "data": {
            "spec": data.spec, "split": data.split, "scoring": "documents", "documents": summary["documents"],
            "windows": summary["windows"], "window_tokens": summary["max_length"], "stride": summary["stride"],
            "scored_from_token": 0, **data.settings,
        },
        "results": result,
    }
    if options["compressors"]:
        report["compressors"] = document_compressor_baselines(data, options)
    name = "memmix causal LM" if loaded.family == "causal" else "memmix memory model"
    table = {f"{name} (documents)": summary["bits_per_byte"]}
    for method, settings in report.get("compressors", {}).get("bits_per_byte", {}).items():
        for setting, value in settings.items():
            table[f"{method} ({setting})"] = value
    report["bits_per_byte"] = table
    report["seconds"] = round(time.time() - started, 2)
    return report


def build_report(loaded: LoadedModel, data: EvaluationData, options: dict) -> dict:
    """Every number of the report as a JSON-ready dict (no files written)."""
    if options.get("scoring", "windows") == "documents":
        return build_document_report(loaded, data, options)
    started = time.time()
    input_ids = data.windows.input_ids
    result = FAMILY_EVALUATORS[loaded.family](loaded, input_ids, options)
    report = {
        "model": loaded.source,
        "family": loaded.family,
        "config": _config_summary(loaded.model.config),
        "data": {
            "spec": data.spec, "split": data.split, "scoring": "windows", "windows": input_ids.shape[0],
            "window_tokens": data.windows.window,
            "scored_from_token": first_scored_position(loaded.family), **data.settings,
        },
        "results": _strip_tensors(result),
        "trivial_encoding": trivial_encoding_test(loaded, input_ids, options),
    }
    if options["compressors"]:
        report["compressors"] = compressor_baselines(loaded, data, input_ids, options)
    table = model_bits_per_byte(loaded.family, result)
    for method, settings in report.get("compressors", {}).get("bits_per_byte", {}).items():
        for setting, value in settings.items():
            table[f"{method} ({setting})"] = value
    report["bits_per_byte"] = table
    report["seconds"] = round(time.time() - started, 2)
    return report


def write_plots(report: dict, out: Path, training_log: str | None) -> list[str]:
    """PNG charts next to the report; returns their file names."""
    from evaluation.plots import plot_bits_per_byte, plot_chunk_losses, plot_training_curves

    paths = [plot_bits_per_byte(report["bits_per_byte"], out / "bits_per_byte.png",
                                model_names=[k for k in report["bits_per_byte"] if k.startswith("memmix")])]
    if report["family"] == "memory" and "per_chunk" in report["results"]:
        per_chunk = report["results"]["per_chunk"]
        lines = {label.replace("_", " "): [c["cross_entropy"] for c in chunks] for label, chunks in per_chunk.items()}
        paths.append(plot_chunk_losses(lines, out / "chunk_losses.png"))
    if training_log:
        paths.append(plot_training_curves(training_log, out / "training_curves.png"))
    return [path.name for path in paths]


def run_report(
    model: str,
    data: str = "builtin",
    out: str | Path = "reports/report",
    tokenizer: str | None = None,
    split: str = "validation",
    device: str | None = None,
    batch_size: int = 8,
    max_windows: int | None = None,
    max_documents: int | None = None,
    validation_fraction: float | None = None,
    split_seed: int | None = None,
    text_column: str = "text",
    hub_split: str = "train",
    max_primer_bytes: int | None = DEFAULT_MAX_PRIMER_BYTES,
    compressors: list[str] | tuple[str, ...] = ALL_METHODS,
    embedding_formats: list[str] | tuple[str, ...] = EMBEDDING_FORMATS,
    trivial_windows: int = 16,
    copy_windows: int = 16,
    seed: int = 0,
    training_log: str | None = None,
    update_model_card: bool = False,
    progress: bool = True,
    scoring: str = "windows",
    stride: int | None = None,
) -> dict:
    """Load, evaluate, write report.md / report.json / PNGs to `out`; returns the report dict.

    ``max_primer_bytes=0`` or None-like falsy skips the primed compressor setting. ``split="all"``
    evaluates every document (no split, no priming). ``scoring="documents"`` scores each document alone
    (evaluation/document_scoring.py) with ``stride`` new tokens per later window (default: the model's
    maximum length, as lm-evaluation-harness).
    """
    from evaluation.markdown import render_markdown

    if split not in EVALUATION_SPLITS:
        raise ValueError(f"split must be one of {EVALUATION_SPLITS}, got {split!r}")
    if scoring not in SCORING_MODES:
        raise ValueError(f"scoring must be one of {SCORING_MODES}, got {scoring!r}")
    if stride is not None and scoring != "documents":
        raise ValueError(f"stride={stride} applies to scoring='documents' only (got scoring={scoring!r})")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model_and_tokenizer(model, tokenizer, device)
    documents_mode = scoring == "documents"
    if documents_mode:
        max_length = causal_max_length(loaded.model)  # refuses the autoencoder before any data is read
        if stride is not None and not 1 <= stride <= max_length:
            raise ValueError(f"stride must be between 1 and the model's max length {max_length}, got {stride}")
    split_defaults = split_settings_for(data, loaded.run_config)
    evaluation_data = load_evaluation_data(
        data, loaded.tokenizer, evaluation_window_length(loaded.model.config), split=split,
        validation_fraction=split_defaults["validation_fraction"] if validation_fraction is None
        else validation_fraction,
        split_seed=split_defaults["split_seed"] if split_seed is None else split_seed,
        text_column=text_column, hub_split=hub_split, max_documents=max_documents, max_windows=max_windows,
        max_primer_bytes=max_primer_bytes or None, pack=not documents_mode,
    )
    options = {
        "batch_size": batch_size, "progress": progress, "embedding_formats": list(embedding_formats),
        "compressors": list(compressors), "max_primer_bytes": max_primer_bytes, "trivial_windows": trivial_windows,
        "copy_windows": copy_windows, "seed": seed, "scoring": scoring, "stride": stride,
    }
    report = build_report(loaded, evaluation_data, options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_plots(report, out, training_log)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    if update_model_card:
        from evaluation.model_card import update_model_card as update_card

        if loaded.local_folder is None:
            raise ValueError("--update_model_card needs a local model folder, not a Hub id")
        report["model_card"] = str(update_card(loaded.local_folder, report))
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all") else int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.report", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="saved model folder or Hub id")
    parser.add_argument("--data", default="builtin", help="corpus spec (builtin, *.txt/*.jsonl/*.parquet, Hub id)")
    parser.add_argument("--out", default=None, help="output folder (default: reports/<model folder name>)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    parser.add_argument("--split", default="validation", choices=EVALUATION_SPLITS,
                        help="validation / train: that side of the training run's document split; all: every "
                             "document of --data, no split (compressors not primed)")
    parser.add_argument("--scoring", default="windows", choices=SCORING_MODES,
                        help="windows: packed full windows as in training; documents: each document alone, "
                             "every token, rolling windows (lm-evaluation-harness loglikelihood_rolling)")
    parser.add_argument("--stride", type=int, default=None,
                        help="--scoring documents: new tokens scored per window after the first (default: the "
                             "model's max length, as lm-evaluation-harness; smaller = more context per token)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_windows", type=_optional_int, default=None,
                        help="evaluate the first N windows (--scoring windows)")
    parser.add_argument("--max_documents", type=_optional_int, default=None)
    parser.add_argument("--validation_fraction", type=float, default=None,
                        help="default: the training run's (run_config.json) when it used --data, else 0.05")
    parser.add_argument("--split_seed", type=int, default=None, help="default: the training run's, else 0")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--hub_split", default="train")
    parser.add_argument("--max_primer_bytes", type=int, default=DEFAULT_MAX_PRIMER_BYTES,
                        help="prime the compressors with the last N bytes of the training split (0: no priming)")
    parser.add_argument("--compressors", nargs="*", default=list(ALL_METHODS), choices=ALL_METHODS)
    parser.add_argument("--embedding_formats", nargs="*", default=list(EMBEDDING_FORMATS), choices=EMBEDDING_FORMATS)
    parser.add_argument("--trivial_windows", type=int, default=16)
    parser.add_argument("--copy_windows", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random ids of the trivial-encoding test")
    parser.add_argument("--training_log", default=None, help="JSON-lines training log to plot")
    parser.add_argument("--update_model_card", action="store_true",
                        help="write the report's numbers into the model folder's README.md model-index")
    parser.add_argument("--no_progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or str(Path("reports") / (Path(args.model.rstrip("/")).name or "report"))
    try:
        report = run_report(
            args.model, args.data, out, args.tokenizer, args.split, args.device, args.batch_size, args.max_windows,
            args.max_documents, args.validation_fraction, args.split_seed, args.text_column, args.hub_split,
            args.max_primer_bytes, args.compressors, args.embedding_formats, args.trivial_windows,
            args.copy_windows, args.seed, args.training_log, args.update_model_card, not args.no_progress,
            scoring=args.scoring, stride=args.stride,
        )
    except (ValueError, FileNotFoundError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}/report.md, report.json and {', '.join(report['plots'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
