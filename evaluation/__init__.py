"""Model-independent evaluation for memmix: measures, classical-compressor baselines and plots.

- `evaluation.metrics`: bits per byte, normalized loss, information retained, Hamming accuracy
  (plain numpy; formulas from docs/MISSION.md "Measures").
- `evaluation.compressors`: gzip / bzip2 / xz / zstd / brotli sizes of exactly the evaluated bytes.
- `evaluation.plots`: PNG charts (matplotlib, Agg backend).
- `evaluation/bits_per_byte/` and `evaluation/normalized_loss/`: self-contained `evaluate` metric
  modules, loaded offline with ``evaluate.load("evaluation/bits_per_byte")`` from the repository root.

Only `metrics` is imported here; `compressors` and `plots` pull in heavier libraries and are imported
where needed (``from evaluation.plots import plot_bits_per_byte``).
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
