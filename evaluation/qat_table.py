"""The seed-like quantization table: loss per embedding data type for a model trained without and with QAT noise.

Compare two saved models (same tokenizer, same family) on the same held-out windows::

    python -m evaluation.qat_table runs/ae_plain/export runs/ae_qat/export --max_windows 256 --out qat.md

Autoencoders are scored by reconstruction cross-entropy with the embedding stored in each format; memory
models in oracle mode by their next-token cross-entropy with memories stored in each format. The bits come
from the stored codes and scales (`QuantizedEmbedding.num_bits`), and "total bpb" is the description length
that charges that real stored size (embedding + residual cross-entropy; see evaluation/evaluators.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from evaluation.markdown import table
from modeling_memmix.quantization import EMBEDDING_FORMATS, REFERENCE_FORMAT

DEFAULT_LABELS = ("no QAT", "QAT")


def format_results(result: Mapping) -> Mapping[str, Mapping]:
    """Per-format measures of one evaluated model: ``formats`` (autoencoder) or ``oracle`` (oracle memory model)."""
    for key in ("formats", "oracle"):
        if key in result:
            return result[key]
    raise ValueError(
        f"result has no per-format measures (keys {sorted(result)}); the QAT table needs an autoencoder or a "
        "memory model with memory_mode='oracle'"
    )


def format_losses(result: Mapping) -> dict[str, float]:
    """``{format: cross-entropy}`` of one evaluated model."""
    return {embedding_format: values["cross_entropy"] for embedding_format, values in format_results(result).items()}


def loss_increase(values: Mapping[str, Mapping], embedding_format: str) -> float:
    """Cross-entropy with ``embedding_format`` minus cross-entropy with the fp32 embedding (nats/token)."""
    return values[embedding_format]["cross_entropy"] - values[REFERENCE_FORMAT]["cross_entropy"]


def _percent(increase: float, reference: float) -> str:
    return f"{100 * increase / reference:+.3f} %" if reference else "n/a"


def qat_rows(without: Mapping, with_qat: Mapping) -> list[list]:
    """One row per format present in both results: bits, CE and its increase over fp32, total bpb."""
    plain, noisy = format_results(without), format_results(with_qat)
    rows = []
    for embedding_format in [REFERENCE_FORMAT, *EMBEDDING_FORMATS]:
        if embedding_format not in plain or embedding_format not in noisy:
            continue
        if plain[embedding_format]["bits_per_vector"] != noisy[embedding_format]["bits_per_vector"]:
            raise ValueError(
                f"{embedding_format}: the two models store {plain[embedding_format]['bits_per_vector']} and {noisy[embedding_format]['bits_per_vector']} "
                "bits per vector; compare models with the same embedding size"
            )
        rows.append([
            embedding_format, int(plain[embedding_format]["bits_per_vector"]),
            plain[embedding_format]["cross_entropy"], _percent(loss_increase(plain, embedding_format), plain[REFERENCE_FORMAT]["cross_entropy"]),
            noisy[embedding_format]["cross_entropy"], _percent(loss_increase(noisy, embedding_format), noisy[REFERENCE_FORMAT]["cross_entropy"]),
            plain[embedding_format]["total_bits_per_byte"], noisy[embedding_format]["total_bits_per_byte"],
        ])
    return rows


def render_qat_table(without: Mapping, with_qat: Mapping, labels: Sequence[str] = DEFAULT_LABELS) -> str:
    """Markdown table: for each embedding format, loss without and with QAT and bpb with the real stored size."""
    first, second = labels
    header = ["embedding format", "stored bits/vector", f"CE {first}", f"vs fp32 {first}", f"CE {second}",
              f"vs fp32 {second}", f"total bpb {first}", f"total bpb {second}"]
    return table(header, qat_rows(without, with_qat))


def qat_gap_summary(runs: Sequence[tuple[str, Mapping, Mapping, str]]) -> str:
    """Markdown table, one row per ``(label, without, with_qat, embedding_format)``: loss increase over fp32 of ``embedding_format``
    for the model trained without and with QAT noise (nats/token, 5 decimals: the int8 gaps are tiny)."""
    rows = []
    for label, without, with_qat, embedding_format in runs:
        plain, noisy = format_results(without), format_results(with_qat)
        gap_plain, gap_noisy = loss_increase(plain, embedding_format), loss_increase(noisy, embedding_format)
        rows.append([label, embedding_format, plain[REFERENCE_FORMAT]["cross_entropy"], f"{gap_plain:+.5f}",
                     noisy[REFERENCE_FORMAT]["cross_entropy"], f"{gap_noisy:+.5f}",
                     "yes" if gap_noisy < gap_plain else "no"])
    header = ["run", "stored as", "fp32 CE no QAT", "gap no QAT", "fp32 CE QAT", "gap QAT", "QAT gap smaller"]
    return table(header, rows)


# ---------------------------------------------------------------------------------------------
# Command line: two saved models
# ---------------------------------------------------------------------------------------------


def evaluate_saved(model: str, data: str, max_windows: int | None, batch_size: int, device: str) -> dict:
    """Per-format measures of one saved model on its held-out windows (report settings, no compressors)."""
    from evaluation.evaluators import evaluate_autoencoder, evaluate_oracle_formats
    from evaluation.loading import load_evaluation_data, load_model_and_tokenizer, split_settings_for
    from evaluation.measures import scored_token_bytes

    loaded = load_model_and_tokenizer(model, None, device)
    settings = split_settings_for(data, loaded.run_config)
    windows = load_evaluation_data(data, loaded.tokenizer, loaded.model.config.max_sequence_length,
                                   max_windows=max_windows, max_primer_bytes=None, **settings).windows.input_ids
    options = {"batch_size": batch_size, "progress": False, "embedding_formats": list(EMBEDDING_FORMATS)}
    if loaded.family == "autoencoder":
        return evaluate_autoencoder(loaded, windows, options)
    if loaded.family == "memory" and loaded.model.config.memory_mode == "oracle":
        target_bytes = scored_token_bytes(loaded.tokenizer, windows, 1)
        return {"oracle": evaluate_oracle_formats(loaded.model, windows, target_bytes, options)}
    raise ValueError(f"{model}: the QAT table needs an autoencoder or an oracle memory model, got {loaded.family}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.qat_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("without_qat", help="saved model trained without QAT noise")
    parser.add_argument("with_qat", help="saved model trained with QAT noise (same tokenizer and sizes)")
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--max_windows", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the Markdown table to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = [evaluate_saved(path, args.data, args.max_windows, args.batch_size, args.device)
                   for path in (args.without_qat, args.with_qat)]
        text = render_qat_table(*results)
    except (ValueError, FileNotFoundError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
