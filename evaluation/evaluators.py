"""The report's measurements of each model family, callable from Python without the report command.

One evaluator per family (`FAMILY_EVALUATORS`, keyed by the family names of `modeling_memmix.families`), each
``evaluator(loaded, input_ids, options) -> dict`` over packed windows ``input_ids (N, T)``:

- ``"mixer"`` (`evaluate_mixer`): cross-entropy and bits per byte of the causal LM over the scored tokens.
- ``"autoencoder"`` (`evaluate_autoencoder`): for the float embedding and each storage format,
  reconstruction cross-entropy, Hamming accuracy, information retained, the real stored size and the total
  bits per byte (embedding + residual cross-entropy).
- ``"memory"`` (`evaluate_memory`): loss per chunk with memories and with them removed, the oracle mode's
  per-format normalized loss (`evaluate_oracle_formats`) and the copy task (`evaluate_copy_task`).

Besides: `evaluate_documents` (each document alone, evaluation/document_scoring.py) and
`trivial_encoding_test` (random ids against real windows). `options` is an `EvaluatorOptions` or a dict of
some of its fields (``{"batch_size": 4, "progress": False}``). Run them under the model's device; tensors come
back on the CPU. Example (a tiny model, a few seconds on a CPU)::

    loaded = load_model_and_tokenizer("runs/mixer_tiny/export")
    windows = load_evaluation_data("builtin", loaded.tokenizer, loaded.model.config.max_sequence_length,
                                   max_windows=20).windows.input_ids
    print(evaluate(loaded, windows, {"progress": False})["summary"])
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from evaluation import metrics
from evaluation.document_scoring import score_documents
from evaluation.loading import LoadedModel
from evaluation.measures import (
    FORMULA_BITS_PER_VALUE,
    NOMINAL_BITS_PER_VALUE,
    embedding_costs,
    per_chunk_summaries,
    scored_token_bytes,
    summarize_losses,
)
from evaluation.options import EvaluatorOptions
from evaluation.scoring import (
    autoencoder_scores,
    causal_token_losses,
    copy_task_ids,
    memory_bits_per_chunk,
    memory_token_losses_with_format,
    memory_token_losses_without_memories,
    random_token_ids,
    repeated_chunk_ids,
)
from modeling_memmix.quantization import REFERENCE_FORMAT

Options = EvaluatorOptions | Mapping


def evaluate_mixer(loaded: LoadedModel, input_ids: torch.Tensor, options: Options) -> dict:
    """Cross-entropy and bits per byte of a causal LM over the scored tokens of every window."""
    options = EvaluatorOptions.coerce(options)
    losses = causal_token_losses(loaded.model, input_ids, options.batch_size, options.progress)
    target_bytes = scored_token_bytes(loaded.tokenizer, input_ids, 1)
    return {"losses": losses, "summary": summarize_losses(losses, target_bytes)}


def position_profile(losses: torch.Tensor, predicted: torch.Tensor, input_ids: torch.Tensor) -> dict[str, list]:
    """Reconstruction CE and token accuracy at each window position, averaged over windows: where in the window
    the embedding's information runs out."""
    return {"cross_entropy": losses.mean(dim=0).tolist(),
            "token_accuracy": (predicted == input_ids).double().mean(dim=0).tolist()}


def evaluate_autoencoder(loaded: LoadedModel, input_ids: torch.Tensor, options: Options) -> dict:
    """Reconstruction measures for the float embedding and each storage format."""
    options = EvaluatorOptions.coerce(options)
    model, config = loaded.model, loaded.model.config
    target_bytes = scored_token_bytes(loaded.tokenizer, input_ids, 0)
    trained_format = config.embedding_format or REFERENCE_FORMAT
    formats = list(dict.fromkeys([REFERENCE_FORMAT, *options.embedding_formats, trained_format]))
    window = config.max_sequence_length  # tokens per embedding: the whole window
    per_format, per_position = {}, {}
    for embedding_format in formats:
        stored = None if embedding_format == REFERENCE_FORMAT else embedding_format
        scores = autoencoder_scores(model, input_ids, stored, options.batch_size, options.progress)
        if embedding_format == trained_format:
            per_position = position_profile(scores["losses"], scores["predicted"], input_ids)
        summary = summarize_losses(scores["losses"], target_bytes)
        data = {**summary, "windows": input_ids.shape[0], "vectors": input_ids.shape[0]}
        per_format[embedding_format] = {
            **summary,
            "hamming_accuracy": metrics.hamming_accuracy(scores["predicted"], input_ids),
            "information_retained": metrics.information_retained(summary["cross_entropy"], config.vocab_size),
            **embedding_costs(
                summary["cross_entropy"], scores["bits_per_window"], config.embedding_dim,
                NOMINAL_BITS_PER_VALUE[embedding_format], window, data,
            ),
        }
    bytes_per_token = per_format[REFERENCE_FORMAT]["bytes"] / per_format[REFERENCE_FORMAT]["tokens"]
    formula = {
        str(bits): metrics.embedding_bits_per_byte(config.embedding_dim, bits, window, bytes_per_token)
        for bits in FORMULA_BITS_PER_VALUE
    }
    return {
        "summary": {**per_format[trained_format], "embedding_format": trained_format},
        "formats": per_format,
        "per_position": per_position,
        "embedding_dim": config.embedding_dim,
        "embedding_bits_per_byte_formula": formula,
    }


def evaluate_memory(loaded: LoadedModel, input_ids: torch.Tensor, options: Options) -> dict:
    """Loss per chunk with and without memories, oracle normalized loss, and the copy task."""
    options = EvaluatorOptions.coerce(options)
    model, config = loaded.model, loaded.model.config
    with_memory = causal_token_losses(model, input_ids, options.batch_size, options.progress, "memory model")
    without = memory_token_losses_without_memories(model, input_ids, options.batch_size, options.progress)
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
    result["copy_task"] = evaluate_copy_task(model, input_ids[: options.copy_windows], options)
    if config.memory_mode in ("past", "recurrent"):  # memories of earlier chunks (an oracle reads its own)
        result["chunk_recall"] = evaluate_chunk_recall(model, input_ids[: options.copy_windows], options)
    return result


def evaluate_oracle_formats(model, input_ids: torch.Tensor, target_bytes: torch.Tensor, options: Options) -> dict:
    """Oracle mode: loss and normalized loss with each chunk's own embedding stored in each format."""
    options = EvaluatorOptions.coerce(options)
    config = model.config
    num_chunks = input_ids.shape[1] // config.n_ctx
    results = {}
    for embedding_format in [REFERENCE_FORMAT, *options.embedding_formats]:
        losses = memory_token_losses_with_format(model, input_ids, embedding_format, options.batch_size,
                                                 options.progress)
        summary = summarize_losses(losses, target_bytes)
        data = {**summary, "windows": input_ids.shape[0], "vectors": input_ids.shape[0] * num_chunks}
        bits = memory_bits_per_chunk(model, input_ids, embedding_format)
        results[embedding_format] = {
            **summary,
            **embedding_costs(summary["cross_entropy"], bits, config.memory_dim,
                              NOMINAL_BITS_PER_VALUE[embedding_format], config.n_ctx, data),
        }
    return results


def evaluate_copy_task(model, input_ids: torch.Tensor, options: Options) -> dict:
    """Loss on the first half of ``[a, a]`` windows against the second half (which repeats the first)."""
    options = EvaluatorOptions.coerce(options)
    copied = copy_task_ids(input_ids)
    half = copied.shape[1] // 2
    losses = causal_token_losses(model, copied, options.batch_size, options.progress, "copy task")
    result = {
        "windows": copied.shape[0],
        "half_tokens": half,
        "first_half_loss": float(losses[:, : half - 1].mean()),
        "second_half_loss": float(losses[:, half - 1 :].mean()),
    }
    if copied.shape[1] % model.config.n_ctx == 0:
        without = memory_token_losses_without_memories(model, copied, options.batch_size, options.progress)
        result["second_half_loss_memories_removed"] = float(without[:, half - 1 :].mean())
    return result


def evaluate_chunk_recall(model, input_ids: torch.Tensor, options: Options) -> dict:
    """Which earlier chunk can the memories recall? For every pair ``source < target``, windows whose chunk
    ``target`` repeats chunk ``source`` (`repeated_chunk_ids`), scored on the repeated tokens that the target
    chunk's own decoder pass predicts (all but its first, which the pass before predicts). ``alone_loss`` is the
    same text decoded with memories removed (the source chunk's own predictions then; a chunk decoded alone does
    not depend on its place), so ``recall_gain = alone_loss - repeat_loss`` is what the memories save."""
    options = EvaluatorOptions.coerce(options)
    chunk = model.config.n_ctx
    num_chunks = input_ids.shape[1] // chunk
    alone = memory_token_losses_without_memories(model, input_ids, options.batch_size, options.progress)
    pairs = []
    for target in range(1, num_chunks):
        for source in range(target):
            repeated = repeated_chunk_ids(input_ids, chunk, source, target)
            losses = causal_token_losses(model, repeated, options.batch_size, options.progress,
                                         f"chunk {target} repeats chunk {source}")
            repeat_loss = float(losses[:, target * chunk : (target + 1) * chunk - 1].mean())
            alone_loss = float(alone[:, source * chunk : (source + 1) * chunk - 1].mean())
            pairs.append({"source": source, "target": target, "repeat_loss": repeat_loss, "alone_loss": alone_loss,
                          "recall_gain": alone_loss - repeat_loss})
    return {"windows": input_ids.shape[0], "chunk_tokens": chunk, "pairs": pairs}


FAMILY_EVALUATORS = {"mixer": evaluate_mixer, "autoencoder": evaluate_autoencoder, "memory": evaluate_memory}


def evaluate(loaded: LoadedModel, input_ids: torch.Tensor, options: Options) -> dict:
    """The evaluator of the loaded model's family."""
    if loaded.family not in FAMILY_EVALUATORS:
        raise ValueError(f"family {loaded.family!r} has no evaluator; expected one of {list(FAMILY_EVALUATORS)}")
    return FAMILY_EVALUATORS[loaded.family](loaded, input_ids, options)


def evaluate_documents(loaded: LoadedModel, documents: list[str], options: Options) -> dict:
    """Document mode: every token of every document, each document alone (evaluation/document_scoring.py)."""
    options = EvaluatorOptions.coerce(options)
    scores = score_documents(loaded.model, loaded.tokenizer, documents, stride=options.stride,
                             batch_size=options.batch_size, progress=options.progress)
    return {"summary": scores.summary()}


def trivial_encoding_test(loaded: LoadedModel, in_distribution: torch.Tensor, options: Options) -> dict:
    """Loss on uniformly random ids over the tokenizer's vocabulary vs the same number of real windows.

    A model (or autoencoder) that learned a data-free code would score random text as well as real text.
    """
    options = EvaluatorOptions.coerce(options)
    count = min(options.trivial_windows, in_distribution.shape[0])
    window = in_distribution.shape[1]
    random_ids = random_token_ids(count, window, len(loaded.tokenizer), seed=options.seed)
    real_ids = in_distribution[:count]
    if loaded.family == "autoencoder":
        embedding_format = loaded.model.config.embedding_format

        def loss_of(ids):
            return float(autoencoder_scores(loaded.model, ids, embedding_format, options.batch_size)["losses"].mean())
    else:

        def loss_of(ids):
            return float(causal_token_losses(loaded.model, ids, options.batch_size).mean())

    random_loss, real_loss = loss_of(random_ids), loss_of(real_ids)
    return {
        "windows": count,
        "random_ids_loss": random_loss,
        "in_distribution_loss": real_loss,
        "uniform_loss": math.log(len(loaded.tokenizer)),
        "ratio": random_loss / real_loss if real_loss > 0 else math.inf,
    }


__all__ = [
    "FAMILY_EVALUATORS",
    "evaluate",
    "evaluate_autoencoder",
    "evaluate_chunk_recall",
    "evaluate_copy_task",
    "evaluate_documents",
    "evaluate_memory",
    "evaluate_mixer",
    "evaluate_oracle_formats",
    "trivial_encoding_test",
]
