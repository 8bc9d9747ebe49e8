"""Evaluation for memmix: measures, classical-compressor baselines, the report library and its command.

- `evaluation.metrics`: bits per byte, normalized loss, information retained, Hamming accuracy
  (plain numpy; formulas from docs/MISSION.md "Measures").
- `evaluation.compressors`: gzip / bzip2 / xz / zstd / brotli sizes of exactly the evaluated bytes.
- `evaluation.loading`: a saved model with its tokenizer (local folder or Hub id), and packed windows.
- `evaluation.scoring` / `evaluation.document_scoring`: per-token losses of windows / of whole documents.
- `evaluation.measures`: losses and byte counts turned into cross-entropy, bits per byte, embedding costs.
- `evaluation.evaluators`: one evaluator per model family (``FAMILY_EVALUATORS``), the copy task, the
  trivial-encoding test; `evaluation.baselines`: the compressors on exactly the scored bytes.
- `evaluation.options`: `ReportOptions` / `EvaluatorOptions`, the typed settings, checked once.
- `evaluation.reporting`: the report as a library (`run`, `run_report`, `create_report`, `build_report`);
  `evaluation.report`: the command ``python -m evaluation.report`` over it.
- `evaluation.markdown`, `evaluation.plots`, `evaluation.model_card`: report.md, PNG charts, the model card.
- `evaluation.qat_table`, `evaluation.lm_eval_task`: the QAT comparison table and an lm-evaluation-harness task.
- `evaluation/bits_per_byte/` and `evaluation/normalized_loss/`: self-contained `evaluate` metric
  modules, loaded offline with ``evaluate.load("evaluation/bits_per_byte")`` from the repository root.

Only `metrics` is imported here; the other modules pull in torch, transformers or plotting libraries and are
imported where needed (``from evaluation.reporting import run_report``).
"""
from evaluation.metrics import (
    autoencoder_total_bits_per_byte,
    bits_per_byte,
    bytes_per_token,
    cross_entropy_per_token,
    embedding_bits_per_byte,
    embedding_bits_per_byte_from_size,
    hamming_accuracy,
    information_retained,
    loss_offset,
    normalized_loss,
    normalized_loss_from_size,
)

__all__ = [
    "autoencoder_total_bits_per_byte",
    "bits_per_byte",
    "bytes_per_token",
    "cross_entropy_per_token",
    "embedding_bits_per_byte",
    "embedding_bits_per_byte_from_size",
    "hamming_accuracy",
    "information_retained",
    "loss_offset",
    "normalized_loss",
    "normalized_loss_from_size",
]
