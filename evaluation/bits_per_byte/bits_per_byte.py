"""`evaluate` metric: bits per UTF-8 byte from per-sequence negative log-likelihoods.

Load it offline from the repository root (no Hub access needed)::

    metric = evaluate.load("evaluation/bits_per_byte")
    metric.compute(nll=[...], num_bytes=[...], num_tokens=[...])

This file is copied into evaluate's module cache and imported from there, so it must stay
self-contained: it cannot import the `evaluation` package. The formula is duplicated from
`evaluation/metrics.py` on purpose; tests/test_eval_metrics.py checks both give the same numbers.
Keep one import per line (evaluate's import scanner misreads `import a, b`).
"""

import math

import datasets
import evaluate

_CITATION = ""

_DESCRIPTION = """\
Bits per byte: the model's negative log-likelihood converted to bits and divided by the number of
UTF-8 bytes of the text it scored, bpb = sum(nll) / (ln 2 * sum(num_bytes)). Unlike perplexity it does
not depend on the tokenizer, so models with different vocabularies and classical compressors
(gzip, xz, zstd, brotli) can be compared on the same bytes. Lower is better.
"""

_KWARGS_DESCRIPTION = """\
Args:
    nll (`list` of `float`): negative log-likelihood in nats, summed over the predicted tokens of each
        sequence (>= 0).
    num_bytes (`list` of `int`): UTF-8 byte count of the text each sequence covers, counted as
        len(text.encode("utf-8")), never as characters (> 0).
    num_tokens (`list` of `int`, optional): number of predicted tokens behind each nll sum (> 0).
        Give it for every sequence or for none.
Returns:
    bits_per_byte (`float`): sum(nll) / (ln 2 * sum(num_bytes)).
    num_bytes (`int`): total bytes scored.
    num_sequences (`int`): number of sequences.
    cross_entropy (`float`): nats per token, sum(nll) / sum(num_tokens) (only with num_tokens).
    bytes_per_token (`float`): sum(num_bytes) / sum(num_tokens) (only with num_tokens).
    num_tokens (`int`): total tokens scored (only with num_tokens).
Examples:
    A model that gives each of 10 one-byte tokens probability 1/256 costs exactly 8 bits per byte:

    >>> metric = evaluate.load("evaluation/bits_per_byte")
    >>> metric.compute(nll=[10 * math.log(256)], num_bytes=[10], num_tokens=[10])["bits_per_byte"]
    8.0
"""

LN2 = math.log(2.0)


def _check_values(nll, num_bytes, num_tokens):
    """Raise ValueError on negative or non-finite nll, non-positive counts or mixed missing token counts."""
    if len(nll) == 0:
        raise ValueError("no sequences given: nll is empty")
    for index, value in enumerate(nll):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"nll[{index}] must be a finite number >= 0 (nats), got {value}")
    for index, count in enumerate(num_bytes):
        if count <= 0:
            raise ValueError(f"num_bytes[{index}] must be > 0, got {count}")
    missing = [count is None for count in num_tokens]
    if any(missing) and not all(missing):
        raise ValueError("num_tokens is missing for some sequences; give it for every sequence or for none")
    for index, count in enumerate(num_tokens):
        if count is not None and count <= 0:
            raise ValueError(f"num_tokens[{index}] must be > 0, got {count}")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitsPerByte(evaluate.Metric):
    """Bits per UTF-8 byte, with cross-entropy per token when token counts are given."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "nll": datasets.Value("float64"),
                    "num_bytes": datasets.Value("int64"),
                    "num_tokens": datasets.Value("int64"),
                }
            ),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Accept batches without `num_tokens` by storing it as missing (null) for each sequence."""
        if kwargs.get("num_tokens") is None and kwargs.get("nll") is not None:
            kwargs["num_tokens"] = [None] * len(kwargs["nll"])
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Accept single examples without `num_tokens` (stored as missing)."""
        kwargs.setdefault("num_tokens", None)
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, nll, num_bytes, num_tokens):
        _check_values(nll, num_bytes, num_tokens)
        total_nll = math.fsum(nll)
        total_bytes = sum(num_bytes)
        result = {
            "bits_per_byte": total_nll / (LN2 * total_bytes),
            "num_bytes": total_bytes,
            "num_sequences": len(nll),
        }
        if len(num_tokens) > 0 and num_tokens[0] is not None:
            total_tokens = sum(num_tokens)
            result["cross_entropy"] = total_nll / total_tokens
            result["bytes_per_token"] = total_bytes / total_tokens
            result["num_tokens"] = total_tokens
        return result
