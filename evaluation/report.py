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
  byte (embedding + residual cross-entropy); and, for the configured format, accuracy and CE at each position
  of the window (a table by quarter and ``window_positions.png``).
- **memory model**: loss per chunk position with memories as trained and with memories removed (see
  evaluation/scoring.py: each chunk decoded like a first chunk), and in oracle mode the normalized loss of
  each storage format; the copy task (second half of a window repeats the first); and, with memories of
  earlier chunks, chunk recall (each later chunk repeating each earlier one, against the same text decoded alone).
- **trivial-encoding test**: loss on uniformly random token ids against in-distribution loss.
- **compressors**: gzip -9, bzip2 -9, xz -9e, zstd -19, brotli -q 11 on each window alone, on the stream
  of all windows, and primed with the last ``--max_primer_bytes`` (default 1 MB) of the training split's
  text (each document followed by b"\\n", as packed for training); not primed with ``--split all``.

The command only parses flags into `evaluation.options.ReportOptions` (checked once, errors name the option)
and hands them to the library, `evaluation.reporting.run`; the measurements are in `evaluation.evaluators`
(one per family), `evaluation.measures` and `evaluation.baselines`. The names other code imported from here
before that split are re-exported below.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from evaluation.baselines import compressor_baselines, document_compressor_baselines, scored_window_bytes
from evaluation.compressors import ALL_METHODS
from evaluation.evaluators import (
    FAMILY_EVALUATORS,
    evaluate_autoencoder,
    evaluate_chunk_recall,
    evaluate_copy_task,
    evaluate_documents,
    evaluate_memory,
    evaluate_mixer,
    evaluate_oracle_formats,
    trivial_encoding_test,
)
from evaluation.loading import EVALUATION_SPLITS
from evaluation.measures import (
    FORMULA_BITS_PER_VALUE,
    NOMINAL_BITS_PER_VALUE,
    embedding_costs,
    first_scored_position,
    per_chunk_summaries,
    scored_token_bytes,
    summarize_losses,
)
from evaluation.options import DEFAULT_MAX_PRIMER_BYTES, SCORING_MODES, EvaluatorOptions, ReportOptions
from evaluation.reporting import build_report, model_bits_per_byte, run, run_report, write_plots
from modeling_memmix.quantization import EMBEDDING_FORMATS

# the flags' defaults are the options' defaults (one place for both)
DEFAULTS = {item.name: item.default for item in dataclasses.fields(ReportOptions) if item.init}


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all") else int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.report", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="saved model folder or Hub id")
    parser.add_argument("--data", default=DEFAULTS["data"], help="corpus spec (builtin, *.txt/*.jsonl/*.parquet, Hub id)")
    parser.add_argument("--out", default=DEFAULTS["out"], help="output folder (default: reports/<model folder name>)")
    parser.add_argument("--tokenizer", default=DEFAULTS["tokenizer"], help="tokenizer folder (default: the model folder)")
    parser.add_argument("--split", default=DEFAULTS["split"], choices=EVALUATION_SPLITS,
                        help="validation / train: that side of the training run's document split; all: every "
                             "document of --data, no split (compressors not primed)")
    parser.add_argument("--scoring", default=DEFAULTS["scoring"], choices=SCORING_MODES,
                        help="windows: packed full windows as in training; documents: each document alone, "
                             "every token, rolling windows (lm-evaluation-harness loglikelihood_rolling)")
    parser.add_argument("--stride", type=int, default=DEFAULTS["stride"],
                        help="--scoring documents: new tokens scored per window after the first (default: the "
                             "model's max length, as lm-evaluation-harness; smaller = more context per token)")
    parser.add_argument("--device", default=DEFAULTS["device"], help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--max_windows", type=_optional_int, default=DEFAULTS["max_windows"],
                        help="evaluate the first N windows (--scoring windows)")
    parser.add_argument("--max_documents", type=_optional_int, default=DEFAULTS["max_documents"])
    parser.add_argument("--validation_fraction", type=float, default=DEFAULTS["validation_fraction"],
                        help="default: the training run's (run_config.json) when it used --data, else 0.05")
    parser.add_argument("--split_seed", type=int, default=DEFAULTS["split_seed"], help="default: the training run's, else 0")
    parser.add_argument("--train_fraction", type=float, default=DEFAULTS["train_fraction"],
                        help="--split train: the share of the training documents a data.train_fraction run saw "
                             "(default: the training run's, else 1)")
    parser.add_argument("--text_column", default=DEFAULTS["text_column"])
    parser.add_argument("--hub_split", default=DEFAULTS["hub_split"])
    parser.add_argument("--max_primer_bytes", type=int, default=DEFAULTS["max_primer_bytes"],
                        help="prime the compressors with the last N bytes of the training split (0: no priming)")
    parser.add_argument("--compressors", nargs="*", default=DEFAULTS["compressors"], choices=ALL_METHODS)
    parser.add_argument("--embedding_formats", nargs="*", default=DEFAULTS["embedding_formats"], choices=EMBEDDING_FORMATS)
    parser.add_argument("--trivial_windows", type=int, default=DEFAULTS["trivial_windows"])
    parser.add_argument("--copy_windows", type=int, default=DEFAULTS["copy_windows"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the random ids of the trivial-encoding test")
    parser.add_argument("--training_log", default=DEFAULTS["training_log"], help="JSON-lines training log to plot")
    parser.add_argument("--update_model_card", action="store_true",
                        help="write the report's numbers into the model folder's README.md model-index")
    parser.add_argument("--no_progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m evaluation.report``: flags -> `ReportOptions` -> `evaluation.reporting.run`; 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        options = ReportOptions.from_args(args)
        report = run(options)
    except (ValueError, FileNotFoundError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {options.output_folder}/report.md, report.json and {', '.join(report['plots'])}")
    return 0


__all__ = [
    "DEFAULT_MAX_PRIMER_BYTES",
    "FAMILY_EVALUATORS",
    "FORMULA_BITS_PER_VALUE",
    "NOMINAL_BITS_PER_VALUE",
    "SCORING_MODES",
    "EvaluatorOptions",
    "ReportOptions",
    "build_parser",
    "build_report",
    "compressor_baselines",
    "document_compressor_baselines",
    "embedding_costs",
    "evaluate_autoencoder",
    "evaluate_chunk_recall",
    "evaluate_copy_task",
    "evaluate_documents",
    "evaluate_memory",
    "evaluate_mixer",
    "evaluate_oracle_formats",
    "first_scored_position",
    "main",
    "model_bits_per_byte",
    "per_chunk_summaries",
    "run",
    "run_report",
    "scored_token_bytes",
    "scored_window_bytes",
    "summarize_losses",
    "trivial_encoding_test",
    "write_plots",
]


if __name__ == "__main__":
    sys.exit(main())
