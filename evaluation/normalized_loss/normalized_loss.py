"""`evaluate` metric: normalized loss of a model that keeps an embedding per window (memmix memory/autoencoder).

Load it offline from the repository root (no Hub access needed)::

    metric = evaluate.load("evaluation/normalized_loss")
    metric.compute(nll=[...], num_tokens=[...], num_bytes=[...], n_values=512, bits_per_value=8, n_ctx=512)

Formulas (docs/MISSION.md, "Measures"), with L_b/L_t = sum(num_bytes) / sum(num_tokens):

    CE       = sum(nll) / sum(num_tokens)                       nats per token
    bpb_emb  = n_p * b_p / (n_ctx * L_b/L_t)                    bits per byte of the embedding
    L_o      = bpb_emb * ln 2 / (L_t / L_b)                     the same cost in nats per token
    normalized_loss = CE + L_o
    total_bits_per_byte = CE / (ln 2 * L_b/L_t) + bpb_emb

This file is copied into evaluate's module cache and imported from there, so it must stay
self-contained: it cannot import the `evaluation` package. The formulas are duplicated from
`evaluation/metrics.py` on purpose; tests/test_eval_metrics.py checks both give the same numbers.
Keep one import per line (evaluate's import scanner misreads `import a, b`).
"""

import math

import datasets
import evaluate

_CITATION = ""

_DESCRIPTION = """\
Normalized loss: cross-entropy per token plus the cost of the per-window embedding the model was
given, converted to nats per token. A model that reads a stored embedding must pay for storing it,
otherwise a large enough embedding makes any loss look good. Lower is better.
"""

_KWARGS_DESCRIPTION = """\
Args:
    nll (`list` of `float`): negative log-likelihood in nats summed over each sequence's predicted
        tokens (>= 0).
    num_tokens (`list` of `int`): predicted tokens behind each nll sum (> 0).
    num_bytes (`list` of `int`): UTF-8 bytes of the text each sequence covers,
        len(text.encode("utf-8")) (> 0).
    n_ctx (`int`): tokens per window that one embedding stands for (> 0).
    n_values (`int`): values in one window's embedding, n_p. Give it with bits_per_value ...
    bits_per_value (`float`): bits stored per value, b_p (32 fp32, 8 fp8/int8, 4 for 4-bit) ...
    embedding_bits (`float`): ... or instead the real stored size of one embedding in bits
        (scales and zero points included).
Returns:
    normalized_loss (`float`): CE + L_o, nats per token.
    cross_entropy (`float`): CE, nats per token.
    loss_offset (`float`): L_o, nats per token.
    embedding_bits_per_byte (`float`): bpb_emb.
    bits_per_byte (`float`): the cross-entropy alone in bits per byte.
    total_bits_per_byte (`float`): bits_per_byte + embedding_bits_per_byte.
    bytes_per_token (`float`): L_b / L_t.
    embedding_bits (`float`): stored bits of one embedding used in the formula.
Examples:
    >>> metric = evaluate.load("evaluation/normalized_loss")
    >>> metric.compute(nll=[2.0 * 512], num_tokens=[512], num_bytes=[2048],
    ...                n_values=512, bits_per_value=8, n_ctx=512)["embedding_bits_per_byte"]
    2.0
"""

LN2 = math.log(2.0)


def _check_sequences(nll, num_tokens, num_bytes):
    """Raise ValueError on empty input, negative or non-finite nll, or non-positive counts."""
    if len(nll) == 0:
        raise ValueError("no sequences given: nll is empty")
    for index, value in enumerate(nll):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"nll[{index}] must be a finite number >= 0 (nats), got {value}")
    for name, counts in (("num_tokens", num_tokens), ("num_bytes", num_bytes)):
        for index, count in enumerate(counts):
            if count is None or count <= 0:
                raise ValueError(f"{name}[{index}] must be > 0, got {count}")


def _embedding_bits(n_values, bits_per_value, embedding_bits):
    """Stored bits of one embedding: `embedding_bits`, or n_values * bits_per_value (exactly one way)."""
    given_product = n_values is not None or bits_per_value is not None
    if given_product and embedding_bits is not None:
        raise ValueError("give either n_values with bits_per_value, or embedding_bits, not both")
    if embedding_bits is not None:
        if not math.isfinite(embedding_bits) or embedding_bits < 0:
            raise ValueError(f"embedding_bits must be a finite number >= 0, got {embedding_bits}")
        return float(embedding_bits)
    if n_values is None or bits_per_value is None:
        raise ValueError(
            f"need both n_values and bits_per_value (got n_values={n_values}, "
            f"bits_per_value={bits_per_value}), or embedding_bits"
        )
    if n_values <= 0 or bits_per_value <= 0:
        raise ValueError(f"n_values and bits_per_value must be > 0, got {n_values} and {bits_per_value}")
    return float(n_values * bits_per_value)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NormalizedLoss(evaluate.Metric):
    """Cross-entropy plus the amortized cost of a stored per-window embedding."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "nll": datasets.Value("float64"),
                    "num_tokens": datasets.Value("int64"),
                    "num_bytes": datasets.Value("int64"),
                }
            ),
        )

    def _compute(
        self, nll, num_tokens, num_bytes, n_ctx=None, n_values=None, bits_per_value=None, embedding_bits=None
    ):
        _check_sequences(nll, num_tokens, num_bytes)
        if n_ctx is None or n_ctx <= 0:
            raise ValueError(f"n_ctx (tokens per window) must be given and > 0, got {n_ctx}")
        bits_of_embedding = _embedding_bits(n_values, bits_per_value, embedding_bits)
        total_nll = math.fsum(nll)
        bytes_per_token = sum(num_bytes) / sum(num_tokens)
        cross_entropy = total_nll / sum(num_tokens)
        embedding_bpb = bits_of_embedding / (n_ctx * bytes_per_token)
        offset = embedding_bpb * LN2 * bytes_per_token
        model_bpb = cross_entropy / (LN2 * bytes_per_token)
        return {
            "normalized_loss": cross_entropy + offset,
            "cross_entropy": cross_entropy,
            "loss_offset": offset,
            "embedding_bits_per_byte": embedding_bpb,
            "bits_per_byte": model_bpb,
            "total_bits_per_byte": model_bpb + embedding_bpb,
            "bytes_per_token": bytes_per_token,
            "embedding_bits": bits_of_embedding,
        }
