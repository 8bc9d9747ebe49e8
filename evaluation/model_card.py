"""Write a report's numbers into a local model folder's model card (README.md YAML ``model-index``).

The card is read and written with the shared writer of `memmix_hub.model_card` (huggingface_hub `ModelCard`,
local file only, no network): results with the same task, dataset, split and metric type are replaced (so
rerunning the report, or running it after the training export wrote its validation numbers, does not
duplicate entries), the others are kept. A folder without README.md gets a minimal card. The task comes
from the family registry (`modeling_memmix.families`).
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult

from memmix_hub.model_card import BUILTIN_DATASET_NAME, dataset_identity, eval_results, merge_into_card
from modeling_memmix.families import get_family

__all__ = ["BUILTIN_DATASET_NAME", "dataset_identity", "eval_results_of", "report_metrics", "update_model_card"]


def report_metrics(report: dict) -> list[tuple[str, float, str]]:
    """(metric_type, value, pretty name) of the report's headline numbers for its family."""
    results, family = report["results"], report["family"]
    summary = results["summary"]
    if family == "autoencoder":
        embedding_format = summary["embedding_format"]
        return [
            ("bits_per_byte", summary["total_bits_per_byte"],
             f"Total bits per byte (embedding {embedding_format} + residual)"),
            ("loss", summary["cross_entropy"], "Reconstruction loss (nats/token)"),
            ("accuracy", summary["hamming_accuracy"], "Hamming accuracy (tokens regenerated exactly)"),
            ("information_retained", summary["information_retained"], "Information retained I_e"),
        ]
    if report["data"].get("scoring") == "documents":
        # its own metric types: a document-mode number must not replace the packed-window one in the card
        return [
            ("bits_per_byte_documents", summary["bits_per_byte"],
             "Bits per byte, each document scored alone (lm-evaluation-harness rolling windows)"),
            ("loss_documents", summary["cross_entropy"], "Loss per token, each document scored alone (nats/token)"),
        ]
    entries = [
        ("bits_per_byte", summary["bits_per_byte"], "Validation bits per byte"),
        ("loss", summary["cross_entropy"], "Validation loss (nats/token)"),
    ]
    if family == "memory":
        entries.append(("loss_memories_removed", results["memories_removed"]["cross_entropy"],
                        "Loss with memories removed (nats/token)"))
        oracle = results.get("oracle")
        if oracle:
            embedding_format = report["config"].get("embedding_format") or "fp32"
            if embedding_format in oracle:
                entries.append(("normalized_loss", oracle[embedding_format]["normalized_loss"],
                                f"Normalized loss, memories stored as {embedding_format} (nats/token)"))
    return entries


def eval_results_of(report: dict) -> list[EvalResult]:
    """EvalResult entries for the report's headline numbers (6 decimals)."""
    dataset_name, dataset_type = dataset_identity(report["data"]["spec"])
    return eval_results(get_family(report["family"]).task, dataset_name, dataset_type, report["data"]["split"],
                        report_metrics(report), decimals=6)


def update_model_card(folder: str | Path, report: dict) -> Path:
    """Merge the report's numbers into ``folder/README.md``'s model-index; returns the card's path."""
    return merge_into_card(folder, eval_results_of(report))
